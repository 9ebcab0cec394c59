"""Queue-poll helpers of the integration tests: a Celery app built as the exporter builds it,
a poller on it with its own registry (`Polled`; the `polled` fixture in conftest.py closes
them), and tasks published to a queue without a worker to take them."""

from __future__ import annotations

from typing import Any

from celery import Celery
from prometheus_client.registry import CollectorRegistry

from celery_exporter.config import Config
from celery_exporter.exposition.catalogue import FamilyFactory
from celery_exporter.exposition.poll_collector import PollCollector
from celery_exporter.poll.poller import QueuePoller


def celery_app(url: str, **transport_options: Any) -> Celery:
    """Built the way the exporter builds its app from Config."""
    app = Celery("probe-test", set_as_current=False)
    app.conf.update(
        broker_url=url,
        broker_transport_options=transport_options,
        broker_connection_timeout=2.0,
    )
    return app


class Polled:
    """A poller on `url` plus a private registry with its collector."""

    def __init__(self, url: str, queues: tuple[str, ...] = (), **transport_options: Any) -> None:
        self.app = celery_app(url, **transport_options)
        self.config = Config(
            broker_url=url,
            broker_transport_options=transport_options,
            queues=queues,
            broker_timeout=2.0,
            inspect_timeout=1.0,
        )
        self.poller = QueuePoller(self.config, self.app)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PollCollector(self.poller, FamilyFactory()))

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(f"celery_{name}", labels)

    def length(self, queue: str) -> float | None:
        return self.value("queue_length", queue_name=queue)

    def close(self) -> None:
        self.poller.stop()
        self.app.close()


def publish(app: Celery, queue: str, count: int = 1, **options: Any) -> None:
    for _ in range(count):
        app.send_task("workload.add", (1, 2), queue=queue, **options)
