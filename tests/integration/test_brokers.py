"""Redis setups users run, on real servers with real workers: over TLS (a CA, a client
certificate; a wrong CA, a hostname mismatch and a rejected client certificate, each one log
line), a wrong password until it is right, a database other than 0, kombu's fanout and
key-prefix options, and a subscriber Redis drops for falling behind. The broker password
appears nowhere.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker_checks import (
    FAST,
    PASSWORD,
    RETRYING,
    app_for,
    assert_back_in_one_line,
    assert_one_outage_line,
    assert_secret_absent,
    counts_and_queue_lengths,
    flags,
    plain_redis,
    worker_env,
)
from tests.support.brokers import redis_tls_server
from tests.support.certs import Pki, make_pki
from tests.support.exporter_process import ExporterFactory
from tests.support.servers import WorkerFactory

pytestmark = pytest.mark.integration


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


@pytest.mark.parametrize("fault", ["wrong-ca", "hostname-mismatch", "rejected-client-cert"])
def test_a_broken_tls_setup_is_one_line_and_broker_down(
    tmp_path: Path, pki: Pki, fault: str, exporter_factory: ExporterFactory
) -> None:
    """A CA that did not sign the server's certificate; a certificate for other addresses
    than the one in the URL; a client certificate the server does not trust. Events, queue
    poll and inspect all fail and retry: one line says why."""
    client_certificates = fault == "rejected-client-cert"
    # 127.0.0.2 is loopback too, and not among the certificate's addresses
    bind = ["bind 127.0.0.1 127.0.0.2"]
    server = redis_tls_server(tmp_path / "redis", pki, PASSWORD, client_certificates, bind).start()
    try:
        host = "127.0.0.2" if fault == "hostname-mismatch" else "127.0.0.1"
        url = f"rediss://:{PASSWORD}@{host}:{server.port}/0"
        ssl: dict[str, Any] = {"ssl_cert_reqs": "CERT_REQUIRED", "ssl_ca_certs": str(pki.ca_cert)}
        if fault == "wrong-ca":
            ssl["ssl_ca_certs"] = str(make_pki(tmp_path / "other-pki").ca_cert)
            words = [
                "cannot connect to broker rediss://:***@",
                "TLS certificate verify failed: the broker's certificate is not signed by the CA "
                f"in --broker-ssl-option ssl_ca_certs={ssl['ssl_ca_certs']}",
            ]
        elif fault == "hostname-mismatch":
            ssl["ssl_check_hostname"] = True
            words = [
                "TLS hostname mismatch: the broker's certificate is not valid for the host in "
                "--broker-url (",
                "127.0.0.2",
            ]
        else:
            ssl |= {"ssl_certfile": str(pki.stranger_cert), "ssl_keyfile": str(pki.stranger_key)}
            # TLS 1.3 tells the client after the handshake: as an alert, or as a hang-up
            words = ["client certificate", f"--broker-ssl-option ssl_certfile={pki.stranger_cert}"]
        exporter = exporter_factory(
            url, *RETRYING, "--queues", "idle", *flags("--broker-ssl-option", ssl)
        )
        assert_one_outage_line(exporter, words, [PASSWORD])
    finally:
        server.stop()


def test_a_wrong_redis_password_is_one_line_until_it_is_right(
    tmp_path: Path, exporter_factory: ExporterFactory
) -> None:
    """The exporter's password is refused; once the server takes it, one line says so."""
    import redis

    server = plain_redis(tmp_path / "redis")
    client = redis.Redis(port=server.port, password=PASSWORD)
    try:
        wrong = "Wr0ng-broker-pw"
        url = f"redis://:{wrong}@127.0.0.1:{server.port}/0"
        exporter = exporter_factory(url, *RETRYING, "--queues", "idle")
        words = [
            f"cannot connect to broker redis://:***@127.0.0.1:{server.port}/0: ",
            "authentication failed: the broker refused the user and password in --broker-url",
        ]
        assert_one_outage_line(exporter, words, [PASSWORD, wrong])
        client.config_set("requirepass", wrong)
        assert_back_in_one_line(exporter, url)
        assert_secret_absent(exporter, PASSWORD, wrong)
    finally:
        client.close()
        server.stop()


# ---- a Redis database other than 0, and kombu's topic options ----------------------------------


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
