"""`bench.tracker diff`: differential check of the tracker, this version against another, fed
the same events.

For speed work on the hot path, which must not change what is counted. Both versions (loaded
by bench.tracker.versions) get the same bench.stream messages with a fake clock, in several
configurations: as generated, with fields corrupted (dropped, wrong types, junk values, other
event types), out of order (messages moved later, batches shuffled, events and task names
dropped), with tight caps. Their full snapshots (every count, histogram, error reason, worker,
held task and queue age) are compared every few thousand messages and at the end.

    git archive <base-commit> src | tar -x -C /tmp/base
    python -m bench.tracker diff --baseline-src /tmp/base/src [--seeds 3]    # ~1 min a seed

In the calling thread; exits 1 on the first difference of a run.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path
from typing import Any

from bench.stream import EventStream, StreamSpec, take
from bench.tracker.versions import build, current, held_tasks, load_baseline, releaser

MESSAGES = 40_000
JUNK: list[Any] = [
    None, True, 1, -1, 2**70, 1.5, float("nan"), float("inf"), "", "x", "\ud800", "é", [], {},
    [1, 2, 3], "a" * 300, "2024-01-01T00:00:00", "2024-01-01T00:00:00+00:00", "notadate",
    1e300, -5.0,
]  # fmt: skip
FIELDS = (
    "type", "uuid", "hostname", "timestamp", "name", "queue", "routing_key", "runtime", "eta",
    "expires", "exception", "active", "processed", "loadavg", "requeue",
)  # fmt: skip
TYPES = (
    "task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
    "task-retried", "task-rejected", "task-revoked", "task-cancelled", "worker-online",
    "worker-heartbeat", "custom",
)  # fmt: skip
# (share of messages corrupted, StreamSpec fields, Config fields, disorder)
CASES: list[tuple[float, dict[str, Any], dict[str, Any], float]] = [
    (0.0, {}, {}, 0.0),
    (0.05, {}, {}, 0.0),
    (0.3, {}, {}, 0.0),
    (0.05, {"task_sent": False}, {}, 0.0),
    (0.05, {}, {"max_tracked_tasks": 50, "max_task_names": 5, "max_workers": 4}, 0.0),
    (
        0.1,
        {},
        {"generic_hostname_worker_task_metric": True, "generic_hostname_task_sent_metric": True},
        0.0,
    ),
    (0.05, {"online_at_start": False}, {}, 0.0),
    (0.02, {}, {}, 0.3),
    (0.0, {"task_sent": False}, {}, 0.3),
    (0.0, {}, {"max_tracked_tasks": 30}, 0.5),
]


def corrupt(event: Any, rng: random.Random) -> Any:
    if rng.random() < 0.02:
        return rng.choice(JUNK)
    event = dict(event)
    for _ in range(rng.randint(1, 3)):
        field, roll = rng.choice(FIELDS), rng.random()
        if roll < 0.3:
            event.pop(field, None)
        elif roll < 0.5 and field == "type":
            event[field] = rng.choice(TYPES)
        elif roll < 0.6 and field == "timestamp" and type(event.get(field)) is float:
            event[field] += rng.uniform(-20, 20)
        elif roll < 0.7 and field == "timestamp" and type(event.get(field)) is float:
            event[field] = int(event[field])  # an int timestamp: valid, not the fast path
        else:
            event[field] = rng.choice(JUNK)
    return event


def disorder(messages: list[Any], rate: float, rng: random.Random) -> None:
    for i in range(len(messages) - 1):
        if rng.random() < rate:  # a message arrives up to a dozen later
            messages.insert(min(len(messages) - 1, i + rng.randint(1, 12)), messages.pop(i))
        message = messages[i]
        if type(message) is list:
            if rng.random() < rate:
                rng.shuffle(message)
            if rng.random() < rate / 3:
                message[:] = [event for event in message if rng.random() < 0.7]
            if rng.random() < rate / 3:
                for event in message:
                    event.pop("name", None)
        elif rng.random() < rate / 3:
            messages[i] = {}


def fields_of(instance: Any) -> dict[str, Any]:
    """A dataclass instance's fields, shallow; also of a mypyc-compiled one (setup.py), which
    has no __dict__ and which dataclasses.asdict() cannot copy."""
    return {field.name: getattr(instance, field.name) for field in dataclasses.fields(instance)}


def snapshots(
    module: Any, messages: list[Any], config: dict[str, Any], start: float
) -> list[dict[str, Any]]:
    now = [start]  # the stream's own time: its timestamps must be current
    subject = build(module, lambda: now[0], **config)
    release = releaser(subject)
    taken = []
    for index, message in enumerate(copy.deepcopy(messages)):  # the tracker trims held events
        now[0] += 0.0003
        subject.record_message(message)
        if index % 97 == 0:
            release()
        if index % 3000 == 0 or index == len(messages) - 1:
            release()
            subject.expire()
            state = held_tasks(fields_of(subject.snapshot()))
            state["workers"] = sorted(map(fields_of, state["workers"]), key=repr)
            for key, value in state.items():  # e.g. RunningAges: a compiled class is another
                if dataclasses.is_dataclass(value) and not isinstance(value, type):
                    state[key] = fields_of(value)
            taken.append(state)
    return taken


def same_workers(expected: dict[str, Any], got: dict[str, Any]) -> None:
    """Worker views compared by the fields both versions have (a version may add or rename
    one, as the goodbye change did: `processed` became `processed_total`, `departed` came)."""
    fields = {k for view in expected["workers"] for k in view} & {
        k for view in got["workers"] for k in view
    }
    for state in (expected, got):
        state["workers"] = [
            {k: v for k, v in view.items() if k in fields} for view in state["workers"]
        ]


def check(base: Any, current: Any, seed: int, case: tuple[Any, ...]) -> bool:
    share, spec, config, rate = case
    rng = random.Random(seed)
    messages = [
        m.body for m in take(EventStream(StreamSpec(seed=seed, **spec)).messages(), MESSAGES)
    ]
    first: Any = messages[0][0] if type(messages[0]) is list else messages[0]
    start = float(first["timestamp"])
    if rate:
        disorder(messages, rate, rng)
    messages = [
        (
            message
            if rng.random() >= share
            else [corrupt(e, rng) for e in message]
            if type(message) is list
            else corrupt(message, rng)
        )
        for message in messages
    ]
    for at, (expected, got) in enumerate(
        zip(
            snapshots(base, messages, config, start),
            snapshots(current, messages, config, start),
            strict=True,
        )
    ):
        same_workers(expected, got)
        for key in expected:
            if expected[key] != got[key]:
                print(f"DIFFERENT seed {seed} case {case} snapshot {at}: {key}")
                print(f"  baseline {str(expected[key])[:400]}\n  current  {str(got[key])[:400]}")
                return False
    return True


def run(baseline_src: Path, seeds: int) -> int:
    base, now = load_baseline(baseline_src), current()
    results = [check(base, now, s, case) for s in range(seeds) for case in CASES]
    print(f"{sum(results)} of {len(results)} runs counted the same")
    return 0 if all(results) else 1
