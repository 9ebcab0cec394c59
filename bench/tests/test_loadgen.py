"""The load generator's pure parts (bench.stream, job splitting): its events must look like
the ones Celery really sends."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from celery import Celery
from celery.events.state import State
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.loadgen import split_jobs
from bench.stream import (
    BATCH_LIMIT,
    EventStream,
    Message,
    StreamSpec,
    event_types,
    queue_of,
    take,
)

ENVELOPE = {"type", "hostname", "timestamp", "utcoffset", "pid", "clock"}
FIELDS = {
    "task-sent": {
        "uuid", "name", "args", "kwargs", "retries", "eta", "expires", "queue", "exchange",
        "routing_key", "root_id", "parent_id",
    },
    "task-received": {
        "uuid", "name", "args", "kwargs", "retries", "eta", "expires", "root_id", "parent_id",
    },
    "task-started": {"uuid"},
    "task-succeeded": {"uuid", "result", "runtime"},
    "task-failed": {"uuid", "exception", "traceback"},
    "task-retried": {"uuid", "exception", "traceback"},
    "worker-online": {"freq", "sw_ident", "sw_ver", "sw_sys", "active", "processed", "loadavg"},
    "worker-heartbeat": {"freq", "sw_ident", "sw_ver", "sw_sys", "active", "processed", "loadavg"},
    "worker-offline": {"freq", "sw_ident", "sw_ver", "sw_sys"},
}  # fmt: skip


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def events_of(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        out.extend(message.body if isinstance(message.body, list) else [message.body])
    return out


def sample(events: int = 5000, **spec: Any) -> list[Message]:
    stream = EventStream(StreamSpec(seed=7, **spec), clock=FakeClock())
    return list(take(stream.messages(), events))


def test_every_event_has_the_envelope_and_exactly_its_types_fields() -> None:
    seen: Counter[str] = Counter()
    for event in events_of(sample(fail_ratio=0.2, retry_ratio=0.2)):
        kind = event["type"]
        seen[kind] += 1
        assert set(event) == ENVELOPE | FIELDS[kind], kind
        assert isinstance(event["clock"], int)
        assert isinstance(event["pid"], int)
    assert set(seen) == set(FIELDS) - {"worker-heartbeat", "worker-offline"}


def test_messages_are_routed_and_batched_like_celery() -> None:
    messages = sample(fail_ratio=0.2, retry_ratio=0.2)
    for message in messages:
        if isinstance(message.body, list):
            # prefork workers buffer task events only, up to 24 per task.multi message
            assert message.routing_key == "task.multi"
            assert 1 <= len(message.body) <= BATCH_LIMIT
            assert {e["hostname"] for e in message.body} == {message.hostname}
            assert all(e["type"].startswith("task-") for e in message.body)
            assert all(e["type"] != "task-sent" for e in message.body)
        else:
            assert message.routing_key == message.body["type"].replace("-", ".")
            assert message.hostname == message.body["hostname"]
        assert message.events == len(event_types(message))
        json.dumps(message.body)  # the json serializer must take it as is
    assert any(isinstance(m.body, list) and len(m.body) > 1 for m in messages)


def test_producers_and_workers_use_celery_node_names() -> None:
    for event in events_of(sample()):
        if event["type"] == "task-sent":
            assert event["hostname"].startswith("gen")
            assert event["hostname"].split("@")[0][3:].isdigit()
        else:
            assert event["hostname"].startswith("celery@bench-")


def test_task_lifecycles_are_ordered_and_tasks_are_unique() -> None:
    spec = StreamSpec(seed=3, fail_ratio=0.1, retry_ratio=0.0)
    by_task: dict[str, list[str]] = {}
    for event in events_of(sample(4000, fail_ratio=0.1, retry_ratio=0.0)):
        if "uuid" in event:
            by_task.setdefault(event["uuid"], []).append(event["type"])
        if event["type"] == "task-sent":
            assert event["queue"] == queue_of(spec, event["name"])
    complete = [kinds for kinds in by_task.values() if len(kinds) == 4]
    assert len(complete) > 500
    for kinds in complete:
        assert kinds[:3] == ["task-sent", "task-received", "task-started"]
        assert kinds[3] in ("task-succeeded", "task-failed")


def test_lamport_clock_is_unique_and_ordered_per_worker() -> None:
    clocks = [e["clock"] for e in events_of(sample(2000))]
    assert len(set(clocks)) == len(clocks)
    by_worker: dict[str, list[int]] = {}
    for event in events_of(sample(2000)):
        by_worker.setdefault(event["hostname"], []).append(event["clock"])
    # buffered batches leave a worker's events in its own clock order, as in Celery
    assert all(c == sorted(c) for c in by_worker.values())


def test_heartbeats_follow_the_injected_clock() -> None:
    clock = FakeClock()
    stream = EventStream(StreamSpec(seed=1, heartbeat_interval=2.0), clock=clock)
    messages = stream.messages()
    first = [next(messages) for _ in range(500)]
    assert [m.routing_key for m in first].count("worker.online") == 10
    assert "worker.heartbeat" not in [m.routing_key for m in first]
    clock.now += 2.0
    later = [next(messages) for _ in range(50)]
    beats = [m.body for m in later if m.routing_key == "worker.heartbeat"]
    assert len(beats) == 10
    assert all(isinstance(b, dict) and b["processed"] > 0 for b in beats)


def test_closing_flushes_buffers_and_says_goodbye() -> None:
    spec = StreamSpec(seed=2, depart_workers=("celery@bench-000",))
    stream = EventStream(spec, clock=FakeClock())
    for _ in take(stream.messages(), 300):
        pass
    closing = list(stream.closing_messages())
    assert [m.routing_key for m in closing][-1] == "worker.offline"
    assert all(m.routing_key == "task.multi" for m in closing[:-1])


def test_same_seed_same_stream() -> None:
    assert sample(500) == sample(500)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=3000))
def test_take_gives_exactly_n_events(n: int) -> None:
    assert sum(m.events for m in sample(n)) == n


def test_share_splits_workers_and_jobs_split_totals() -> None:
    spec = StreamSpec(seed=5)
    parts = [spec.share(i, 3) for i in range(3)]
    workers = [w for p in parts for w in p.workers]
    assert sorted(workers) == sorted(spec.workers)
    assert len({p.seed for p in parts}) == 3
    jobs = split_jobs("redis://", spec, 3, events=1000, rate=900.0)
    assert sum(j.events or 0 for j in jobs) == 1000
    assert sum(j.rate or 0 for j in jobs) == pytest.approx(900.0)


def test_celerys_own_receiver_and_state_accept_the_events() -> None:
    app = Celery("loadgen-test", broker="memory://", set_as_current=False)
    state = State()
    received: list[dict[str, Any]] = []

    def handle(event: dict[str, Any]) -> None:
        received.append(event)
        state.event(event)

    with app.connection_for_write() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": handle})
        messages = sample(3000, retry_ratio=0.1)
        for message in messages:
            receiver._receive(json.loads(json.dumps(message.body)), None)
    assert len(received) == 3000
    assert state.task_count > 400
    assert len(state.workers) == 10
    assert any(task.state == "SUCCESS" and task.runtime for task in state.tasks.values())


def test_runner_reads_counts_from_an_exposition() -> None:
    from bench.consumers import count_samples, sum_samples
    from bench.phases import percentile

    text = (
        "# HELP celery_exporter_events_total Celery events received, by event type.\n"
        "# TYPE celery_exporter_events_total counter\n"
        'celery_exporter_events_total{event="task-sent"} 3.0\n'
        'celery_exporter_events_total{event="task-received",x="a b"} 4.0\n'
        "celery_exporter_events_totally_different 100.0\n"
        "celery_exporter_last_event_timestamp_seconds 1.7e9\n"
    )
    assert sum_samples(text, "celery_exporter_events_total") == 7.0
    assert sum_samples(text, "celery_exporter_last_event_timestamp_seconds") == 1.7e9
    assert count_samples(text) == 4
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(101)], 99) == 99.0
