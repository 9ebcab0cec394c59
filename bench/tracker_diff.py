"""Differential check of the tracker: this version against another, fed the same events.

A speed-up of the hot path must not change what is counted. Both versions (the other one
loaded from its source tree as in bench.tracker_ingest) get the same synthetic stream
(bench.stream, with failures, retries, prefork batches and new workers whose first task events
are held) with malformed events mixed in, under the same fake clock; every SNAPSHOT_EVERY
messages both are given the event thread's housekeeping and their snapshots must be equal:
task counters, histograms, errors, overflow, in-flight and held tasks, missed events, queue
ages and the fields the two versions' worker views have in common.

    git archive <base-commit> src | tar -x -C /tmp/base
    python -m bench.tracker_diff --baseline-src /tmp/base/src --events 300000

Exits 1, naming the first field that differs, when they do not agree.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.stream import EventStream, StreamSpec, take
from bench.tracker_ingest import load_baseline

START = 1_796_227_100.0
TICK = 0.0004  # fake seconds per message: 300k events span about 40 s, holds and expiry run
SNAPSHOT_EVERY = 20_000
MALFORMED_EVERY = 97
MALFORMED: list[Any] = [
    42,
    [1, 2],
    {"type": 5},
    {"type": ["x"]},
    {"type": "task-started"},
    {"type": "task-failed", "uuid": 3},
    {"type": "task-succeeded", "uuid": "x", "hostname": "celery@z", "timestamp": "bad"},
    {"type": "custom-thing"},
    {"type": "task-cancelled"},
    {"type": "worker-heartbeat"},
]


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def messages(events: int, seed: int) -> list[Any]:
    bodies: list[Any] = [
        m.body
        for m in take(EventStream(StreamSpec(seed=seed), clock=lambda: START).messages(), events)
    ]
    rng = random.Random(seed)
    for index in range(0, len(bodies), MALFORMED_EVERY):
        bodies.insert(index, copy.deepcopy(rng.choice(MALFORMED)))
    return bodies


def comparable(snapshot: Any, worker_fields: set[str]) -> dict[str, Any]:
    fields = {f.name: getattr(snapshot, f.name) for f in dataclasses.fields(snapshot)}
    fields["workers"] = sorted(
        (sorted((k, v) for k, v in dataclasses.asdict(w).items() if k in worker_fields))
        for w in fields["workers"]
    )
    return fields


def replay(tracker_module: ModuleType, bodies: list[Any]) -> list[Any]:
    package = tracker_module.__name__.rpartition(".")[0]
    config = importlib.import_module(package + ".config").Config
    arrivals = importlib.import_module(package + ".arrivals").WorkerArrivals
    clock = FakeClock()
    tracker = tracker_module.Tracker(
        config(broker_url="redis://localhost", max_tracked_tasks=5000),
        clock=clock,
        arrivals=arrivals(clock),
    )
    snapshots = []
    for index, body in enumerate(copy.deepcopy(bodies)):
        clock.now += TICK
        tracker.record_message(body)
        if index % SNAPSHOT_EVERY == SNAPSHOT_EVERY - 1:
            tracker.release_held()
            tracker.expire()
            snapshots.append(tracker.snapshot())
    clock.now += 100  # every hold runs out
    tracker.release_held()
    tracker.expire()
    snapshots.append(tracker.snapshot())
    return snapshots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    import celery_exporter.tracker as current

    baseline = load_baseline(args.baseline_src)
    bodies = messages(args.events, args.seed)
    old, new = replay(baseline, bodies), replay(current, bodies)
    view = importlib.import_module(baseline.__name__.rpartition(".")[0] + ".workers").WorkerView
    from celery_exporter.workers import WorkerView

    common = {f.name for f in dataclasses.fields(view)} & {
        f.name for f in dataclasses.fields(WorkerView)
    }
    for number, (a, b) in enumerate(zip(old, new, strict=True)):
        left, right = comparable(a, common), comparable(b, common)
        for name in left:
            if left[name] != right.get(name):
                print(f"snapshot {number + 1} of {len(old)}: field {name!r} differs")
                return 1
    print(
        f"{len(bodies):,} messages, {len(old)} snapshots: identical ({', '.join(sorted(common))})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
