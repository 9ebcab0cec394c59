"""RabbitMQ over TLS in a vhost of its own, on a real node with real workers; a wrong
password or a missing vhost told in one log line until fixed, and a wrong CA in one line;
non-JSON events (pickle, compressed JSON) on Redis and RabbitMQ under --accept-content.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
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
    worker_env,
)
from tests.support.brokers import RabbitMQTlsServer
from tests.support.certs import Pki, make_pki
from tests.support.exporter_process import ExporterFactory, ExporterProcess
from tests.support.servers import WorkerFactory

pytestmark = pytest.mark.integration


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


@pytest.mark.parametrize("fault", ["wrong-password", "missing-vhost"])
def test_wrong_rabbitmq_password_or_vhost_is_one_line_until_fixed(
    rabbitmq_tls: RabbitMQTlsServer, fault: str, exporter_factory: ExporterFactory
) -> None:
    """The node has another password for the user, or lacks the vhost: one line naming it;
    once the operator fixes the node, one line says the broker is back."""
    tag = uuid.uuid4().hex[:6]
    if fault == "wrong-password":
        user, vhost = f"user-{tag}", "ce-vhost"
        rabbitmq_tls.ctl("add_user", user, f"other-{tag}")
        rabbitmq_tls.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        words = ["authentication failed: the broker refused the user and password in --broker-url"]
    else:
        user, vhost = "ce-user", f"vhost-{tag}"
        words = [f"RabbitMQ has no vhost '{vhost}': check the path at the end of --broker-url"]
    url = f"amqp://{user}:{PASSWORD}@127.0.0.1:{rabbitmq_tls.port}/{vhost}"
    exporter = exporter_factory(url, *RETRYING, "--queues", "idle")
    line = assert_one_outage_line(exporter, words, [PASSWORD])
    assert f"cannot connect to broker amqp://{user}:***@127.0.0.1:{rabbitmq_tls.port}/" in line
    if fault == "wrong-password":
        rabbitmq_tls.ctl("change_password", user, PASSWORD)
    else:
        # Between the two the user may not use the vhost yet: the same problem, no new line.
        rabbitmq_tls.ctl("add_vhost", vhost)
        rabbitmq_tls.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    assert_back_in_one_line(exporter, url)
    assert_secret_absent(exporter, PASSWORD)


def test_rabbitmq_tls_with_a_wrong_ca_is_one_line(
    rabbitmq_tls: RabbitMQTlsServer,
    tmp_path: Path,
    exporter_factory: ExporterFactory,
) -> None:
    stranger_ca = make_pki(tmp_path / "other-pki").ca_cert
    url = f"amqps://ce-user:{PASSWORD}@127.0.0.1:{rabbitmq_tls.tls_port}/ce-vhost"
    ssl = {"ca_certs": str(stranger_ca), "cert_reqs": "CERT_REQUIRED"}
    exporter = exporter_factory(
        url, *RETRYING, "--queues", "idle", *flags("--broker-ssl-option", ssl)
    )
    words = [
        f"cannot connect to broker amqps://ce-user:***@127.0.0.1:{rabbitmq_tls.tls_port}/",
        "TLS certificate verify failed: the broker's certificate is not signed by the CA in "
        f"--broker-ssl-option ca_certs={stranger_ca}",
    ]
    assert_one_outage_line(exporter, words, [PASSWORD])


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
