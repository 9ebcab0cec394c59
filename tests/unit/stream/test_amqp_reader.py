"""The RabbitMQ event reader's pieces without a server: the queue it declares, compared with
the one Celery's own EventReceiver builds (from celery's code, in the test), and the decoding
of one py-amqp message, including `--accept-content` for what is not plain JSON."""

from __future__ import annotations

from typing import Any

import amqp
import orjson
import pytest
from celery import Celery
from kombu.connection import Connection
from kombu.serialization import dumps, prepare_accept_content
from kombu.transport.pyamqp import Channel as KombuAmqpChannel

from celery_exporter.stream.amqp_reader import JSON, AmqpEventReader, event_queue

EVENT = {"type": "worker-heartbeat", "hostname": "celery@w1", "timestamp": 1.0}


def declared(queue: Any) -> dict[str, Any]:
    """Everything of a queue that reaches the broker, its random name's tail aside."""
    return {
        "prefix": queue.name.rsplit(".", 1)[0],
        "exchange": (queue.exchange.name, queue.exchange.type, queue.exchange.durable),
        "exchange_auto_delete": queue.exchange.auto_delete,
        "routing_key": queue.routing_key,
        "auto_delete": queue.auto_delete,
        "durable": queue.durable,
        "exclusive": queue.exclusive,
        "arguments": queue.queue_arguments,
        "message_ttl": queue.message_ttl,  # x-message-ttl, in ms on the wire
        "expires": queue.expires,  # x-expires
        "bindings": queue.binding_arguments,
    }


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"event_queue_ttl": 2.5, "event_queue_expires": 30.0, "event_queue_prefix": "mine"},
        {"event_exchange": "otherev"},
        {"event_queue_durable": True, "event_queue_exclusive": False},
        {"event_queue_exclusive": True},
    ],
)
def test_event_queue_is_celery_receivers(conn: Connection, settings: dict[str, Any]) -> None:
    app = Celery(broker="memory://", set_as_current=False)
    app.conf.update(settings)
    receiver = app.events.Receiver(conn, handlers={})
    ours = event_queue(app, conn)
    assert declared(ours) == declared(receiver.queue)
    assert ours.name != receiver.queue.name  # a fresh node id per exporter, as Celery's


def test_event_queue_arguments_carry_ttl_and_expiry(conn: Connection) -> None:
    """Guards the comparison above against both sides losing the arguments together."""
    app = Celery(broker="memory://", set_as_current=False)
    queue: Any = event_queue(app, conn)  # kombu's Queue sets these attributes dynamically
    assert (queue.message_ttl, queue.expires) == (5.0, 60.0)
    assert (queue.auto_delete, queue.exclusive, queue.durable) == (True, True, False)


class Collected:
    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.errors: list[str] = []


class NoNetworkChannel(KombuAmqpChannel):
    """kombu's own py-amqp channel class, only not opened: message_to_python is kombu's."""

    def __init__(self) -> None:  # no connection: only message_to_python is used
        pass


def reader_with(accept: set[str] | None) -> tuple[AmqpEventReader, Collected]:
    got = Collected()
    reader = AmqpEventReader(
        Connection("memory://"),
        event_queue(Celery(set_as_current=False), Connection("memory://")),
        got.bodies.extend,
        got.errors.append,
        accept,
    )
    return reader, got


def message(
    body: bytes, content_type: str, encoding: str = "utf-8", **headers: Any
) -> amqp.Message:
    raw = amqp.Message(
        body, content_type=content_type, content_encoding=encoding, application_headers=headers
    )
    raw.channel = NoNetworkChannel()
    # What py-amqp's basic.deliver sets on a real message (kombu's Message reads it).
    raw.delivery_info = {
        "delivery_tag": 1,
        "redelivered": False,
        "exchange": "celeryev",
        "routing_key": "worker.heartbeat",
        "consumer_tag": "1",
    }
    return raw


def test_plain_json_is_decoded_and_held_for_one_handover() -> None:
    reader, got = reader_with(prepare_accept_content(["json"]))
    reader._on_message(message(orjson.dumps(EVENT), JSON))
    reader._on_message(message(orjson.dumps([EVENT, EVENT]), JSON))
    assert got.bodies == []  # held until the drain flushes them together
    reader._flush()
    assert got.bodies == [EVENT, [EVENT, EVENT]]
    assert got.errors == []


def test_bad_json_is_counted_not_raised() -> None:
    reader, got = reader_with(None)
    reader._on_message(message(b"{not json", JSON))
    reader._flush()
    assert got.errors == ["undecodable"]
    assert got.bodies == []


def test_content_type_outside_accept_content_is_refused() -> None:
    content_type, encoding, body = dumps(EVENT, serializer="pickle")
    reader, got = reader_with(prepare_accept_content(["json"]))
    reader._on_message(message(body, content_type, encoding))
    reader._flush()
    assert got.errors == ["undecodable"]
    assert got.bodies == []


def test_content_type_in_accept_content_goes_through_kombu() -> None:
    content_type, encoding, body = dumps(EVENT, serializer="pickle")
    reader, got = reader_with(prepare_accept_content(["json", "pickle"]))
    reader._on_message(message(body, content_type, encoding))
    reader._flush()
    assert got.bodies == [EVENT]
    assert got.errors == []
