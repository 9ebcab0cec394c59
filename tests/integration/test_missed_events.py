"""Missed task events and held tasks on real brokers with a real prefork worker.

A clean run of thousands of tasks reads 0 missed. Then Redis drops the exporter's pub/sub
connection (a tiny `client-output-buffer-limit pubsub`, the exporter paused with SIGSTOP while
more than the kernel's socket buffers can absorb is published), a burst of tasks runs while it is
gone, and afterwards the missed counter equals the tasks the worker started minus the
task-started events the exporter counted. The same on RabbitMQ, where the burst's events wait
in the paused exporter's event queue until its message TTL (event_queue_ttl, 5 s) drops them.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from celery.events.event import get_exchange
from kombu.connection import Connection
from kombu.messaging import Producer

from tests.support.exporter_process import ExporterFactory, ExporterProcess
from tests.support.producer import producer, send
from tests.support.servers import RabbitMQServer, RedisServer, WorkerFactory, wait_for

pytestmark = pytest.mark.integration
HOST = socket.gethostname()
MISSED = "celery_exporter_task_events_missed_total"
PROCESSED = "celery_worker_tasks_processed_total"


def started_counted(exporter: ExporterProcess) -> float:
    return sum(
        value
        for (name, labels), value in exporter.scrape().items()
        if name == "celery_task_started_total" and ("hostname", HOST) in labels
    )


def heartbeats(exporter: ExporterProcess) -> float:
    return exporter.value("celery_exporter_events_total", event="worker-heartbeat") or 0.0


def wait_heartbeats(exporter: ExporterProcess, n: int, timeout: float = 60.0) -> None:
    """Wait for n more worker heartbeats: with 2 s between them, 7 pass the 10 s grace and the
    confirming checkpoint."""
    target = heartbeats(exporter) + n
    exporter.wait_value(
        "celery_exporter_events_total",
        {"event": "worker-heartbeat"},
        lambda v: v is not None and v >= target,
        timeout=timeout,
    )


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    wait_for(check, timeout, what, step=0.25)


def assert_burst_counted_missed(
    exporter: ExporterProcess, labels: dict[str, str], warmup: int, burst: int
) -> None:
    """The worker started warmup + burst tasks; the exporter saw the warm-up's task-started
    events only. Once reconciled, missed is exactly the burst and stays so (settled)."""
    total = warmup + burst
    exporter.wait_value(PROCESSED, labels, lambda v: v == total, timeout=60)

    def reconciled() -> bool:
        missed = exporter.value(MISSED, **labels)
        return missed is not None and missed > 0 and missed == total - started_counted(exporter)

    wait_until(reconciled, 60, "missed == started by the worker - started events counted")
    assert exporter.value(MISSED, **labels) == burst
    assert started_counted(exporter) == warmup
    wait_heartbeats(exporter, 3)
    assert exporter.value(MISSED, **labels) == burst  # settled: no more, no less


def test_a_clean_run_of_thousands_of_tasks_reads_zero_missed(
    redis_url: str,
    worker_factory: WorkerFactory,
    exporter_factory: ExporterFactory,
    unique_name: str,
) -> None:
    queue = f"clean-{unique_name}"
    exporter = exporter_factory(redis_url, "--inspect-interval", "0")
    worker = worker_factory(redis_url, queues=(queue,), concurrency=2)
    labels = {"hostname": HOST, "worker": worker.hostname}
    exporter.wait_value("celery_worker_up", labels, lambda v: v == 1)
    tasks = 3000
    send(producer(redis_url, sent_events=False), "workload.add", queue, times=tasks, args=(1, 2))
    exporter.wait_value(PROCESSED, labels, lambda v: v == tasks, timeout=120)
    wait_until(lambda: started_counted(exporter) == tasks, 60, "every task-started counted")
    wait_heartbeats(exporter, 7)
    assert exporter.value(MISSED, **labels) == 0
    assert exporter.value("celery_worker_tasks_prefetched", **labels) == 0
    assert exporter.value("celery_worker_tasks_scheduled", **labels) == 0


def publish_filler(broker_url: str, megabytes: int) -> None:
    """Event messages of a type the exporter ignores, 64 KiB each, on Celery's event exchange."""
    pad = "x" * 65536
    with Connection(broker_url) as conn:
        exchange = get_exchange(conn)
        channel = conn.default_channel
        exchange(channel).declare()
        publisher = Producer(channel, exchange=exchange, serializer="json", auto_declare=False)
        for _ in range(megabytes * 16):
            body = {"type": "test-filler", "hostname": "filler@test", "timestamp": time.time()}
            publisher.publish({**body, "pad": pad}, routing_key="test.filler", delivery_mode=1)


def pubsub_clients(client: redis.Redis[bytes]) -> int:
    return len(client.client_list(_type="pubsub"))


def test_events_lost_while_redis_dropped_the_exporter_are_counted_missed(
    tmp_path: Path,
    worker_factory: WorkerFactory,
    exporter_factory: ExporterFactory,
    unique_name: str,
) -> None:
    server = RedisServer.start(tmp_path / "redis")
    client = redis.Redis(port=server.port)
    try:
        client.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
        url, queue = server.url, f"burst-{unique_name}"
        exporter = exporter_factory(url, "--inspect-interval", "0", "--retry-interval", "0.5")
        worker = worker_factory(url, queues=(queue,), concurrency=2)
        labels = {"hostname": HOST, "worker": worker.hostname}
        exporter.wait_value("celery_worker_up", labels, lambda v: v == 1)
        app = producer(url, sent_events=False)

        warmup = 200
        send(app, "workload.add", queue, times=warmup, args=(1, 2))
        wait_until(lambda: started_counted(exporter) == warmup, 60, "warm-up task-started")
        wait_heartbeats(exporter, 2)
        assert exporter.value(MISSED, **labels) == 0

        subscribers = pubsub_clients(client)
        assert exporter.proc is not None
        os.kill(exporter.proc.pid, signal.SIGSTOP)
        try:
            publish_filler(url, megabytes=24)
            wait_until(
                lambda: pubsub_clients(client) < subscribers, 30, "Redis to drop the exporter"
            )
            burst = 1500
            send(app, "workload.add", queue, times=burst, args=(1, 2))
            # Tasks are acknowledged when they start: an empty queue and unacked hash mean
            # the worker has started (and counted in `processed`) every one of them.
            wait_until(
                lambda: client.llen(queue) == 0 and client.hlen("unacked") == 0,
                120,
                "the worker to start the burst",
            )
        finally:
            os.kill(exporter.proc.pid, signal.SIGCONT)

        exporter.wait_value(
            "celery_exporter_broker_reconnects_total", {}, lambda v: (v or 0) >= 1, timeout=60
        )
        # Every task-started of the burst went out while the exporter was disconnected.
        assert_burst_counted_missed(exporter, labels, warmup, burst)
    finally:
        client.close()
        server.stop()


def test_prefetched_and_scheduled_tasks_of_a_real_worker(
    redis_url: str,
    worker_factory: WorkerFactory,
    exporter_factory: ExporterFactory,
    unique_name: str,
) -> None:
    queue = f"held-{unique_name}"
    exporter = exporter_factory(redis_url, "--inspect-interval", "0")
    worker = worker_factory(redis_url, queues=(queue,), concurrency=1)
    labels = {"hostname": HOST, "worker": worker.hostname}
    exporter.wait_value("celery_worker_up", labels, lambda v: v == 1)
    app = producer(redis_url)
    app.send_task("workload.add", args=(1, 2), queue=queue, countdown=600)
    send(app, "workload.sleep", queue, args=(4,))
    exporter.wait_value("celery_worker_tasks_scheduled", labels, lambda v: v == 1)
    exporter.wait_value("celery_worker_tasks_active", labels, lambda v: v == 1)
    send(app, "workload.add", queue, times=2, args=(1, 2))  # wait behind the sleeping task
    exporter.wait_value("celery_worker_tasks_prefetched", labels, lambda v: v == 2)
    exporter.wait_value("celery_worker_tasks_prefetched", labels, lambda v: v == 0, timeout=30)
    assert exporter.value("celery_worker_tasks_scheduled", **labels) == 1
    worker.stop()  # a clean shutdown: the ETA task goes back to the broker
    exporter.wait_value("celery_worker_tasks_scheduled", labels, lambda v: not v, timeout=30)


def event_messages_waiting(server: RabbitMQServer) -> int:
    """Ready messages in the event queues (the paused exporter's), from rabbitmqctl."""
    rows = server.ctl("list_queues", "-q", "--no-table-headers", "name", "messages_ready")
    return sum(int(row.split()[1]) for row in rows.splitlines() if row.startswith("celeryev."))


def test_events_expired_by_the_rabbitmq_event_ttl_are_counted_missed(
    rabbitmq_server: RabbitMQServer,
    worker_factory: WorkerFactory,
    exporter_factory: ExporterFactory,
    unique_name: str,
) -> None:
    # The exporter's event queue drops messages older than Celery's event_queue_ttl (5 s).
    # Paused, its socket buffers full of filler, the burst's events wait in the queue and expire.
    url, queue = rabbitmq_server.url, f"ttl-{unique_name}"
    exporter = exporter_factory(url, "--inspect-interval", "0")
    worker = worker_factory(url, queues=(queue,), concurrency=2)
    labels = {"hostname": HOST, "worker": worker.hostname}
    exporter.wait_value("celery_worker_up", labels, lambda v: v == 1)
    app = producer(url, sent_events=False)
    warmup, burst = 100, 1000
    send(app, "workload.add", queue, times=warmup, args=(1, 2))
    wait_until(lambda: started_counted(exporter) == warmup, 60, "warm-up task-started")
    wait_heartbeats(exporter, 2)

    def succeeded_in_log() -> int:
        return worker.log().count("] succeeded in ")

    assert exporter.proc is not None
    os.kill(exporter.proc.pid, signal.SIGSTOP)
    try:
        publish_filler(url, megabytes=24)
        send(app, "workload.add", queue, times=burst, args=(1, 2))
        wait_until(lambda: succeeded_in_log() >= warmup + burst, 120, "the burst to run")
        wait_until(
            lambda: event_messages_waiting(rabbitmq_server) == 0, 60, "the event TTL to expire"
        )
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)

    # Every task-started of the burst waited behind the filler and expired.
    assert_burst_counted_missed(exporter, labels, warmup, burst)
