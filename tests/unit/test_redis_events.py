"""The Redis event reader's decoding of what arrives on the pub/sub socket, without a server.

Envelopes are built by kombu's own virtual channel (the code kombu's Redis transport publishes
with), and fed to the reader as the pub/sub replies redis-py returns for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kombu.compression import compress
from kombu.connection import Connection
from kombu.serialization import dumps, prepare_accept_content

from celery_exporter.redis_events import RedisEventReader, topic_for

EVENT = {"type": "worker-heartbeat", "hostname": "celery@w1", "timestamp": 1.0}


@pytest.fixture
def conn() -> Iterator[Connection]:
    connection = Connection("memory://")
    try:
        yield connection
    finally:
        connection.release()


class Collected:
    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.errors: list[str] = []


def reader_for(
    conn: Connection, accept: set[str] | None = None
) -> tuple[RedisEventReader, Collected]:
    got = Collected()
    reader = RedisEventReader(conn, "celeryev", got.bodies.append, got.errors.append, accept)
    return reader, got


def envelope(conn: Connection, body: Any, serializer: str = "json", **options: Any) -> bytes:
    """The bytes kombu's Redis channel publishes for one event message."""
    channel: Any = conn.default_channel
    content_type, encoding, data = dumps(body, serializer=serializer)
    headers = {"hostname": "celery@w1"}
    if "compression" in options:
        data, headers["compression"] = compress(data, options["compression"])
    message = channel.prepare_message(data, 0, content_type, encoding, headers)
    channel._inplace_augment_message(message, "celeryev", "worker.heartbeat")
    return json.dumps(message).encode()


def pmessage(data: bytes) -> list[bytes]:
    return [b"pmessage", b"/0.celeryev/*", b"/0.celeryev/worker.heartbeat", data]


def test_json_events_and_prefork_batches_are_decoded(conn: Connection) -> None:
    reader, got = reader_for(conn)
    reader._handle(pmessage(envelope(conn, EVENT)))
    reader._handle(pmessage(envelope(conn, [EVENT, EVENT])))
    assert got.bodies == [EVENT, [EVENT, EVENT]]
    assert got.errors == []


def test_replies_that_are_not_messages_are_ignored(conn: Connection) -> None:
    reader, got = reader_for(conn)
    reader._handle([b"psubscribe", b"/0.celeryev/*", 1])
    reader._handle([b"pong", b"redis-py-health-check"])
    reader._handle(b"OK")
    assert got.bodies == [] and got.errors == []


@pytest.mark.parametrize(
    "data",
    [b"not json", b'{"properties": {}}', json.dumps({"body": "!!", "properties": {}}).encode()],
    ids=["not-json", "no-body", "bad-body"],
)
def test_undecodable_messages_are_counted_and_skipped(conn: Connection, data: bytes) -> None:
    reader, got = reader_for(conn)
    reader._handle(pmessage(data))
    reader._handle(pmessage(envelope(conn, EVENT)))
    assert got.errors == ["undecodable"]
    assert got.bodies == [EVENT]


def test_compressed_json_goes_through_kombu(conn: Connection) -> None:
    reader, got = reader_for(conn)
    reader._handle(pmessage(envelope(conn, EVENT, compression="zlib")))
    assert got.bodies == [EVENT]


def test_pickle_only_where_accepted(conn: Connection) -> None:
    default, default_got = reader_for(conn, prepare_accept_content(["json"]))
    pickled = pmessage(envelope(conn, EVENT, serializer="pickle"))
    default._handle(pickled)
    assert default_got.errors == ["undecodable"]
    accepting, accepting_got = reader_for(conn, prepare_accept_content(["json", "pickle"]))
    accepting._handle(pickled)
    assert accepting_got.bodies == [EVENT]


class FanoutOptions:
    def __init__(self, prefix: str, patterns: bool) -> None:
        self.keyprefix_fanout = prefix
        self.fanout_patterns = patterns


@pytest.mark.parametrize(
    ("prefix", "patterns", "topic"),
    [("/3.", True, "/3.celeryev/*"), ("/0.", False, "/0.celeryev"), ("", True, "celeryev/*")],
)
def test_topic_is_the_one_kombu_publishes_fanout_messages_to(
    prefix: str, patterns: bool, topic: str
) -> None:
    assert topic_for(FanoutOptions(prefix, patterns), "celeryev") == topic
