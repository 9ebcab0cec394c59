"""What every broker setup in test_brokers*.py must show, and the pieces those tests share:
real tasks counted exactly, a queue nobody consumes measured, no password anywhere, a broken
setup told in one log line; producer apps, worker environments and exporter flags for TLS and
Sentinel options; a Redis with a password.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from celery import Celery

from celery_exporter.config import redact_url
from tests.support.brokers import RedisNode
from tests.support.exporter_process import ExporterProcess
from tests.support.producer import send
from tests.support.servers import free_port, wait_for

FAST = ("--retry-interval", "0.2", "--queue-poll-interval", "0.5", "--inspect-interval", "0")
# Every thread that talks to the broker retries fast, and each retry shows at DEBUG: a test
# waits for retries by reading them instead of sleeping.
RETRYING = (
    "--retry-interval", "0.2", "--queue-poll-interval", "0.3",
    "--inspect-interval", "0.3", "--inspect-timeout", "0.5", "--log-level", "DEBUG",
)  # fmt: skip
THREADS = ("events", "queue poll", "worker inspect")  # as they report to faults/outages.py
PASSWORD = "s3cret-Broker-pw"  # never printed by the exporter
SENTINEL_PASSWORD = "s3cret-Sentinel-pw"
ADD = "workload.add"


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


def log_lines(exporter: ExporterProcess, level: str) -> list[str]:
    return [line for line in exporter.log.splitlines() if f" {level} " in line]


def retries(exporter: ExporterProcess, thread: str) -> int:
    """How often `thread` has reported a problem already logged (the DEBUG repeats)."""
    return exporter.log.count(
        f"DEBUG celery_exporter.faults.outages: {thread}: broker still failing"
    )


def assert_one_outage_line(
    exporter: ExporterProcess, words: list[str], secrets: list[str], times: int = 3
) -> str:
    """Once every thread has retried `times` times: exactly one WARNING, naming `words`,
    no traceback, no password, and the broker reads down. Returns the line."""
    wait_for(
        lambda: all(retries(exporter, thread) >= times for thread in THREADS),
        40,
        f"every thread to retry {times} times\n{exporter.log}",
    )
    warnings = log_lines(exporter, "WARNING")
    assert len(warnings) == 1, exporter.log
    for word in words:
        assert word in warnings[0], warnings[0]
    assert exporter.value("celery_exporter_broker_up") == 0
    assert exporter.value("celery_exporter_queue_poll_success") == 0
    assert_secret_absent(exporter, *secrets)  # and no traceback, even at DEBUG
    return warnings[0]


def assert_back_in_one_line(exporter: ExporterProcess, url: str) -> None:
    """After a broken setup was fixed: events flow and the poll works again, one INFO line
    said so, and no WARNING came after the first."""
    exporter.wait_value("celery_exporter_broker_up", {}, lambda v: v == 1, timeout=40)
    exporter.wait_value("celery_exporter_queue_poll_success", {}, lambda v: v == 1)
    back = f"connected to broker {redact_url(url)} after "
    wait_for(lambda: back in exporter.log, 20, f"{back!r}\n{exporter.log}")
    infos = [line for line in log_lines(exporter, "INFO") if "connected to broker" in line]
    assert len(infos) == 1, exporter.log
    assert infos[0].endswith("s of failures"), infos[0]
    assert len(log_lines(exporter, "WARNING")) == 1, exporter.log
