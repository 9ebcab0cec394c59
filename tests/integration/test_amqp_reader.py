"""The RabbitMQ event reader against a real RabbitMQ: every event arrives in order, a burst is
handed over in batches (one tracker lock per batch, not per message), a lone event is handed
over before the drain's timeout runs out, and the queue is the one Celery's Receiver declares."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu.connection import Connection

from celery_exporter.stream.amqp_reader import (
    BATCH,
    AmqpEventReader,
    event_queue,
    uses_amqp_reader,
)
from tests.support.servers import RabbitMQServer


@pytest.fixture
def app(rabbitmq_server: RabbitMQServer) -> Celery:
    return Celery(broker=rabbitmq_server.url, set_as_current=False)


@pytest.fixture
def conn(app: Celery) -> Iterator[Connection]:
    connection = app.connection_for_read()
    try:
        connection.ensure_connection(max_retries=1)
        yield connection
    finally:
        connection.release()


class Handed:
    def __init__(self) -> None:
        self.calls: list[tuple[float, list[Any]]] = []
        self.errors: list[str] = []

    def bodies(self, bodies: list[Any]) -> None:
        self.calls.append((time.monotonic(), list(bodies)))

    def flat(self) -> list[Any]:
        return [body for _, call in self.calls for body in call]


def subscribed(app: Celery, conn: Connection) -> tuple[AmqpEventReader, Handed]:
    handed = Handed()
    reader = AmqpEventReader(conn, event_queue(app, conn), handed.bodies, handed.errors.append)
    reader.subscribe()
    return reader, handed


def publish(app: Celery, events: list[dict[str, Any]]) -> None:
    with app.connection_for_write() as producer_conn:
        dispatcher = app.events.Dispatcher(
            producer_conn, hostname="celery@bench", buffer_while_offline=False
        )
        for event in events:
            dispatcher.send(**event)
        dispatcher.close()


def drain_until(reader: AmqpEventReader, handed: Handed, count: int, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while len(handed.flat()) < count and time.monotonic() < deadline:
        reader.drain(0.5)


def test_picks_the_py_amqp_path(conn: Connection) -> None:
    assert uses_amqp_reader(conn)
    assert not uses_amqp_reader(Connection("memory://"))


def test_burst_arrives_in_order_and_in_batches(app: Celery, conn: Connection) -> None:
    reader, handed = subscribed(app, conn)
    events = [{"type": "task-sent", "uuid": f"id-{n}", "name": "t"} for n in range(1000)]
    publish(app, events)
    drain_until(reader, handed, len(events))
    got = handed.flat()
    assert [body["uuid"] for body in got] == [event["uuid"] for event in events]
    assert all(len(call) <= BATCH for _, call in handed.calls)
    # Batched: far fewer handovers than messages (a per-message path makes 1000).
    assert len(handed.calls) < len(events) / 4, len(handed.calls)


def test_lone_event_is_handed_over_at_once(app: Celery, conn: Connection) -> None:
    reader, handed = subscribed(app, conn)
    sent_at: list[float] = []

    def send_later() -> None:
        time.sleep(0.3)  # once the drain below waits on the socket
        sent_at.append(time.monotonic())
        publish(app, [{"type": "worker-heartbeat"}])

    sender = threading.Thread(target=send_later)
    sender.start()
    reader.drain(5.0)  # returns only after 5 s of quiet or 5 s in all
    sender.join()
    assert len(handed.calls) == 1
    # Handed over when it came, not held until the drain's quiet timeout ended.
    assert handed.calls[0][0] - sent_at[0] < 1.0


def test_queue_declared_like_celerys_receiver(
    app: Celery, conn: Connection, rabbitmq_server: RabbitMQServer
) -> None:
    reader, _ = subscribed(app, conn)
    queue = reader._queue
    channel: Any = conn.default_channel
    ok = channel.queue_declare(queue=queue.name, passive=True)
    assert ok.consumer_count == 1
    other = app.connection_for_read()
    try:
        # Exclusive, as Celery's Receiver declares it (event_queue_exclusive defaults to True):
        # another connection may not even look at it.
        with pytest.raises(other.channel_errors) as refused:
            other.default_channel.queue_declare(queue=queue.name, passive=True)
        assert getattr(refused.value, "code", None) == 405
    finally:
        other.release()
