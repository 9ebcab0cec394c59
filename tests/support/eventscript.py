"""Builders for scripted Celery events, shaped like the real ones (see shared/facts.md), and a
tracker harness with a fake clock and a private registry to read metric values back."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from prometheus_client.registry import CollectorRegistry

from celery_exporter.config import Config
from celery_exporter.exposition.catalogue import FamilyFactory
from celery_exporter.exposition.tracker_collector import TrackerCollector
from celery_exporter.poll.arrivals import WorkerArrivals
from celery_exporter.state.missed_events import GRACE
from celery_exporter.state.tracker import Tracker

WORKER = "celery@worker-1"
PRODUCER = "gen4242@web-1"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def event(kind: str, hostname: str, timestamp: float, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "hostname": hostname,
        "timestamp": timestamp,
        "utcoffset": 0,
        "pid": 4242,
        "clock": 1,
        **fields,
    }


def sent(
    uuid: str,
    name: str,
    ts: float,
    queue: str | None = "celery",
    eta: str | None = None,
    hostname: str = PRODUCER,
    **fields: Any,
) -> dict[str, Any]:
    return event(
        "task-sent",
        hostname,
        ts,
        uuid=uuid,
        name=name,
        args="()",
        kwargs="{}",
        retries=0,
        eta=eta,
        expires=None,
        queue=queue,
        exchange="",
        routing_key=queue,
        root_id=uuid,
        parent_id=None,
        **fields,
    )


def received(
    uuid: str, name: str, ts: float, hostname: str = WORKER, **fields: Any
) -> dict[str, Any]:
    return event(
        "task-received",
        hostname,
        ts,
        uuid=uuid,
        name=name,
        args="()",
        kwargs="{}",
        retries=0,
        eta=None,
        expires=None,
        root_id=uuid,
        parent_id=None,
        **fields,
    )


def started(uuid: str, ts: float, hostname: str = WORKER) -> dict[str, Any]:
    return event("task-started", hostname, ts, uuid=uuid)


def succeeded(uuid: str, ts: float, runtime: Any = 0.1, hostname: str = WORKER) -> dict[str, Any]:
    return event("task-succeeded", hostname, ts, uuid=uuid, result="None", runtime=runtime)


def failed(
    uuid: str, ts: float, exception: str = "ValueError('boom')", hostname: str = WORKER
) -> dict[str, Any]:
    return event("task-failed", hostname, ts, uuid=uuid, exception=exception, traceback="...")


def retried(uuid: str, ts: float, hostname: str = WORKER) -> dict[str, Any]:
    return event("task-retried", hostname, ts, uuid=uuid, exception="Retry()", traceback="...")


def heartbeat(
    hostname: str,
    ts: float,
    active: int | None = 0,
    processed: int | None = 0,
    kind: str = "worker-heartbeat",
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "freq": 2.0,
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
        "loadavg": [0.5, 0.25, 0.125],
    }
    if active is not None:
        fields["active"] = active
    if processed is not None:
        fields["processed"] = processed
    return event(kind, hostname, ts, **fields)


class Harness:
    """A tracker with a fake clock, collected into a private registry."""

    def __init__(
        self,
        worker_queues: Mapping[str, tuple[str, ...]] | None = None,
        arrivals: WorkerArrivals | None = None,
        **overrides: Any,
    ) -> None:
        self.clock = FakeClock()
        self.config = dataclasses.replace(Config(broker_url="redis://localhost"), **overrides)
        self.queues = dict(worker_queues or {})  # what inspect told; tests may change it
        self.tracker = Tracker(
            self.config, clock=self.clock, worker_queues=lambda: self.queues, arrivals=arrivals
        )
        self.registry = CollectorRegistry(auto_describe=False)
        factory = FamilyFactory(
            self.config.metric_prefix, self.config.static_labels, self.config.disabled_metrics
        )
        self.registry.register(
            TrackerCollector(
                self.tracker, factory, self.config.runtime_buckets, self.config.queue_wait_buckets
            )
        )

    def feed(self, *messages: Any) -> None:
        for message in messages:
            self.tracker.record_message(message)

    def value(self, metric: str, /, **labels: str) -> float | None:
        return self.registry.get_sample_value(metric, labels)

    def task(
        self, kind: str, name: str, hostname: str = "worker-1", queue: str = "celery", **extra: str
    ) -> float | None:
        labels = {"name": name, "hostname": hostname, "queue_name": queue, **extra}
        return self.value(f"celery_task_{kind}_total", **labels)

    def names(self) -> set[str]:
        return {s.name for m in self.registry.collect() for s in m.samples}


class Worker:
    """A scripted prefork worker: starts tasks, sends heartbeats every 2 s, on its own clock."""

    def __init__(self, harness: Harness, hostname: str = WORKER) -> None:
        self.h = harness
        self.hostname = hostname
        self.now = harness.clock.now
        self.processed = 0
        self.count = 0
        self.held_back: list[dict[str, Any]] = []  # batched, not flushed yet

    def start_tasks(self, n: int, deliver: bool = True, batch: bool = False) -> None:
        """n tasks start (processed grows); their task-started events are delivered now, held
        back in the batch until flush(), or lost."""
        for _ in range(n):
            self.now += 0.001
            self.count += 1
            self.processed += 1
            event = started(f"t{self.count}", self.now, hostname=self.hostname)
            if batch:
                self.held_back.append(event)
            elif deliver:
                self.h.feed(event)

    def flush(self) -> None:
        self.h.feed(self.held_back)
        self.held_back = []

    def beat(self, seconds: float = 2.0) -> None:
        self.now += seconds
        self.h.clock.now = self.now
        self.h.feed(heartbeat(self.hostname, self.now, active=0, processed=self.processed))

    def beats(self, n: int) -> None:
        for _ in range(n):
            self.beat()


def settle_beats() -> int:
    """Heartbeats (2 s apart) after which every earlier checkpoint is settled and confirmed."""
    return int(GRACE / 2) + 2
