"""Every broker setup users run, on real servers with real workers: Redis over TLS (a CA, a
client certificate, a wrong CA), Redis Sentinel with a failover under load, a Redis database
other than 0, the event topic under kombu's fanout and key-prefix options, and RabbitMQ over
TLS in a vhost of its own. In each, the broker password appears in no log line, page or metric.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.brokers import MASTER_NAME, RabbitMQTlsServer, RedisNode, Sentinels, redis_tls_server
from tests.certs import Pki, make_pki
from tests.conftest import WorkerFactory
from tests.exporter import ExporterProcess, Samples
from tests.servers import free_port, wait_for

from .conftest import ExporterFactory, send

pytestmark = pytest.mark.integration
FAST = ("--retry-interval", "0.2", "--queue-poll-interval", "0.5", "--inspect-interval", "0")
PASSWORD = "s3cret-Broker-pw"  # never printed by the exporter
SENTINEL_PASSWORD = "s3cret-Sentinel-pw"
ADD = "workload.add"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def app_for(
    url: str, ssl: dict[str, Any] | None = None, options: dict[str, Any] | None = None
) -> Celery:
    """A producer app configured like the workers and the exporter of the test."""
    app = Celery("producer", broker=url, set_as_current=False)
    app.conf.task_send_sent_event = True
    app.conf.broker_use_ssl = ssl
    app.conf.broker_transport_options = options or {}
    return app


def worker_env(
    ssl: dict[str, Any] | None = None, options: dict[str, Any] | None = None
) -> dict[str, str]:
    env = {}
    if ssl:
        env["CE_TEST_BROKER_USE_SSL"] = json.dumps(ssl)
    if options:
        env["CE_TEST_BROKER_TRANSPORT_OPTIONS"] = json.dumps(options)
    return env


def flags(prefix: str, options: dict[str, Any]) -> list[str]:
    """`--broker-ssl-option k=v` / `--broker-transport-option k=v` flags; dicts as JSON."""
    out = []
    for key, value in options.items():
        text = json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)
        out += [prefix, f"{key}={text}"]
    return out


def labels(name: str, hostname: str, queue: str = "celery") -> dict[str, str]:
    return {"name": name, "hostname": hostname, "queue_name": queue}


def assert_secret_absent(exporter: ExporterProcess, *secrets: str) -> None:
    """No password in the log, the landing page, the health pages or the metrics."""
    texts = {"log": exporter.log}
    for path in ("/", "/metrics", "/healthz", "/readyz"):
        texts[path] = exporter.get(path)[1].decode(errors="replace")
    for secret in secrets:
        for where, text in texts.items():
            assert secret not in text, f"password in {where}"
    assert "Traceback" not in exporter.log, exporter.log


def counts_and_queue_lengths(
    url: str,
    exporter: ExporterProcess,
    worker_hostname: str,
    app: Celery,
    tasks: int = 5,
    idle: str = "idle",
) -> None:
    """Tasks run by the real worker are counted exactly; a queue nobody consumes is measured."""
    host = worker_hostname.split("@", 1)[1]
    exporter.wait_value(
        "celery_worker_up", {"hostname": host, "worker": worker_hostname}, lambda v: v == 1
    )
    send(app, ADD, "celery", times=tasks, args=(1, 2))
    add = labels(ADD, host)
    exporter.wait_value("celery_task_succeeded_total", add, lambda v: v == tasks, timeout=40)
    samples = exporter.scrape()
    for kind in ("received", "started", "succeeded"):
        assert samples[(f"celery_task_{kind}_total", frozenset(add.items()))] == tasks, kind
    assert samples[("celery_task_runtime_count", frozenset(add.items()))] == tasks
    send(app, ADD, idle, times=3, args=(0, 0))
    exporter.wait_value("celery_queue_length", {"queue_name": idle}, lambda v: v == 3)
    assert exporter.value("celery_exporter_broker_up") == 1


# ---- Redis over TLS ---------------------------------------------------------------------------


@pytest.mark.parametrize("client_certificates", [False, True], ids=["ca", "client-cert"])
def test_redis_over_tls_counts_events_and_reads_queue_lengths(
    tmp_path: Path,
    pki: Pki,
    client_certificates: bool,
    worker_factory: WorkerFactory,
    exporter_factory: ExporterFactory,
) -> None:
    server = redis_tls_server(tmp_path / "redis", pki, PASSWORD, client_certificates).start()
    try:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0"
        ssl: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_ca_certs": str(pki.ca_cert)}
        if client_certificates:
            ssl |= {"ssl_certfile": str(pki.client_cert), "ssl_keyfile": str(pki.client_key)}
        worker = worker_factory(url, env=worker_env(ssl=ssl))
        exporter_ssl = dict(ssl, ssl_cert_reqs="CERT_REQUIRED")  # the exporter's spelling
        exporter = exporter_factory(
            url, *FAST, "--queues", "idle", *flags("--broker-ssl-option", exporter_ssl)
        )
        counts_and_queue_lengths(url, exporter, worker.hostname, app_for(url, ssl=ssl))
        assert_secret_absent(exporter, PASSWORD)
        worker.stop()  # before its server goes: a worker without one takes 15 s to stop
    finally:
        server.stop()


def test_redis_tls_with_a_wrong_ca_is_one_line_and_broker_down(
    tmp_path: Path, pki: Pki, exporter_factory: ExporterFactory
) -> None:
    server = redis_tls_server(tmp_path / "redis", pki, PASSWORD, False).start()
    try:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0"
        stranger_ca = make_pki(tmp_path / "other-pki").ca_cert
        ssl = {"ssl_cert_reqs": "CERT_REQUIRED", "ssl_ca_certs": str(stranger_ca)}
        exporter = exporter_factory(
            url, *FAST, "--queues", "idle", *flags("--broker-ssl-option", ssl)
        )
        exporter.wait_value("celery_exporter_queue_poll_success", {}, lambda v: v == 0, timeout=15)
        # Several reconnect attempts later, still one line about it.
        attempts_over = time.monotonic() + 3
        while time.monotonic() < attempts_over:
            assert exporter.value("celery_exporter_broker_up") == 0
            time.sleep(0.3)
        # One line from the event thread and at most one from the poll thread, each naming
        # the certificate failure; nothing more however often they retry.
        warnings = [line for line in exporter.log.splitlines() if " WARNING " in line]
        consumer = [line for line in warnings if "celery_exporter.consumer" in line]
        assert len(consumer) == 1, exporter.log
        assert len(warnings) - len(consumer) <= 1, exporter.log
        assert all("CERTIFICATE_VERIFY_FAILED" in line for line in warnings), exporter.log
        assert_secret_absent(exporter, PASSWORD)
    finally:
        server.stop()


# ---- a Redis database other than 0, and kombu's topic options ----------------------------------


def plain_redis(directory: Path) -> RedisNode:
    import redis

    port = free_port()
    return RedisNode(
        directory,
        f"redis-{port}",
        [f"port {port}", f"requirepass {PASSWORD}"],
        lambda: redis.Redis(port=port, password=PASSWORD, socket_timeout=2),
        port,
    ).start()


def test_redis_database_other_than_zero(
    tmp_path: Path, worker_factory: WorkerFactory, exporter_factory: ExporterFactory
) -> None:
    server = plain_redis(tmp_path / "redis")
    try:
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/5"
        worker = worker_factory(url)
        exporter = exporter_factory(url, *FAST, "--queues", "idle")
        # Same server, database 0: kombu puts the database in the event topic, so nothing
        # from database 5 may show up here.
        other_db = exporter_factory(url.replace("/5", "/0"), *FAST, "--queues", "idle")
        counts_and_queue_lengths(url, exporter, worker.hostname, app_for(url))
        assert other_db.value("celery_exporter_events_total", event="task-succeeded") is None
        assert other_db.value("celery_queue_length", queue_name="idle") == 0
        assert_secret_absent(exporter, PASSWORD)
        assert_secret_absent(other_db, PASSWORD)
        worker.stop()  # before its server goes: a worker without one takes 15 s to stop
    finally:
        server.stop()


@pytest.mark.parametrize(
    "options",
    [
        {"global_keyprefix": "tenant-a:"},
        {"fanout_patterns": False},
        {"fanout_prefix": "events."},
        {"fanout_prefix": False, "fanout_patterns": False},
    ],
    ids=["global-keyprefix", "no-patterns", "custom-prefix", "no-prefix"],
)
def test_redis_event_topic_follows_kombus_fanout_options(
    redis_url: str, options: dict[str, Any], exporter_factory: ExporterFactory
) -> None:
    """Events published by Celery's own dispatcher with these transport options arrive."""
    exporter = exporter_factory(redis_url, *FAST, *flags("--broker-transport-option", options))
    app = app_for(redis_url, options=options)
    hostname = f"probe-{uuid.uuid4().hex[:6]}@host"
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname=hostname)
        deadline = time.monotonic() + 20
        while not exporter.value("celery_exporter_events_total", event="worker-heartbeat"):
            assert time.monotonic() < deadline, exporter.log
            dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=0)
            time.sleep(0.2)
        before = exporter.value("celery_exporter_events_total", event="worker-heartbeat") or 0
        for _ in range(25):
            dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=0)
    exporter.wait_value(
        "celery_exporter_events_total", {"event": "worker-heartbeat"}, lambda v: v == before + 25
    )


def test_redis_dropping_a_slow_subscriber_is_logged_once_and_resubscribed(
    tmp_path: Path, exporter_factory: ExporterFactory
) -> None:
    """A paused exporter passes a tiny pub/sub output buffer limit: Redis closes its
    subscription and stays up. One warning names the setting; events are read again after."""
    import redis

    server = plain_redis(tmp_path / "redis")
    client = redis.Redis(port=server.port, password=PASSWORD)
    try:
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        exporter = exporter_factory(url, *FAST)
        app = app_for(url)
        beats = 0.0

        def heartbeats(count: int) -> None:
            with app.connection_for_write() as conn:
                dispatcher = app.events.Dispatcher(conn, hostname="probe@host")
                for _ in range(count):
                    dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=0)

        def counted() -> float:
            return exporter.value("celery_exporter_events_total", event="worker-heartbeat") or 0

        deadline = time.monotonic() + 20
        while not counted():  # subscribed: pub/sub keeps nothing for a late subscriber
            assert time.monotonic() < deadline, exporter.log
            heartbeats(1)
            time.sleep(0.2)
        client.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
        assert exporter.proc is not None
        exporter.proc.send_signal(signal.SIGSTOP)
        try:
            # Well past what the kernel's socket buffers absorb on loopback.
            payload = json.dumps({"body": "", "properties": {}, "pad": "x" * 4000})
            with client.pipeline(transaction=False) as pipe:
                for _ in range(8000):
                    pipe.publish("/0.celeryev/worker.heartbeat", payload)
                pipe.execute()
        finally:
            exporter.proc.send_signal(signal.SIGCONT)
        exporter.wait_value("celery_exporter_broker_reconnects_total", {}, lambda v: v == 1)
        beats = counted()
        heartbeats(10)
        exporter.wait_value(
            "celery_exporter_events_total", {"event": "worker-heartbeat"}, lambda v: v == beats + 10
        )
        warnings = [line for line in exporter.log.splitlines() if " WARNING " in line]
        assert len(warnings) == 1, exporter.log
        assert "Redis closed the event subscription" in warnings[0]
        assert "client-output-buffer-limit pubsub" in warnings[0]
        assert "probably lost" in warnings[0]
        assert exporter.value("celery_exporter_broker_up") == 1
        assert_secret_absent(exporter, PASSWORD)
    finally:
        client.close()
        server.stop()


def test_non_json_events_follow_accept_content(
    broker_url: str, exporter_factory: ExporterFactory
) -> None:
    """Pickled events are decoded only where --accept-content lists pickle; compressed JSON
    is decoded everywhere (both through kombu's own decoder, on Redis and RabbitMQ)."""
    from kombu.messaging import Producer

    pickle_ok = exporter_factory(broker_url, *FAST, "--accept-content", "json,pickle")
    json_only = exporter_factory(broker_url, *FAST)
    app = app_for(broker_url)
    beat = {"type": "worker-heartbeat", "hostname": "probe@host", "freq": 2.0}

    def count(exporter: ExporterProcess) -> float:
        return exporter.value("celery_exporter_events_total", event="worker-heartbeat") or 0

    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname="probe@host")
        producer = Producer(conn.default_channel, exchange=dispatcher.exchange)

        def publish(times: int, **options: Any) -> None:
            for _ in range(times):
                beat["timestamp"] = time.time()
                producer.publish(
                    beat, routing_key="worker.heartbeat", declare=[dispatcher.exchange], **options
                )

        deadline = time.monotonic() + 20
        while not (count(pickle_ok) and count(json_only)):
            assert time.monotonic() < deadline, json_only.log
            publish(1, serializer="json")
            time.sleep(0.2)
        before = {exporter: count(exporter) for exporter in (pickle_ok, json_only)}
        publish(3, serializer="pickle")
        publish(2, serializer="json", compression="zlib")
    pickle_ok.wait_value(
        "celery_exporter_events_total",
        {"event": "worker-heartbeat"},
        lambda v: v == before[pickle_ok] + 5,
    )
    json_only.wait_value(
        "celery_exporter_event_errors_total", {"reason": "undecodable"}, lambda v: v == 3
    )
    assert count(json_only) == before[json_only] + 2
    assert pickle_ok.value("celery_exporter_event_errors_total", reason="undecodable") is None


# ---- Redis Sentinel -------------------------------------------------------------------------


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[Sentinels]:
    setup = Sentinels.start(tmp_path / "sentinel", PASSWORD, SENTINEL_PASSWORD)
    try:
        yield setup
    finally:
        setup.stop()


def monotonic_samples(samples: Samples) -> Samples:
    return {
        key: value
        for key, value in samples.items()
        if key[0].startswith("celery_") and key[0].endswith(("_total", "_count", "_bucket"))
    }


def decreased(before: Samples, after: Samples) -> list[str]:
    return [
        f"{name}{dict(labels_)}: {value} -> {after.get((name, labels_))}"
        for (name, labels_), value in before.items()
        if after.get((name, labels_), -1.0) < value
    ]


class Load:
    """Sends tasks from a thread until stopped, ignoring the failures of a broker outage."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.sent = self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                self.app.send_task(ADD, args=(1, 1), queue="celery", retry=False)
                self.sent += 1
            except Exception:  # the master is gone for a while: that is the point
                self.failed += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_redis_sentinel_events_queue_lengths_and_a_failover_under_load(
    sentinels: Sentinels, worker_factory: WorkerFactory, exporter_factory: ExporterFactory
) -> None:
    url, options = sentinels.url, sentinels.transport_options
    assert options["master_name"] == MASTER_NAME
    worker = worker_factory(
        url, env=worker_env(options=options), extra_args=("--heartbeat-interval", "1")
    )
    exporter = exporter_factory(
        url,
        *FAST,
        "--broker-timeout",
        "1",
        "--queues",
        "idle",
        *flags("--broker-transport-option", options),
    )
    host = worker.hostname.split("@", 1)[1]
    counts_and_queue_lengths(url, exporter, worker.hostname, app_for(url, options=options))

    old_master = sentinels.master_port()
    seen_down = False
    with Load(app_for(url, options=options)) as load:
        wait_for(lambda: load.sent > 20, 20, "the load to run")
        previous = monotonic_samples(exporter.scrape())
        sentinels.master.stop()
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, f"no failover seen\n{exporter.log}"
            samples = exporter.scrape()
            current = monotonic_samples(samples)
            assert not decreased(previous, current)
            previous = current
            up = samples[("celery_exporter_broker_up", frozenset())]
            seen_down = seen_down or up == 0
            if seen_down and up == 1 and sentinels.master_port() != old_master:
                break
            time.sleep(0.1)
        sent_during = load.sent
        wait_for(lambda: load.sent > sent_during + 20, 30, "the load to reach the new master")
    assert sentinels.master_port() == sentinels.replica.port

    # The worker reconnects on its own schedule; its heartbeats say when it is back.
    beats = exporter.value("celery_exporter_events_total", event="worker-heartbeat") or 0
    exporter.wait_value(
        "celery_exporter_events_total",
        {"event": "worker-heartbeat"},
        lambda v: (v or 0) > beats + 2,
        timeout=60,
    )
    # A task name only used after the failover: its counts must be exact.
    after_app = app_for(url, options=options)
    send(after_app, "workload.sleep", "celery", times=10, args=(0,))
    sleep_labels = labels("workload.sleep", host)
    exporter.wait_value("celery_task_succeeded_total", sleep_labels, lambda v: v == 10, timeout=60)
    samples = exporter.scrape()
    for kind in ("received", "started", "succeeded"):
        assert samples[(f"celery_task_{kind}_total", frozenset(sleep_labels.items()))] == 10
    sent_labels = labels("workload.sleep", host.split(".")[0])
    sent = [
        value
        for (name, labels_), value in samples.items()
        if name == "celery_task_sent_total" and dict(labels_)["name"] == "workload.sleep"
    ]
    assert sum(sent) == 10, sent_labels
    assert not decreased(previous, monotonic_samples(samples))
    # The poller follows the new master too: the replica had the three idle messages.
    exporter.wait_value("celery_queue_length", {"queue_name": "idle"}, lambda v: v == 3)
    assert_secret_absent(exporter, PASSWORD, SENTINEL_PASSWORD)


# ---- RabbitMQ over TLS, in a vhost --------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbitmq_tls(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[RabbitMQTlsServer]:
    server = RabbitMQTlsServer.start_tls(tmp_path_factory.mktemp("rabbitmq-tls"), pki)
    try:
        server.add_vhost_user("ce-vhost", "ce-user", PASSWORD)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("tls", [True, False], ids=["amqps", "amqp"])
def test_rabbitmq_in_a_vhost_over_tls_and_plain(
    rabbitmq_tls: RabbitMQTlsServer,
    pki: Pki,
    tls: bool,
    worker_factory: WorkerFactory,
    exporter_factory: ExporterFactory,
) -> None:
    if tls:
        url = f"amqps://ce-user:{PASSWORD}@127.0.0.1:{rabbitmq_tls.tls_port}/ce-vhost"
        ssl: dict[str, Any] | None = {"ca_certs": str(pki.ca_cert), "cert_reqs": 2}
    else:
        url = f"amqp://ce-user:{PASSWORD}@127.0.0.1:{rabbitmq_tls.port}/ce-vhost"
        ssl = None
    worker = worker_factory(url, env=worker_env(ssl=ssl))
    ssl_flags = flags("--broker-ssl-option", dict(ssl, cert_reqs="CERT_REQUIRED")) if ssl else []
    idle = f"idle-{uuid.uuid4().hex[:6]}"  # the vhost outlives this test
    exporter = exporter_factory(url, *FAST, "--queues", idle, *ssl_flags)
    counts_and_queue_lengths(url, exporter, worker.hostname, app_for(url, ssl=ssl), idle=idle)
    assert_secret_absent(exporter, PASSWORD)
