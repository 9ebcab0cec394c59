"""celery_worker_queue_info: which worker consumes which queue, for joins in PromQL (idle pool
processes per queue). From the inspect round, through PollCollector."""

from __future__ import annotations

from prometheus_client.registry import CollectorRegistry

from celery_exporter.poll.inspection import WorkerStats, parse_replies
from tests.support.scripted_poll import ACTIVE, STATS, make


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


def test_parse_replies_reads_pool_and_rusage() -> None:
    workers = parse_replies(ACTIVE, STATS)
    w = workers["w1@host-a"]
    assert w.queues == ("alpha", "beta")
    assert (w.concurrency, w.processes) == (4, 4)
    assert (w.user_cpu_seconds, w.system_cpu_seconds) == (1.5, 0.25)
    assert w.max_rss_bytes == 2048 * 1024  # ru_maxrss is KiB on Linux


def test_parse_replies_tolerates_garbage() -> None:
    workers = parse_replies({"a@h": "nonsense", "b@h": [{"name": 3}, "x"]}, {"a@h": {"pool": 5}})
    assert workers["a@h"] == WorkerStats(node="a@h")
    assert workers["b@h"].queues == ()
    assert parse_replies(None, None) == {}
