"""Reliability under real faults: broker outages (SIGKILLed Redis and RabbitMQ), malformed and
hostile event messages published straight to the event exchange, cardinality floods, signal
handling, and the purge of dead workers. Everything runs against the real exporter subprocess.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from celery.events.event import get_exchange
from kombu.connection import Connection
from kombu.messaging import Producer

from tests.support.eventscript import WORKER, heartbeat, received, sent, started, succeeded
from tests.support.exporter_process import ExporterFactory, ExporterProcess, Samples
from tests.support.producer import producer, send
from tests.support.servers import RabbitMQServer, RedisServer, WorkerFactory

pytestmark = pytest.mark.integration
HOST = socket.gethostname()
FAST = ("--retry-interval", "0.2", "--queue-poll-interval", "0.5", "--inspect-interval", "0")
# An event claiming more than this much wait is broken, not slow (events.MAX_DURATION).
YEAR = 366 * 24 * 3600.0
HISTOGRAMS = ("celery_task_runtime", "celery_task_queue_wait_time", "celery_task_failed_runtime")


def deadline_loop(timeout: float, what: str) -> Iterator[None]:
    """Yield until `timeout` s pass, then fail naming `what`: a polling loop with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        yield
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s: {what}")


def monotonic_samples(samples: Samples) -> Samples:
    """Counter and histogram samples of task and exporter activity: these must never go down."""
    return {
        key: value
        for key, value in samples.items()
        if key[0].startswith("celery_")
        and (key[0].endswith("_total") or key[0].startswith(HISTOGRAMS))
    }


def decreased(before: Samples, after: Samples) -> list[str]:
    """Samples present before that are missing or lower after."""
    return [
        f"{name}{dict(labels)}: {value} -> {after.get((name, labels))}"
        for (name, labels), value in before.items()
        if after.get((name, labels), -1.0) < value
    ]


class EventPublisher:
    """Publishes raw messages to the event exchange as a worker would (task.multi, JSON)."""

    def __init__(self, broker_url: str) -> None:
        self.conn = Connection(broker_url)
        self.exchange = get_exchange(self.conn)
        self.producer = Producer(self.conn.channel(), exchange=self.exchange)

    def raw(self, body: bytes, routing_key: str = "task.multi") -> None:
        self.producer.publish(
            body,
            routing_key=routing_key,
            content_type="application/json",
            content_encoding="utf-8",
            declare=[self.exchange],
        )

    def json(self, body: Any, routing_key: str = "task.multi") -> None:
        # json.dumps escapes lone surrogates as \udXXX, as a non-Python sender could send them.
        self.raw(json.dumps(body).encode(), routing_key)

    def close(self) -> None:
        self.conn.release()


PublisherFactory = Callable[[str], EventPublisher]


@pytest.fixture
def publisher_factory() -> Iterator[PublisherFactory]:
    made: list[EventPublisher] = []

    def make(broker_url: str) -> EventPublisher:
        made.append(EventPublisher(broker_url))
        return made[-1]

    try:
        yield make
    finally:
        for publisher in made:
            publisher.close()


def subscribed(exporter: ExporterProcess, publisher: EventPublisher) -> None:
    """Publish a custom probe event until the exporter counts it: Redis pub/sub keeps nothing
    for a subscriber that is not listening yet, so exact counts start only after this."""
    for _ in deadline_loop(20, f"exporter to receive events\n{exporter.log}"):
        publisher.json({"type": "probe", "hostname": "probe@test", "timestamp": time.time()})
        if exporter.value("celery_exporter_events_total", event="other"):
            return


def task_labels(name: str, hostname: str = "worker-1", queue: str = "celery") -> dict[str, str]:
    return {"name": name, "hostname": hostname, "queue_name": queue}


# ---- 1. broker outage ------------------------------------------------------------------------


@pytest.fixture(params=["redis", "rabbitmq"])
def own_broker(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[RedisServer | RabbitMQServer]:
    """A broker for this test alone: the test kills it."""
    server: RedisServer | RabbitMQServer
    if request.param == "redis":
        server = RedisServer.start(tmp_path / "own-redis")
    else:
        server = RabbitMQServer.start(tmp_path / "own-rabbitmq")
    try:
        yield server
    finally:
        server.stop()


def test_broker_outage_keeps_metrics_serving_and_recovers_exactly(
    own_broker: RedisServer | RabbitMQServer,
    worker_factory: WorkerFactory,
    exporter_factory: ExporterFactory,
) -> None:
    url = own_broker.url
    exporter = exporter_factory(url, *FAST, "--broker-timeout", "1", "--queues", "celery")
    # Knows no queue at all (no -Q, no inspect): its poll must still notice the outage.
    no_queues = exporter_factory(url, *FAST, "--broker-timeout", "1")
    worker = worker_factory(url, extra_args=("--heartbeat-interval", "1"))
    worker_labels = {"hostname": HOST, "worker": worker.hostname}
    exporter.wait_value("celery_worker_up", worker_labels, lambda v: v == 1)
    add = {"name": "workload.add", "hostname": HOST, "queue_name": "celery"}

    send(producer(url), "workload.add", "celery", times=3, args=(1, 2))
    exporter.wait_value("celery_task_succeeded_total", add, lambda v: v == 3, timeout=30)
    before = monotonic_samples(exporter.scrape())
    assert before[("celery_task_received_total", frozenset(add.items()))] == 3

    own_broker.kill()
    exporter.wait_value("celery_exporter_broker_up", {}, lambda v: v == 0, timeout=10)
    exporter.wait_value("celery_exporter_queue_poll_success", {}, lambda v: v == 0, timeout=10)
    no_queues_poll: set[float | None] = set()
    outage_scrapes = 0
    outage_end = time.monotonic() + 3.0
    while time.monotonic() < outage_end:
        began = time.monotonic()
        samples = exporter.scrape()  # asserts 200
        took = time.monotonic() - began
        assert took < 0.5, f"scrape took {took:.2f}s during the outage"
        assert samples[("celery_exporter_broker_up", frozenset())] == 0
        assert samples[("celery_exporter_queue_poll_success", frozenset())] == 0
        assert not decreased(before, monotonic_samples(samples))
        assert exporter.get("/readyz")[0] == 503
        no_queues_poll.add(no_queues.value("celery_exporter_queue_poll_success"))
        outage_scrapes += 1
        time.sleep(0.2)
    assert outage_scrapes >= 5

    own_broker.restart()
    exporter.wait_value("celery_exporter_broker_up", {}, lambda v: v == 1, timeout=30)
    assert (exporter.value("celery_exporter_broker_reconnects_total") or 0) >= 1
    # The worker reconnects on its own schedule; its heartbeats say when it is back.
    heartbeats = exporter.value("celery_exporter_events_total", event="worker-heartbeat") or 0
    exporter.wait_value(
        "celery_exporter_events_total",
        {"event": "worker-heartbeat"},
        lambda v: (v or 0) > heartbeats + 1,
        timeout=60,
    )
    send(producer(url), "workload.add", "celery", times=4, args=(2, 2))
    exporter.wait_value("celery_task_succeeded_total", add, lambda v: v == 7, timeout=60)
    after = exporter.scrape()
    assert not decreased(before, monotonic_samples(after))
    for kind in ("sent", "received", "started", "succeeded"):
        assert after[(f"celery_task_{kind}_total", frozenset(add.items()))] == 7, kind
    assert after[("celery_task_runtime_count", frozenset(add.items()))] == 7
    exporter.wait_value("celery_exporter_queue_poll_success", {}, lambda v: v == 1)
    assert worker.is_running()
    log = exporter.log
    assert log.count("lost connection to broker") == 1, log
    assert log.count("reconnected to broker") == 1, log
    # the event thread and the poll thread both saw it: still one line
    assert len([line for line in log.splitlines() if " WARNING " in line]) == 1, log
    assert "Traceback" not in log
    no_queues.wait_value("celery_exporter_broker_up", {}, lambda v: v == 1, timeout=40)
    assert 0 in no_queues_poll, f"poll success read {no_queues_poll} all through the outage"


# ---- 2. malformed events ---------------------------------------------------------------------


def good_task(uuid_: str, name: str, worker: str = WORKER) -> list[dict[str, Any]]:
    """One task's events as a producer and a prefork worker send them."""
    now = time.time()
    return [
        sent(uuid_, name, now),
        received(uuid_, name, now + 0.01, worker),
        started(uuid_, now + 0.02, worker),
        succeeded(uuid_, now + 0.05, runtime=0.03, hostname=worker),
    ]


HUGE_NAME = "huge." + "x" * 1_000_000
ODD_NAME = "odd.\U0001f600\u200f\u202ename\u05d0"  # emoji, RTL mark, RTL override, alef


def publish_malformed(publisher: EventPublisher) -> tuple[str, str]:
    """Good task events, then one of each kind of bad message, then good events again."""
    now = time.time()
    publisher.json(good_task("good-before", "good.before"))
    publisher.raw(b'{"type": "task-received", "uuid": ')  # not JSON at all
    publisher.raw(b"\xff\xfe not utf-8")
    publisher.json(42)
    publisher.json("a string")
    publisher.json([1, "junk", None, received("in-list", "good.in_list", now)])
    publisher.json({k: v for k, v in received("x", "t.no_uuid", now).items() if k != "uuid"})
    publisher.json(received("x", "t.int_uuid", now) | {"uuid": 12345})
    publisher.json(received("u" * 300, "t.long_uuid", now))
    publisher.json(started("ts-string", now) | {"timestamp": "yesterday"})
    publisher.raw(json.dumps(started("ts-inf", now) | {"timestamp": float("inf")}).encode())
    publisher.json(succeeded("rt-negative", now, runtime=-1))
    publisher.json(succeeded("rt-huge", now, runtime=1e30))
    publisher.json(succeeded("rt-nan", now, runtime="NaN"))
    publisher.json({})
    publisher.json({"type": 7, "hostname": "celery@worker-1"})
    publisher.json(received("no-host", "t.no_host", now) | {"hostname": None})
    publisher.json(received("huge", HUGE_NAME, now))
    publisher.json(received("odd", ODD_NAME, now))
    publisher.json(received("far-future", "t.far_future", 1e12))
    publisher.json(good_task("good-after", "good.after"))
    return HUGE_NAME, ODD_NAME


def test_malformed_events_are_counted_by_reason_and_never_stop_the_exporter(
    broker_url: str, exporter_factory: ExporterFactory, publisher_factory: PublisherFactory
) -> None:
    exporter = exporter_factory(broker_url, *FAST)
    publisher = publisher_factory(broker_url)
    subscribed(exporter, publisher)
    huge_name, odd_name = publish_malformed(publisher)

    expected_errors = {
        "undecodable": 2,
        "not_a_dict": 5,  # 42, "a string", and 1, "junk", None inside the list
        "bad_uuid": 3,
        "bad_timestamp": 2,
        "bad_runtime": 3,
        "bad_type": 2,
        "bad_hostname": 1,
    }
    total = sum(expected_errors.values())
    after = task_labels("good.after")
    exporter.wait_value("celery_task_succeeded_total", after, lambda v: v == 1, timeout=20)
    for _ in deadline_loop(10, "every bad message to be counted"):
        samples = exporter.scrape()
        errors = {
            dict(labels)["reason"]: value
            for (name, labels), value in samples.items()
            if name == "celery_exporter_event_errors_total"
        }
        if sum(errors.values()) >= total:
            break
    assert errors == expected_errors

    def value(name: str, labels: dict[str, str]) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    for good in ("good.before", "good.after"):
        assert value("celery_task_sent_total", task_labels(good, "web-1")) == 1, good
        for kind in ("received", "started", "succeeded"):
            assert value(f"celery_task_{kind}_total", task_labels(good)) == 1, (good, kind)
        assert value("celery_task_runtime_count", task_labels(good)) == 1
        assert value("celery_task_runtime_sum", task_labels(good)) == pytest.approx(0.03)
    assert value("celery_task_received_total", task_labels("good.in_list")) == 1
    assert value("celery_task_received_total", task_labels(huge_name[:200])) == 1
    assert value("celery_task_received_total", task_labels(odd_name)) == 1
    assert value("celery_task_received_total", task_labels("t.far_future")) == 1
    for bad in ("t.no_uuid", "t.int_uuid", "t.long_uuid", "t.no_host"):
        assert value("celery_task_received_total", task_labels(bad)) is None, bad
    # The rejected runtimes' events were dropped whole, not counted under name "unknown".
    assert value("celery_task_succeeded_total", task_labels("unknown")) is None
    assert value("celery_exporter_events_total", {"event": "task-received"}) == 6
    assert value("celery_exporter_events_total", {"event": "task-succeeded"}) == 2
    assert max(len(line) for line in exporter.get("/metrics")[1].splitlines()) < 1000
    assert exporter.proc is not None and exporter.proc.poll() is None
    assert [line for line in exporter.log.splitlines() if " WARNING " in line] == []


def test_a_lone_surrogate_in_a_task_name_does_not_break_metrics(
    redis_url: str, exporter_factory: ExporterFactory, publisher_factory: PublisherFactory
) -> None:
    """JSON may escape a lone surrogate (\\ud800); Python decodes it to a str that cannot be
    encoded as UTF-8. Such a name is not a usable label value and must be rejected as one."""
    exporter = exporter_factory(redis_url, *FAST)
    publisher = publisher_factory(redis_url)
    subscribed(exporter, publisher)
    publisher.json(received("surrogate", "bad.\ud800name", time.time()))
    publisher.json(good_task("good-after", "good.after"))
    for _ in deadline_loop(10, "the good task after the bad name"):
        status, body = exporter.get("/metrics")
        assert status == 200, body[-500:]
        if exporter.value("celery_task_succeeded_total", **task_labels("good.after")) == 1:
            break
    assert exporter.value("celery_exporter_event_errors_total", reason="bad_name") == 1
    assert exporter.value("celery_exporter_events_total", event="task-received") == 1


def test_an_absurd_started_timestamp_does_not_poison_the_queue_wait_histogram(
    redis_url: str, exporter_factory: ExporterFactory, publisher_factory: PublisherFactory
) -> None:
    """A worker clock set 30 years ahead claims a 30-year wait: that is a broken clock, and
    observing it would make the histogram's sum (and every mean wait) useless from then on."""
    exporter = exporter_factory(redis_url, *FAST)
    publisher = publisher_factory(redis_url)
    subscribed(exporter, publisher)
    now = time.time()
    publisher.json([sent("skewed", "t.skewed", now), started("skewed", now + 30 * YEAR)])
    publisher.json(good_task("good-after", "good.after"))
    exporter.wait_value(
        "celery_task_succeeded_total", task_labels("good.after"), lambda v: v == 1, timeout=20
    )
    skewed = task_labels("t.skewed")
    assert exporter.value("celery_task_sent_total", **task_labels("t.skewed", "web-1")) == 1
    # The event from the broken clock is rejected whole and counted, not half-used.
    assert exporter.value("celery_exporter_event_errors_total", reason="bad_timestamp") == 1
    assert exporter.value("celery_task_started_total", **skewed) is None
    wait_sum = exporter.value("celery_task_queue_wait_time_sum", **skewed) or 0.0
    assert wait_sum < YEAR
    assert exporter.value("celery_task_queue_wait_time_count", **skewed) in (None, 0)


# ---- 3. cardinality floods -------------------------------------------------------------------


def batches(events: Sequence[dict[str, Any]], size: int = 24) -> Iterator[list[dict[str, Any]]]:
    """Prefork workers batch up to 24 events per task.multi message; so do we."""
    for start in range(0, len(events), size):
        yield list(events[start : start + size])


def test_cardinality_floods_are_capped_and_the_exposition_stays_bounded(
    redis_url: str, exporter_factory: ExporterFactory, publisher_factory: PublisherFactory
) -> None:
    exporter = exporter_factory(
        redis_url,
        *FAST,
        "--max-task-names",
        "100",
        "--max-workers",
        "50",
        "--disable-metric",
        "celery_task_runtime",
    )
    publisher = publisher_factory(redis_url)
    subscribed(exporter, publisher)
    now = time.time()
    workers = [f"w{i}@flood-host-{i}" for i in range(200)]
    publisher.json([heartbeat(node, now, active=0, processed=0) for node in workers])
    task_worker = workers[0]  # an admitted worker: its task events add no worker overflow
    flood = [received(f"flood-{i}", f"flood.task_{i:04d}", now, task_worker) for i in range(2000)]
    for batch in batches(flood):
        publisher.json(batch)
    # A known name, so it is counted under its own name; its runtime is not exported.
    publisher.json(good_task("last", "flood.task_0000", task_worker))
    host = "flood-host-0"
    exporter.wait_value(
        "celery_task_succeeded_total",
        task_labels("flood.task_0000", host),
        lambda v: v == 1,
        timeout=30,
    )
    samples = exporter.scrape()
    body = exporter.get("/metrics")[1]

    received_names = {
        dict(labels)["name"]: value
        for (name, labels), value in samples.items()
        if name == "celery_task_received_total"
    }
    assert len(received_names) == 101
    assert received_names["__overflow__"] == 1900
    assert {n for n in received_names if n != "__overflow__"} == {
        f"flood.task_{i:04d}" for i in range(100)
    }
    assert all(received_names[f"flood.task_{i:04d}"] == 1 + (i == 0) for i in range(100))
    overflow = "celery_exporter_cardinality_overflow_total"
    assert samples[(overflow, frozenset({("label", "task_name")}))] == 1900
    assert samples[(overflow, frozenset({("label", "worker")}))] == 150
    assert samples[(overflow, frozenset({("label", "hostname")}))] == 0
    up = [labels for (name, labels), _ in samples.items() if name == "celery_worker_up"]
    assert len(up) == 50
    assert {dict(labels)["worker"] for labels in up} == set(workers[:50])

    assert not [key for key in samples if key[0].startswith("celery_task_runtime")]
    assert b"celery_task_runtime" not in body
    assert b"_created" not in body
    # Every series that may exist: 101 names x 8 task counters, 50 workers x (up, active,
    # heartbeat, processed, 3 loadavg, events-enabled), 1 queue-wait histogram, and at most
    # 200 lines of process, platform, GC and exporter metrics (with HELP and TYPE lines).
    lines = 101 * 8 + 50 * 8 + 20 + 200
    longest = max(len(line) for line in body.splitlines())
    assert longest < 200
    assert len(body.splitlines()) < lines
    # Uncapped, the 2,000 names alone would take some 2,000 x 7 lines (~1.4 MB).
    assert len(body) < lines * 150, len(body)


# ---- 4. lifecycle ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_exporter_cleanly_and_frees_the_port(
    signum: signal.Signals,
    redis_url: str,
    worker_factory: WorkerFactory,
    exporter_factory: ExporterFactory,
) -> None:
    exporter = exporter_factory(redis_url, *FAST)
    worker = worker_factory(redis_url)
    exporter.wait_value(
        "celery_worker_up", {"hostname": HOST, "worker": worker.hostname}, lambda v: v == 1
    )
    assert exporter.value("celery_exporter_broker_up") == 1
    assert exporter.proc is not None
    began = time.monotonic()
    exporter.proc.send_signal(signum)
    try:
        code = exporter.proc.wait(2.0)
    except subprocess.TimeoutExpired:
        pytest.fail(f"exporter still running 2 s after {signum.name}\n{exporter.log}")
    assert time.monotonic() - began < 2.0
    assert code == 0, exporter.log
    lines = exporter.log.strip().splitlines()
    assert lines[-1].endswith("celery_exporter.app: stopped"), lines[-3:]
    assert f"received {signum.name}, shutting down" in exporter.log
    assert "Traceback" not in exporter.log
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", exporter.port), timeout=1).close()
    with socket.socket() as successor:
        # A new exporter can listen here at once (closed scrape connections may sit in
        # TIME_WAIT, which SO_REUSEADDR, as every HTTP server sets it, allows).
        successor.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        successor.bind(("127.0.0.1", exporter.port))
        successor.listen()


# ---- 5. worker purge -------------------------------------------------------------------------


def test_dead_workers_read_zero_then_are_purged(
    redis_url: str, worker_factory: WorkerFactory, exporter_factory: ExporterFactory
) -> None:
    exporter = exporter_factory(
        redis_url, *FAST, "--worker-timeout", "1", "--purge-offline-worker-metrics", "3"
    )
    crashed = worker_factory(redis_url, hostname=f"crashed-{uuid.uuid4().hex[:6]}@{HOST}")
    clean = worker_factory(redis_url, hostname=f"clean-{uuid.uuid4().hex[:6]}@{HOST}")
    crashed_labels = {"hostname": HOST, "worker": crashed.hostname}
    clean_labels = {"hostname": HOST, "worker": clean.hostname}
    for labels in (crashed_labels, clean_labels):
        exporter.wait_value("celery_worker_up", labels, lambda v: v == 1)

    crashed.kill()  # SIGKILL: no worker-offline, only silence
    killed_at = time.monotonic()
    seen: list[float | None] = [1]
    for _ in deadline_loop(10, f"crashed worker to be purged, saw {seen}"):
        value = exporter.value("celery_worker_up", **crashed_labels)
        if seen[-1] != value:
            seen.append(value)
        if value is None:
            break
    purged_after = time.monotonic() - killed_at
    assert seen == [1, 0, None], seen
    # Purged 3 s after its last heartbeat, which came at most ~2 s before the kill.
    assert 0.9 < purged_after < 6.0, purged_after

    assert clean.process is not None
    clean.process.terminate()  # SIGTERM: a warm shutdown that sends worker-offline
    offline_line = f"worker {clean.hostname} went offline (clean shutdown)"
    for _ in deadline_loop(10, f"worker-offline of {clean.hostname}\n{exporter.log}"):
        if offline_line in exporter.log:
            break
    # Offline is known from the event itself, not from a timeout: gone at once, never 0, so
    # that CeleryWorkerDown is not even pending on a deploy (tests/deploy/test_rolling_restart).
    assert exporter.value("celery_worker_up", **clean_labels) is None
    assert exporter.value("celery_worker_tasks_active", **clean_labels) is None
    # Its counters stay until the purge, like a silent worker's, and then go too.
    processed = "celery_worker_tasks_processed_total"
    assert exporter.value(processed, **clean_labels) is not None
    for _ in deadline_loop(10, f"clean worker's counters to be purged\n{exporter.log}"):
        if exporter.value(processed, **clean_labels) is None:
            break
    clean.process.wait(15)
