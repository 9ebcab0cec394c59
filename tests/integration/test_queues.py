"""Queue and worker-pool metrics against real Redis and RabbitMQ servers and real workers.

Values are read back exactly from a private CollectorRegistry. Polls are run synchronously
(`poll_queues()`, `inspect_workers()`) so a test never waits on the poll interval.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from celery_exporter.poll.amqp_queues import AmqpQueueProbe
from celery_exporter.poll.redis_queues import RedisQueueProbe
from tests.support.polling import Polled, celery_app, publish
from tests.support.servers import (
    REPO_ROOT,
    RabbitMQServer,
    RedisServer,
    ServerError,
    WorkerFactory,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.integration


# --- Redis ---


def test_redis_priorities_are_all_counted_and_an_empty_queue_reads_zero(
    redis_url: str, polled: list[Polled]
) -> None:
    p = Polled(redis_url, queues=("prio", "empty"))
    polled.append(p)
    for priority in (0, 5, 9, 9):
        publish(p.app, "prio", priority=priority)
    client = redis.Redis.from_url(redis_url)
    assert len([k for k in client.keys("prio*")]) > 1  # really spread over sub-lists
    p.poller.poll_queues()
    assert p.length("prio") == 4
    assert p.length("empty") == 0
    assert p.value("exporter_queue_poll_success") == 1
    assert p.value("queue_unacked_messages", queue_name="prio") == 0


def test_redis_global_keyprefix_and_custom_steps(redis_url: str, polled: list[Polled]) -> None:
    p = Polled(
        redis_url, queues=("pq",), global_keyprefix="tenant:", priority_steps=list(range(10))
    )
    polled.append(p)
    for priority in (0, 1, 2, 7):
        publish(p.app, "pq", priority=priority)
    client = redis.Redis.from_url(redis_url)
    assert client.exists("tenant:pq") and not client.exists("pq")
    p.poller.poll_queues()
    assert p.length("pq") == 4


def test_redis_queue_found_only_through_a_running_worker(
    redis_url: str, worker_factory: WorkerFactory, polled: list[Polled], unique_name: str
) -> None:
    queue = f"wq-{unique_name}"
    worker = worker_factory(redis_url, queues=[queue, "celery"], concurrency=2)
    p = Polled(redis_url)
    polled.append(p)
    p.poller.inspect_workers()
    p.poller.poll_queues()
    assert p.poller.worker_queues()[worker.hostname] == (queue, "celery")
    assert p.length(queue) == 0
    assert p.value("active_worker_count", queue_name=queue) == 1
    assert p.value("active_process_count", queue_name=queue) == 2
    assert p.value("active_consumer_count", queue_name=queue) == 1
    host = worker.hostname.split("@", 1)[1]
    labels = {"hostname": host, "worker": worker.hostname}
    assert p.value("worker_concurrency", **labels) == 2
    assert (p.value("worker_max_rss_bytes", **labels) or 0) > 1024 * 1024
    assert (p.value("worker_cpu_seconds_total", mode="user", **labels) or 0) > 0
    assert p.value("exporter_inspect_success") == 1


def test_redis_unacked_counts_prefetched_messages(
    redis_url: str, worker_factory: WorkerFactory, polled: list[Polled], unique_name: str
) -> None:
    queue = f"slow-{unique_name}"
    # One process, prefetch 1: one task runs (acked on start), one waits unacked, two queued.
    worker = worker_factory(
        redis_url, queues=[queue], concurrency=1, env={"CE_TEST_PREFETCH_MULTIPLIER": "1"}
    )
    p = Polled(redis_url, queues=(queue,))
    polled.append(p)
    for _ in range(4):
        p.app.send_task("workload.sleep", (4,), queue=queue)

    def settled() -> bool:
        p.poller.poll_queues()
        return p.value("queue_unacked_messages", queue_name=queue) == 1 and p.length(queue) == 2

    wait_for(settled, 10.0, "one unacked and two ready messages", step=0.1)
    worker.kill()  # a warm shutdown would wait for the running task


def test_redis_outage_keeps_scrapes_fast_and_says_so(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path)
    p = Polled(server.url, queues=("q",))
    try:
        publish(p.app, "q", 2)
        p.poller.poll_queues()
        assert p.length("q") == 2
        last_success = p.value("exporter_queue_poll_last_success_timestamp_seconds")
        server.stop()
        p.poller.poll_queues()
        started = time.perf_counter()
        assert p.value("exporter_queue_poll_success") == 0
        elapsed = time.perf_counter() - started
        assert elapsed < 0.1
        assert p.value("exporter_queue_poll_last_success_timestamp_seconds") == last_success
        assert p.length("q") == 2  # last good value, within two poll intervals
        server.restart()
        p.poller.poll_queues()
        assert p.value("exporter_queue_poll_success") == 1
        assert p.length("q") == 0  # a restarted Redis without persistence is empty
    finally:
        p.close()
        server.stop()


def test_redis_binding_discovery_finds_declared_queues(
    redis_url: str, polled: list[Polled], unique_name: str
) -> None:
    queue = f"bound-{unique_name}"
    p = Polled(redis_url)
    polled.append(p)
    p.poller.probe = RedisQueueProbe(p.app, 2.0, discover_bindings=True)
    publish(p.app, queue, 3)
    p.poller.poll_queues()
    assert queue in p.poller.known_queues()
    assert not any(
        q.endswith("pidbox") or q.startswith("celeryev") for q in p.poller.known_queues()
    )
    assert p.length(queue) == 3


# --- RabbitMQ ---


def test_rabbitmq_ready_messages_and_missing_queue(
    rabbitmq_server: RabbitMQServer, polled: list[Polled], unique_name: str
) -> None:
    a, missing, b = f"a-{unique_name}", f"missing-{unique_name}", f"b-{unique_name}"
    p = Polled(rabbitmq_server.url, queues=(a, missing, b))
    polled.append(p)
    assert isinstance(p.poller.probe, AmqpQueueProbe)
    publish(p.app, a, 3)
    publish(p.app, b, 2)
    p.poller.poll_queues()
    assert p.length(a) == 3
    assert p.length(missing) == 0
    assert p.length(b) == 2
    assert p.value("active_consumer_count", queue_name=a) == 0
    assert p.value("exporter_queue_poll_success") == 1
    # RabbitMQ's passive declare cannot tell unacked messages: no made-up zeros.
    assert p.value("queue_unacked_messages", queue_name=a) is None
    p.poller.poll_queues()  # the connection survives the 404s and serves the next poll
    assert p.length(a) == 3


def test_rabbitmq_consumer_count(
    rabbitmq_server: RabbitMQServer,
    worker_factory: WorkerFactory,
    polled: list[Polled],
    unique_name: str,
) -> None:
    queue = f"c-{unique_name}"
    worker_factory(rabbitmq_server.url, queues=[queue], concurrency=1)
    p = Polled(rabbitmq_server.url, queues=(queue,))
    polled.append(p)
    p.poller.poll_queues()
    assert p.value("active_consumer_count", queue_name=queue) == 1
    p.poller.inspect_workers()
    assert p.value("active_worker_count", queue_name=queue) == 1
    assert p.value("active_process_count", queue_name=queue) == 1


# --- the real exporter over HTTP ---


def test_exporter_serves_queue_length_over_http(
    redis_url: str, tmp_path: Path, unique_name: str
) -> None:
    queue = f"http-{unique_name}"
    publish(celery_app(redis_url), queue, 5, priority=9)
    publish(celery_app(redis_url), queue, 1)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    log = (tmp_path / "exporter.log").open("wb")
    exporter = subprocess.Popen(
        [
            sys.executable, "-m", "celery_exporter", "--broker-url", redis_url,
            "--port", str(port), "--host", "127.0.0.1", "-Q", queue, "--inspect-interval", "0",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
    )  # fmt: skip
    line = f'celery_queue_length{{queue_name="{queue}"}} 6.0'

    def served() -> bool:
        if exporter.poll() is not None:
            raise ServerError((tmp_path / "exporter.log").read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                return line in resp.read().decode()
        except OSError:
            return False

    try:
        wait_for(served, 20.0, f"{line!r} on /metrics", step=0.2)
    finally:
        exporter.terminate()
        try:
            exporter.wait(10)
        except subprocess.TimeoutExpired:
            exporter.kill()
            exporter.wait(5)
        log.close()
