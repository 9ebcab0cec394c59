"""Shared fixtures: real Redis and RabbitMQ servers (session-scoped, started on first use) and a
factory for real Celery workers that always stops them at teardown.

Each test that uses a server should also flush what it created (or use unique queue names),
since the servers live for the whole session.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.servers import CeleryWorker, RabbitMQServer, RedisServer, WorkerFactory


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    server = RabbitMQServer.start(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session Redis, emptied before the test so counts start at zero."""
    import redis

    client = redis.Redis(port=redis_server.port)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server.url


@pytest.fixture
def unique_name() -> str:
    """A short unique token for queue names on a shared (session) broker."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start real workers: `worker_factory(broker_url, queues=..., hostname=...)`.

    Returns the worker once it logged "ready."; every worker is stopped at teardown.
    """
    workers: list[CeleryWorker] = []

    def start(
        broker_url: str,
        *,
        queues: Sequence[str] = ("celery",),
        concurrency: int = 1,
        hostname: str | None = None,
        events: bool = True,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        wait: bool = True,
        timeout: float = 45.0,
    ) -> CeleryWorker:
        name = hostname or f"w{len(workers) + 1}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        worker = CeleryWorker(
            broker_url,
            tmp_path / "workers",
            queues=queues,
            concurrency=concurrency,
            hostname=name,
            events=events,
            extra_args=extra_args,
            env=env,
        )
        workers.append(worker)
        worker.start()
        if wait:
            worker.wait_ready(timeout)
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop()
