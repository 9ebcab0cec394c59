"""The Redis event reader's decoding of what arrives on the pub/sub socket, without a server.

Envelopes are built by kombu's own virtual channel (the code kombu's Redis transport publishes
with), and fed to the reader as the pub/sub replies redis-py returns for them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kombu.compression import compress
from kombu.connection import Connection
from kombu.serialization import dumps, prepare_accept_content

from celery_exporter.stream.redis_reader import JSON, ParsedReplies, RedisEventReader, topic_for

EVENT = {"type": "worker-heartbeat", "hostname": "celery@w1", "timestamp": 1.0}


class Collected:
    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.errors: list[str] = []


def reader_for(
    conn: Connection, accept: set[str] | None = None
) -> tuple[RedisEventReader, Collected]:
    got = Collected()
    reader = RedisEventReader(conn, "celeryev", got.bodies.extend, got.errors.append, accept)
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


def handle(reader: RedisEventReader, reply: Any) -> None:
    """What the reader does with one reply read_response returned."""
    bodies: list[Any] = []
    reader._take(reply, bodies)
    if bodies:
        reader._on_bodies(bodies)


def pmessage(data: bytes) -> list[bytes]:
    return [b"pmessage", b"/0.celeryev/*", b"/0.celeryev/worker.heartbeat", data]


def test_json_events_and_prefork_batches_are_decoded(conn: Connection) -> None:
    reader, got = reader_for(conn)
    handle(reader, pmessage(envelope(conn, EVENT)))
    handle(reader, pmessage(envelope(conn, [EVENT, EVENT])))
    assert got.bodies == [EVENT, [EVENT, EVENT]]
    assert got.errors == []


def test_replies_that_are_not_messages_are_ignored(conn: Connection) -> None:
    reader, got = reader_for(conn)
    handle(reader, [b"psubscribe", b"/0.celeryev/*", 1])
    handle(reader, [b"pong", b"redis-py-health-check"])
    handle(reader, b"OK")
    assert got.bodies == [] and got.errors == []


@pytest.mark.parametrize(
    "data",
    [b"not json", b'{"properties": {}}', json.dumps({"body": "!!", "properties": {}}).encode()],
    ids=["not-json", "no-body", "bad-body"],
)
def test_undecodable_messages_are_counted_and_skipped(conn: Connection, data: bytes) -> None:
    reader, got = reader_for(conn)
    handle(reader, pmessage(data))
    handle(reader, pmessage(envelope(conn, EVENT)))
    assert got.errors == ["undecodable"]
    assert got.bodies == [EVENT]


def test_compressed_json_goes_through_kombu(conn: Connection) -> None:
    reader, got = reader_for(conn)
    handle(reader, pmessage(envelope(conn, EVENT, compression="zlib")))
    assert got.bodies == [EVENT]


def test_pickle_only_where_accepted(conn: Connection) -> None:
    default, default_got = reader_for(conn, prepare_accept_content(["json"]))
    pickled = pmessage(envelope(conn, EVENT, serializer="pickle"))
    handle(default, pickled)
    assert default_got.errors == ["undecodable"]
    accepting, accepting_got = reader_for(conn, prepare_accept_content(["json", "pickle"]))
    handle(accepting, pickled)
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


def resp3_push(*items: bytes) -> bytes:
    """One RESP3 push reply, as Redis sends a pub/sub message to a RESP3 client."""
    return f">{len(items)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(item), item) for item in items
    )


def hiredis_replies(data: bytes, pushed: list[Any] | None = None) -> ParsedReplies:
    """A hiredis reader that has read `data` from the socket, as redis-py configures it;
    push replies other than messages go to `pushed`."""
    import hiredis
    from redis._parsers.hiredis import NOT_ENOUGH_DATA

    reader = hiredis.Reader(notEnoughData=NOT_ENOUGH_DATA)
    reader.feed(data)
    on_push = (pushed if pushed is not None else []).append
    return ParsedReplies(reader.gets, NOT_ENOUGH_DATA, hiredis.PushNotification, on_push)


def test_replies_already_parsed_are_all_handed_over_in_order(conn: Connection) -> None:
    reader, got = reader_for(conn)
    second = {**EVENT, "hostname": "celery@w2"}
    subscribed = b">3\r\n$10\r\npsubscribe\r\n$13\r\n/0.celeryev/*\r\n:1\r\n"
    data = (
        subscribed
        + resp3_push(*pmessage(envelope(conn, EVENT)))
        + resp3_push(*pmessage(b"not json"))
        + resp3_push(*pmessage(envelope(conn, [second, EVENT])))
    )
    whole = resp3_push(*pmessage(envelope(conn, second)))
    data += whole[: len(whole) // 2]  # half a reply: the rest is still on the socket
    pushed: list[Any] = []
    reader._take_buffered(hiredis_replies(data, pushed), got.bodies)
    assert got.bodies == [EVENT, [second, EVENT]]
    assert got.errors == ["undecodable"]
    assert pushed == [[b"psubscribe", b"/0.celeryev/*", 1]]  # to redis-py, as read_response


def test_an_error_reply_in_the_buffer_is_raised_as_read_response_does(conn: Connection) -> None:

    reader, got = reader_for(conn)
    data = resp3_push(*pmessage(envelope(conn, EVENT))) + b"-ERR something broke\r\n"
    with pytest.raises(Exception, match="something broke"):
        reader._take_buffered(hiredis_replies(data), got.bodies)
    assert got.bodies == [EVENT]  # what came before the error was handed over


def test_base64_bodies_decode_as_kombu_decodes_them(conn: Connection) -> None:
    # kombu decodes base64 leniently (binascii): characters outside the alphabet are skipped.
    import base64

    reader, got = reader_for(conn)
    body = base64.b64encode(json.dumps(EVENT).encode()).decode()
    for text in (body, body[:8] + "\n" + body[8:]):
        message = {
            "body": text,
            "content-type": JSON,
            "headers": {},
            "properties": {"body_encoding": "base64"},
        }
        handle(reader, pmessage(json.dumps(message).encode()))
    assert got.bodies == [EVENT, EVENT] and got.errors == []
