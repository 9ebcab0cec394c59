"""Fixtures for integration tests: the real exporter as a subprocess, and a producer app."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from celery import Celery

from tests.certs import Pki, make_pki
from tests.exporter import ExporterProcess

from .polling import Polled

ExporterFactory = Callable[..., ExporterProcess]


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator[ExporterFactory]:
    """Start real exporters: `exporter_factory(broker_url, *flags)`; all stopped at teardown."""
    started: list[ExporterProcess] = []

    def start(broker_url: str, *args: str, wait: bool = True) -> ExporterProcess:
        exporter = ExporterProcess(broker_url, tmp_path / "exporter", args)
        started.append(exporter)
        return exporter.start(wait=wait)

    try:
        yield start
    finally:
        for exporter in started:
            exporter.stop()


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """The same test on a real Redis and on a real RabbitMQ."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return str(request.getfixturevalue("rabbitmq_server").url)


def producer(broker_url: str, sent_events: bool = True) -> Celery:
    """A client app that publishes tasks by name, as a web process would."""
    app = Celery("producer", broker=broker_url, set_as_current=False)
    app.conf.task_send_sent_event = sent_events
    return app


def send(app: Celery, name: str, queue: str, times: int = 1, args: Sequence[object] = ()) -> None:
    with app.producer_or_acquire() as publisher:
        for _ in range(times):
            app.send_task(name, args=tuple(args), queue=queue, producer=publisher)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with server and client certificates, made at test time (tests/certs.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def polled() -> Iterator[list[Polled]]:
    made: list[Polled] = []
    yield made
    for p in made:
        p.close()
