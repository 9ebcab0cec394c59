"""The Redis event reader on a real server: a backlog read many messages per socket read.

A burst of event messages, published as kombu's fanout publisher does while the reader is not
reading, arrives in a few socket reads of many messages each; every message must be handed
over once and in order, and the one that is no event envelope counted as undecodable. The same
holds where the reader cannot reach hiredis' parsed replies and reads one message per
read_response, and with the redis-py and hiredis this project installs, the fast way is used.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from celery.events.event import get_exchange
from kombu.connection import Connection
from kombu.messaging import Producer

from celery_exporter.stream import redis_reader as redis_events
from celery_exporter.stream.redis_reader import RedisEventReader, parsed_replies, topic_for
from tests.support.servers import wait_for

EVENTS = 3000
EVENT = {"type": "worker-heartbeat", "hostname": "celery@w1"}


def drain_backlog(redis_url: str) -> tuple[list[Any], list[str], list[Any], bool]:
    """Publish a backlog to a subscribed reader, then read it all: (bodies, errors, what was
    published, whether hiredis' parsed replies were reachable)."""
    bodies: list[Any] = []
    errors: list[str] = []
    events = [{"type": "worker-heartbeat", "hostname": f"celery@w{i}"} for i in range(EVENTS)]
    expected: list[Any] = [[e, e] if i % 100 == 0 else e for i, e in enumerate(events)]
    with Connection(redis_url) as conn:
        reader = RedisEventReader(conn, "celeryev", bodies.extend, errors.append)
        reader.subscribe()
        fast = parsed_replies(reader._connection) is not None
        channel: Any = conn.default_channel
        topic = topic_for(channel, "celeryev").replace("*", "worker.heartbeat")
        exchange = get_exchange(conn)
        exchange(channel).declare()
        with Producer(channel, exchange=exchange, serializer="json") as producer:
            for index, body in enumerate(expected):
                producer.publish(body, routing_key="worker.heartbeat", delivery_mode=1)
                if index == EVENTS // 2:  # one message that is no event envelope at all
                    channel.client.publish(topic, b"not json")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(bodies) < len(expected):
            reader.drain(0.5)
        reader._pubsub.close()
    return bodies, errors, expected, fast


def test_a_backlog_is_handed_over_in_order_once(redis_url: str) -> None:
    bodies, errors, expected, fast = drain_backlog(redis_url)
    assert fast, (
        "hiredis' parsed replies are out of reach: redis-py changed? (stream/redis_reader.py)"
    )
    assert bodies == expected
    assert errors == ["undecodable"]


def test_without_hiredis_replies_every_message_comes_through_read_response(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_events, "parsed_replies", lambda connection: None)
    bodies, errors, expected, _ = drain_backlog(redis_url)
    assert bodies == expected
    assert errors == ["undecodable"]


def test_a_steady_trickle_of_events_does_not_hold_the_reader_past_its_deadline(
    redis_url: str,
) -> None:
    # The event thread's housekeeping (worker expiry, held events, health checks) runs
    # between drains; an event every 0.1 s must not keep one drain going for hundreds of them.
    stop = threading.Event()
    bodies: list[Any] = []
    published: list[int] = []
    with Connection(redis_url) as conn:
        reader = RedisEventReader(conn, "celeryev", bodies.extend, print)
        reader.subscribe()
        channel: Any = conn.default_channel
        exchange = get_exchange(conn)
        exchange(channel).declare()

        def trickle() -> None:
            with Connection(redis_url) as publisher_conn:
                producer = Producer(publisher_conn.default_channel, exchange=exchange)
                while not stop.wait(0.1):
                    producer.publish(EVENT, routing_key="worker.heartbeat", serializer="json")
                    published.append(1)

        publisher = threading.Thread(target=trickle, daemon=True)
        publisher.start()
        try:
            wait_for(lambda: len(published) >= 2, 10, "the trickle to start")
            started = time.monotonic()
            reader.drain(0.5)
            took = time.monotonic() - started
        finally:
            stop.set()
            publisher.join(5)
            reader._pubsub.close()
    assert took < 3.0, f"one drain(0.5) took {took:.1f}s"
    assert len(bodies) >= 3
