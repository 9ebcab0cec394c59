"""A producer app that publishes tasks by name, as a web process would, for tests that drive
real workers."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery


def producer(broker_url: str, sent_events: bool = True) -> Celery:
    """A client app that publishes tasks by name, as a web process would."""
    app = Celery("producer", broker=broker_url, set_as_current=False)
    app.conf.task_send_sent_event = sent_events
    return app


def send(app: Celery, name: str, queue: str, times: int = 1, args: Sequence[object] = ()) -> None:
    with app.producer_or_acquire() as publisher:
        for _ in range(times):
            app.send_task(name, args=tuple(args), queue=queue, producer=publisher)
