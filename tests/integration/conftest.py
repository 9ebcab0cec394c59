"""Fixtures for integration tests: the real exporter as a subprocess, and a producer app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import Pki, make_pki
from tests.support.exporter_process import ExporterFactory, ExporterProcess
from tests.support.polling import Polled


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


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with server and client certificates, made at test time (tests/support/certs.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def polled() -> Iterator[list[Polled]]:
    made: list[Polled] = []
    yield made
    for p in made:
        p.close()
