"""Scripted stand-ins for the poll side's unit tests: a fake clock, a probe and an inspector that
answer what the test says, and a QueuePoller wired to them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import amqp.exceptions
from celery import Celery
from prometheus_client.registry import CollectorRegistry

from celery_exporter.config import Config
from celery_exporter.exposition.catalogue import FamilyFactory
from celery_exporter.exposition.poll_collector import PollCollector
from celery_exporter.poll.inspection import WorkerStats
from celery_exporter.poll.poller import QueuePoller
from celery_exporter.poll.queue_probe import ProbeError, QueueProbe, QueueReading


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedProbe(QueueProbe):
    """Answers with `lengths` (or raises while `down`); records what it was asked."""

    def __init__(self, lengths: dict[str, int], supported: bool = True) -> None:
        self.lengths = lengths
        self.down = False
        self.refused: set[str] = set()  # queues this user may not read
        self.asked: list[tuple[str, ...]] = []
        self.supports_length = supported

    def read(self, queues: Sequence[str]) -> QueueReading:
        self.asked.append(tuple(queues))
        if self.down:
            refused = ConnectionRefusedError(111, "Connection refused")
            raise ProbeError("ConnectionRefusedError: [Errno 111] Connection refused") from refused
        return QueueReading(
            lengths={q: self.lengths.get(q, 0) for q in queues if q not in self.refused},
            unacked={q: 1 for q in queues},
            error=next((refused_queue(q) for q in queues if q in self.refused), None),
        )

    def close(self) -> None:
        pass


def refused_queue(queue: str) -> amqp.exceptions.AccessRefused:
    """What py-amqp raises when RabbitMQ (4.2.6 and later) refuses a passive declare."""
    return amqp.exceptions.AccessRefused(
        reply_text=f"ACCESS_REFUSED - access to queue '{queue}' in vhost '/' refused for "
        "user 'monitor'",
        method_sig=(50, 10),
        reply_code=403,
    )


class ScriptedInspector:
    def __init__(self, workers: dict[str, WorkerStats]) -> None:
        self.workers = workers
        self.down = False

    def round(self) -> dict[str, WorkerStats]:
        if self.down:
            refused = ConnectionRefusedError(111, "Connection refused")
            raise ProbeError("OperationalError: [Errno 111] Connection refused") from refused
        return dict(self.workers)


STATS = {
    "w1@host-a": {
        "pool": {"max-concurrency": 4, "processes": [11, 12, 13, 14]},
        "rusage": {"utime": 1.5, "stime": 0.25, "maxrss": 2048},
    }
}


ACTIVE = {"w1@host-a": [{"name": "alpha"}, {"name": "beta"}]}


def make(
    queues: tuple[str, ...] = ("static",),
    lengths: dict[str, int] | None = None,
    workers: dict[str, WorkerStats] | None = None,
    **config: Any,
) -> tuple[QueuePoller, ScriptedProbe, ScriptedInspector, FakeClock, CollectorRegistry]:
    cfg = Config(
        broker_url="memory://",
        queues=queues,
        queue_poll_interval=5.0,
        broker_timeout=3.0,
        inspect_interval=30.0,
        inspect_timeout=2.0,
        queue_expiry=100.0,
        **config,
    )
    clock = FakeClock()
    probe = ScriptedProbe(lengths or {})
    inspector = ScriptedInspector(workers or {})
    poller = QueuePoller(cfg, Celery(set_as_current=False), clock, probe=probe, inspector=inspector)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        PollCollector(
            poller, FamilyFactory(cfg.metric_prefix, cfg.static_labels, cfg.disabled_metrics)
        )
    )
    return poller, probe, inspector, clock, registry


def length(registry: CollectorRegistry, queue: str) -> float | None:
    return registry.get_sample_value("celery_queue_length", {"queue_name": queue})
