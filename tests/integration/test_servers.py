"""The harness itself: servers start, answer and stop; a worker runs a task and sends events."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.support.servers import (
    RabbitMQServer,
    RedisServer,
    ServerError,
    WorkerFactory,
    child_pids,
    pid_alive,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_redis_starts_answers_and_stops(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path)
    try:
        assert server.ping()
        assert server.is_running()
        pid = server.pid
        server.restart()
        assert server.ping()
        assert server.pid != pid
        assert not pid_alive(pid)
    finally:
        server.stop()
    assert not pid_alive(server.pid)
    assert not server.ping()


def test_rabbitmq_answers(rabbitmq_server: RabbitMQServer) -> None:
    assert rabbitmq_server.ping()
    assert rabbitmq_server.is_running()
    assert rabbitmq_server.epmd is not None and pid_alive(rabbitmq_server.epmd.pid)
    assert "rabbit" in rabbitmq_server.ctl("status")


def test_rabbitmq_restarts_then_stop_ends_node_and_epmd(tmp_path: Path) -> None:
    server = RabbitMQServer.start(tmp_path)
    try:
        epmd_pid = server.epmd.pid if server.epmd else 0
        assert pid_alive(epmd_pid)
        first = server.pid
        server.kill()
        assert not server.ping()
        server.restart()
        assert server.ping()
        assert server.pid != first
    finally:
        server.stop()
    assert not pid_alive(server.pid)
    assert not pid_alive(epmd_pid)
    assert not server.ping()


def _capture_events(app: Celery, broker_url: str) -> tuple[list[dict[str, Any]], threading.Event]:
    """Start a receiver thread; returns the list it fills and an event set once it listens."""
    seen: list[dict[str, Any]] = []
    listening = threading.Event()

    def run() -> None:
        with app.connection_for_read(broker_url) as conn:
            receiver = app.events.Receiver(conn, handlers={"*": seen.append})
            listening.set()
            for _ in receiver.itercapture(limit=None, timeout=20, wakeup=False):
                if any(e["type"] == "task-succeeded" for e in seen):
                    return

    threading.Thread(target=run, daemon=True).start()
    return seen, listening


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_worker_runs_task_and_sends_events(
    broker: str, request: pytest.FixtureRequest, worker_factory: WorkerFactory
) -> None:
    server = request.getfixturevalue(f"{broker}_server")
    broker_url: str = server.url
    worker = worker_factory(broker_url, queues=["celery"])
    app = Celery("observer", broker=broker_url)
    seen, listening = _capture_events(app, broker_url)
    assert listening.wait(10)
    sender = Celery("sender", broker=broker_url)
    sender.conf.task_send_sent_event = True
    # Redis pub/sub keeps nothing for late subscribers: resend until the receiver hears one.
    wait_for(
        lambda: (sender.send_task("workload.add", (2, 3)) is not None) and _wait_succeeded(seen),
        30.0,
        "a task-succeeded event",
        step=0.0,
    )
    succeeded = [e for e in seen if e["type"] == "task-succeeded"]
    assert succeeded[0]["hostname"] == worker.hostname
    assert succeeded[0]["result"] == "5"
    pool = child_pids(worker.pid)
    assert pool, "a prefork worker has pool processes"
    worker.kill()
    assert not worker.is_running()
    assert not any(pid_alive(pid) for pid in pool)
    sender.close()
    app.close()


def _wait_succeeded(seen: list[dict[str, Any]]) -> bool:
    try:
        wait_for(lambda: any(e["type"] == "task-succeeded" for e in seen), 3.0, "succeeded")
    except ServerError:
        return False
    return True
