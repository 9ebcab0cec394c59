"""QueuePoller and PollCollector with a fake clock, a scripted probe and a scripted inspector:
staleness, queue discovery and expiry, worker stats, failure logging, disabled metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace

import amqp.exceptions
import pytest
import redis.exceptions
from celery import Celery
from kombu.entity import Exchange, Queue
from prometheus_client.registry import CollectorRegistry

from celery_exporter.config import Config
from celery_exporter.exposition.catalogue import FamilyFactory
from celery_exporter.exposition.poll_collector import PollCollector
from celery_exporter.faults.classify import FaultDescriber
from celery_exporter.faults.outages import BrokerOutages
from celery_exporter.faults.refusals import Refused
from celery_exporter.poll.amqp_queues import AmqpQueueProbe, KombuQueueProbe
from celery_exporter.poll.inspection import parse_replies
from celery_exporter.poll.poller import QueuePoller
from celery_exporter.poll.redis_queues import ReadFailures, RedisQueueProbe
from celery_exporter.poll.transports import make_probe
from tests.support.scripted_poll import (
    ACTIVE,
    STATS,
    FakeClock,
    ScriptedProbe,
    length,
    make,
    refused_queue,
)


def test_lengths_are_served_within_two_intervals_then_dropped() -> None:
    poller, probe, _, clock, registry = make(lengths={"static": 7})
    assert length(registry, "static") is None  # nothing polled yet: no made-up zero
    poller.poll_queues()
    assert length(registry, "static") == 7
    assert registry.get_sample_value("celery_exporter_queue_poll_success") == 1
    assert registry.get_sample_value("celery_queue_unacked_messages", {"queue_name": "static"}) == 1
    probe.down = True
    clock.now += 5
    poller.poll_queues()
    assert registry.get_sample_value("celery_exporter_queue_poll_success") == 0
    assert registry.get_sample_value(
        "celery_exporter_queue_poll_last_success_timestamp_seconds"
    ) == pytest.approx(1000.0)
    clock.now = 1000.0 + 2 * 5 + 3  # 2 intervals + the timeout: still served
    assert length(registry, "static") == 7
    clock.now += 0.01
    assert length(registry, "static") is None
    assert (
        registry.get_sample_value("celery_queue_unacked_messages", {"queue_name": "static"}) is None
    )
    probe.down = False
    poller.poll_queues()
    assert length(registry, "static") == 7
    assert registry.get_sample_value("celery_exporter_queue_poll_success") == 1


def test_failure_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    poller, probe, inspector, clock, _ = make()
    # The poller's clock times the outage here; the exporter gives it a monotonic one.
    poller.outages = BrokerOutages("memory://", FaultDescriber("memory://"), clock)
    probe.down = inspector.down = True
    with caplog.at_level(logging.INFO, logger="celery_exporter.faults.outages"):
        for _ in range(5):
            poller.poll_queues()
            poller.inspect_workers()
            clock.now += 5
        probe.down = inspector.down = False
        poller.poll_queues()
        poller.poll_queues()
        assert poller.outages.failing() == {"worker inspect": "unreachable"}
        poller.inspect_workers()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "cannot connect to broker memory://: connection refused: no broker listens at that "
        "host and port; retrying until it works",
        "connected to broker memory:// after 25.0s of failures",
    ]


def test_worker_queues_are_discovered_and_expire_but_static_ones_do_not() -> None:
    workers = parse_replies(ACTIVE, STATS)
    poller, probe, inspector, clock, registry = make(workers=workers)
    poller.inspect_workers()
    poller.poll_queues()
    assert probe.asked[-1] == ("static", "alpha", "beta")
    assert dict(poller.worker_queues()) == {"w1@host-a": ("alpha", "beta")}
    assert length(registry, "alpha") == 0
    inspector.workers = {}  # the worker went away
    clock.now += 50
    poller.inspect_workers()
    assert dict(poller.worker_queues()) == {}
    assert poller.known_queues() == ("static", "alpha", "beta")
    clock.now = 1000.0 + 100  # exactly queue_expiry after last seen: kept
    assert poller.known_queues() == ("static", "alpha", "beta")
    clock.now += 0.5
    assert poller.known_queues() == ("static",)
    clock.now += 10_000
    assert poller.known_queues() == ("static",)


def test_a_discovered_queue_with_a_backlog_does_not_expire() -> None:
    poller, _, inspector, clock, _ = make(
        lengths={"alpha": 3}, workers=parse_replies(ACTIVE, STATS)
    )
    poller.inspect_workers()
    inspector.workers = {}
    for _ in range(5):
        clock.now += 60
        poller.inspect_workers()
        poller.poll_queues()
    assert "alpha" in poller.known_queues()  # still 3 messages waiting: keep reporting them
    assert "beta" not in poller.known_queues()


def test_worker_and_per_queue_metrics_from_inspect() -> None:
    workers = parse_replies(
        {**ACTIVE, "w2@host-a": [{"name": "alpha"}]},
        {**STATS, "w2@host-a": {"pool": {"max-concurrency": 2}}},
    )
    poller, _, inspector, clock, registry = make(workers=workers)
    poller.inspect_workers()
    w1 = {"hostname": "host-a", "worker": "w1@host-a"}
    assert registry.get_sample_value("celery_worker_concurrency", w1) == 4
    assert (
        registry.get_sample_value("celery_worker_cpu_seconds_total", {**w1, "mode": "user"}) == 1.5
    )
    assert (
        registry.get_sample_value("celery_worker_cpu_seconds_total", {**w1, "mode": "system"})
        == 0.25
    )
    assert registry.get_sample_value("celery_worker_max_rss_bytes", w1) == 2048 * 1024
    alpha, beta = {"queue_name": "alpha"}, {"queue_name": "beta"}
    assert registry.get_sample_value("celery_active_worker_count", alpha) == 2
    assert registry.get_sample_value("celery_active_process_count", alpha) == 6
    assert registry.get_sample_value("celery_active_consumer_count", alpha) == 2
    assert registry.get_sample_value("celery_active_worker_count", beta) == 1
    assert registry.get_sample_value("celery_active_worker_count", {"queue_name": "static"}) == 0
    assert registry.get_sample_value("celery_exporter_inspect_success") == 1
    inspector.down = True
    clock.now += 30
    poller.inspect_workers()
    assert registry.get_sample_value("celery_exporter_inspect_success") == 0
    assert registry.get_sample_value("celery_active_worker_count", alpha) == 2  # within grace
    clock.now = 1000.0 + 2 * (30 + 2 * 2) + 1
    assert registry.get_sample_value("celery_active_worker_count", alpha) is None
    assert registry.get_sample_value("celery_worker_concurrency", w1) is None
    assert registry.get_sample_value(
        "celery_exporter_inspect_last_success_timestamp_seconds"
    ) == pytest.approx(1000.0)


def test_worker_queues_is_an_immutable_snapshot() -> None:
    poller, _, inspector, _, _ = make(workers=parse_replies(ACTIVE, STATS))
    poller.inspect_workers()
    snapshot = poller.worker_queues()
    with pytest.raises(TypeError):
        snapshot["x@y"] = ("q",)  # type: ignore[index]
    inspector.workers = {}
    poller.inspect_workers()
    assert dict(snapshot) == {"w1@host-a": ("alpha", "beta")}  # a reader's copy never changes


def test_inspect_interval_zero_switches_inspect_off() -> None:
    cfg = Config(broker_url="memory://", inspect_interval=0)
    poller = QueuePoller(cfg, Celery(set_as_current=False), FakeClock())
    assert poller.inspector is None
    poller.inspect_workers()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PollCollector(poller, FamilyFactory()))
    assert registry.get_sample_value("celery_exporter_inspect_success") is None


def test_disabled_metrics_and_prefix_and_static_labels() -> None:
    poller, _, _, _, _ = make(lengths={"static": 2})
    poller.poll_queues()
    registry = CollectorRegistry(auto_describe=False)
    factory = FamilyFactory("x_", [("env", "prod")], {"queue_unacked_messages"})
    registry.register(PollCollector(poller, factory))
    assert registry.get_sample_value("x_queue_length", {"queue_name": "static", "env": "prod"}) == 2
    assert (
        registry.get_sample_value(
            "x_queue_unacked_messages", {"queue_name": "static", "env": "prod"}
        )
        is None
    )


def test_unsupported_transport_says_so_and_exports_no_lengths(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = Config(broker_url="memory://", queues=("q",), inspect_interval=0)
    probe = ScriptedProbe({}, supported=False)
    with caplog.at_level(logging.WARNING):
        poller = QueuePoller(cfg, Celery(set_as_current=False), FakeClock(), probe=probe)
    assert any("cannot report queue lengths" in r.getMessage() for r in caplog.records)
    poller.poll_queues()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PollCollector(poller, FamilyFactory()))
    assert registry.get_sample_value("celery_exporter_queue_length_supported") == 0
    assert registry.get_sample_value("celery_queue_length", {"queue_name": "q"}) is None
    assert registry.get_sample_value("celery_exporter_queue_poll_success") is None


def test_kombu_probe_on_the_memory_transport_counts_and_reads_missing_as_zero() -> None:
    app = Celery(set_as_current=False, broker="memory://")
    cfg = Config(broker_url="memory://")
    probe = make_probe(app, cfg)
    assert isinstance(probe, KombuQueueProbe)
    assert probe.supports_length
    queue = Queue("mem-q", Exchange("mem-q"), "mem-q")
    with app.connection_for_write() as conn, conn.Producer() as producer:
        for n in range(3):
            producer.publish(
                {"n": n}, exchange=queue.exchange, routing_key="mem-q", declare=[queue]
            )
    try:
        reading = probe.read(["mem-q", "never-declared"])
    finally:
        probe.close()
    assert reading.lengths == {"mem-q": 3, "never-declared": 0}


def test_redis_keys_follow_kombu_sep_steps_and_prefix() -> None:
    channel = SimpleNamespace(global_keyprefix="p:", sep="|", priority_steps=[0, 5])
    assert RedisQueueProbe.queue_keys(channel, "q") == ["p:q", "p:q|5"]


def test_redis_unacked_routes_map_through_bindings() -> None:
    probe = RedisQueueProbe(Celery(set_as_current=False), 1.0)
    values = [
        '[{"body": ""}, "", "alpha"]',
        '[{"body": ""}, "jobs", "rk.beta"]',
        '[{"body": ""}, "jobs", "rk.beta"]',
        "not json",
    ]
    routes = probe._unacked_routes(values)
    assert routes == {("", "alpha"): 1, ("jobs", "rk.beta"): 2}
    probe._bindings["jobs"] = probe._parse_bindings("\x06\x16", {b"rk.beta\x06\x16\x06\x16beta"})
    assert probe._queue_for("jobs", "rk.beta") == "beta"
    assert probe._queue_for("", "alpha") == "alpha"
    assert probe._queue_for("other", "gamma") == "gamma"  # no binding known: the routing key


def test_a_queue_this_user_may_not_read_fails_the_poll_has_no_value_and_is_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    poller, probe, _, clock, registry = make(queues=("open", "secret"), lengths={"open": 2})
    url = "amqp://monitor:***@rabbit:5672//"
    poller.outages = BrokerOutages(url, FaultDescriber(url), clock)
    poller.poll_queues()
    assert length(registry, "secret") == 0  # an empty queue, readable
    probe.refused = {"secret"}  # the permission is revoked
    with caplog.at_level(logging.INFO, logger="celery_exporter.faults.outages"):
        for _ in range(3):
            clock.now += 5
            poller.poll_queues()
        assert length(registry, "secret") is None  # neither 0 nor the value of before
        assert length(registry, "open") == 2  # what it may read is still served, fresh
        assert registry.get_sample_value("celery_exporter_queue_poll_success") == 0
        assert registry.get_sample_value(
            "celery_exporter_queue_poll_last_success_timestamp_seconds"
        ) == pytest.approx(1000.0)
        probe.refused = set()  # granted, live
        clock.now += 5
        poller.poll_queues()
    assert length(registry, "secret") == 0
    assert registry.get_sample_value("celery_exporter_queue_poll_success") == 1
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            f"queue poll failing on broker {url}: RabbitMQ user 'monitor' may not use queue "
            "'secret' in vhost '/' (Queue.declare: 403 ACCESS_REFUSED): let its configure "
            "pattern match it (rabbitmqctl set_permissions -p / monitor CONFIGURE WRITE READ); "
            "retrying until it works",
        ),
        ("INFO", f"queue poll works again on broker {url} after 15.0s"),
    ]


class StandInChannel:
    """A py-amqp channel as RabbitMQ 4.2.6+ answers passive declares: 403 for what this user
    may not use, 404 for a missing queue (each closes the channel, as the broker does)."""

    def __init__(self, refused: set[str], ready: dict[str, int]) -> None:
        self.refused, self.ready = refused, ready

    def queue_declare(self, queue: str, passive: bool) -> SimpleNamespace:
        assert passive
        if queue in self.refused:
            raise refused_queue(queue)
        if queue not in self.ready:
            raise amqp.exceptions.NotFound(
                reply_text=f"NOT_FOUND - no queue '{queue}' in vhost '/'",
                method_sig=(50, 10),
                reply_code=404,
            )
        return SimpleNamespace(message_count=self.ready[queue], consumer_count=1)

    def close(self) -> None:
        pass


def test_amqp_probe_leaves_a_refused_queue_out_and_carries_the_refusal() -> None:
    channels: Iterator[StandInChannel] = iter(lambda: StandInChannel({"secret"}, {"open": 4}), None)
    conn = SimpleNamespace(
        channel=lambda: next(channels), channel_errors=(amqp.exceptions.ChannelError,)
    )
    probe = AmqpQueueProbe(Celery(set_as_current=False), 1.0)
    reading = probe._read(conn, ["open", "secret", "missing"])
    assert reading.lengths == {"open": 4, "missing": 0}
    assert isinstance(reading.error, amqp.exceptions.AccessRefused)
    assert "'secret'" in str(reading.error)
    assert probe._read(conn, ["open", "missing"]).error is None


def test_redis_refusals_become_acl_rules_under_the_key_prefix() -> None:
    channel = SimpleNamespace(
        global_keyprefix="t[1]:",
        sep="\x06\x16",
        unacked_key="unacked",
        keyprefix_queue="_kombu.binding.%s",
    )
    failures = ReadFailures(channel)
    no_key = redis.exceptions.NoPermissionError(
        "this user has no permissions to access one of the keys used as arguments"
    )
    no_llen = redis.exceptions.NoPermissionError(
        "this user has no permissions to run the 'llen' command"
    )
    wrongtype = redis.exceptions.ResponseError(
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    )
    assert not failures.add("queue 'ok'", [("llen", "t[1]:ok", wrongtype)])  # kombu's 0
    assert failures.add("queue 'a'", [("llen", "t[1]:a\x06\x163", no_llen)])
    assert failures.add("queue 'b'", [("lindex", "t[1]:b\x06\x166", no_key)])
    assert failures.add("the unacked hash", [("hvals", "t[1]:unacked", no_key)])
    assert failures.add("the binding sets", [("smembers", "t[1]:_kombu.binding.x", no_key)])
    refused = failures.error()
    assert isinstance(refused, Refused) and refused.__cause__ is no_llen
    assert refused.what == "queues 'a', 'b', the unacked hash, the binding sets"
    assert refused.rules == (
        "+llen",
        "~t\\[1\\]:b*",
        "~t\\[1\\]:unacked",
        "~t\\[1\\]:_kombu.binding.*",
    )
    # An error that no grant would fix is carried as it is (and still fails the poll).
    loading = redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory")
    other = ReadFailures(channel)
    assert other.add("queue 'a'", [("llen", "t[1]:a", loading)])
    assert other.error() is loading
    assert ReadFailures(channel).error() is None
