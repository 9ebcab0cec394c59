"""celery_worker_queue_info: which worker consumes which queue, for joins in PromQL (idle pool
processes per queue). From the inspect round, through PollCollector."""

from __future__ import annotations

from prometheus_client.registry import CollectorRegistry

from celery_exporter.poll.inspection import parse_replies
from tests.unit.test_poller import ACTIVE, STATS, make


def info(registry: CollectorRegistry, worker: str, queue: str) -> float | None:
    labels = {"hostname": "host-a", "worker": worker, "queue_name": queue}
    return registry.get_sample_value("celery_worker_queue_info", labels)


def test_one_series_per_worker_and_queue_it_consumes_gone_when_stale() -> None:
    workers = parse_replies({**ACTIVE, "w2@host-a": [{"name": "alpha"}]}, STATS)
    poller, _, _, clock, registry = make(workers=workers)
    poller.inspect_workers()
    assert info(registry, "w1@host-a", "alpha") == 1
    assert info(registry, "w1@host-a", "beta") == 1
    assert info(registry, "w2@host-a", "alpha") == 1
    assert info(registry, "w2@host-a", "beta") is None
    assert info(registry, "w1@host-a", "static") is None
    clock.now += 1000  # no inspect round since: the mapping is stale and dropped
    assert info(registry, "w1@host-a", "alpha") is None


def test_disabled_like_every_other_family() -> None:
    workers = parse_replies(ACTIVE, STATS)
    poller, _, _, _, registry = make(
        workers=workers, disabled_metrics=frozenset({"worker_queue_info"})
    )
    poller.inspect_workers()
    assert info(registry, "w1@host-a", "alpha") is None
    assert (
        registry.get_sample_value(
            "celery_worker_concurrency", {"hostname": "host-a", "worker": "w1@host-a"}
        )
        == 4
    )
