"""The Celery event stream on Redis, read straight off the pub/sub socket.

kombu's Redis transport turns every pub/sub message into a kombu Message and runs it through
its poller, QoS and callback layers: half of the exporter's time per event went there (see
bench/README.md). This reader subscribes to the same topics kombu's fanout exchange publishes
to and decodes what arrives itself: the kombu envelope (JSON), the base64 body, the event JSON.

Everything about *where* to connect comes from kombu's own Redis channel, so this path and
the queue poll (poll/redis_queues.py) cannot disagree: the pub/sub client is the channel's
`subclient` (host, port, database, password, TLS, Sentinel master, socket options,
`global_keyprefix`), and the topic is the one the channel itself publishes fanout messages
to (`fanout_prefix` with the database number, `fanout_patterns`). A message that is not
plain JSON, or that is compressed, is decoded by kombu's own Message class, so
`--accept-content` still applies.

Two things make this path cheaper than even a bare redis-py reader (bench/README.md):

- One socket read brings dozens of messages (64 kB). redis-py's read_response returns them one
  at a time through several layers; here the first comes through read_response (which waits,
  reads the socket and raises its errors) and the rest of that read is taken straight from
  hiredis' reader, which has already parsed them. That reader is a private attribute of
  redis-py's parser, so it is looked up defensively: where it is missing (no hiredis, or a
  redis-py that changed) every message goes through read_response, slower but the same.
- The base64 body is decoded by pybase64 (SIMD) where installed, else by binascii, with the
  same lenient rules as kombu's own decoder.

Connection errors propagate to the consumer's reconnect loop (stream/consumer.py). One case is told
apart: Redis dropping only this subscriber while the server stays up, which is what the pub/sub
output buffer limit does to a subscriber that falls behind (SubscriptionDropped).
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from kombu.connection import Connection

from .json_decode import loads

b64decode: Callable[[str], bytes] = binascii.a2b_base64
try:
    import pybase64

    b64decode = pybase64.b64decode  # 3x faster on event bodies; lenient like binascii
except ImportError:  # pragma: no cover - a dependency, but the exporter runs without it
    pass

JSON = "application/json"


def _as_is(response: Any) -> Any:
    return response


class ParsedReplies(NamedTuple):
    """hiredis' reader on a redis-py connection: `gets` hands over the next reply it has
    already parsed from the socket, or `none_left` when it has no complete one."""

    gets: Callable[[], Any]
    none_left: object
    push_type: Any  # hiredis' RESP3 push reply type; () before hiredis 3.2, which has none
    on_push: Callable[[Any], Any]  # redis-py's handling of push replies in read_response


def parsed_replies(connection: Any) -> ParsedReplies | None:
    """The hiredis reader of this connection; None where redis-py reads without hiredis or
    its parser no longer looks as expected (then read_response does all the reading)."""
    try:
        import hiredis
        from redis._parsers.hiredis import NOT_ENOUGH_DATA
    except ImportError:
        return None
    parser = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    on_push = getattr(parser, "handle_push_response", None)
    if not isinstance(reader, hiredis.Reader) or on_push is None:
        return None
    push_type = getattr(hiredis, "PushNotification", ())
    return ParsedReplies(reader.gets, NOT_ENOUGH_DATA, push_type, on_push)


class SubscriptionDropped(Exception):
    """Redis closed the event subscription, yet the server answers: it dropped this client."""


def topic_for(channel: Any, exchange: str) -> str:
    """The pattern kombu's Redis channel subscribes a fanout queue bound with `#` to.

    kombu publishes a fanout message to `<fanout prefix><exchange>/<routing key>` when
    `fanout_patterns` is on (the default) and to `<fanout prefix><exchange>` otherwise; a
    consumer bound with `#` subscribes the pattern with `*` in its place. The prefix already
    holds the database number once the channel has a connection pool.
    """
    prefix = str(channel.keyprefix_fanout)
    if channel.fanout_patterns:
        return f"{prefix}{exchange}/*"
    return f"{prefix}{exchange}"


def uses_direct_reader(conn: Connection) -> bool:
    """True when the events can be read by RedisEventReader (Redis or Sentinel transport).

    Sentinel's `sentinel_fanout_compat` subscribes two topics and removes duplicates per
    message; that rolling-upgrade mode stays on kombu's own path.
    """
    if getattr(conn.transport, "driver_type", None) != "redis":
        return False
    return not (conn.transport_options or {}).get("sentinel_fanout_compat")


class RedisEventReader:
    """Subscribes the event topic on kombu's channel and hands the decoded bodies over.

    `on_bodies` gets the bodies of the messages one socket read brought, in order, each an
    event dict or a list of them (a prefork worker's `task.multi`): one call per read, not per
    message, so the tracker takes its lock once for all of them. `on_error` gets the reason
    of a message that could not be decoded. Both are called from the thread that calls
    `drain`.
    """

    def __init__(
        self,
        conn: Connection,
        exchange: str,
        on_bodies: Callable[[list[Any]], None],
        on_error: Callable[[str], None],
        accept: set[str] | None = None,
    ) -> None:
        self._channel: Any = conn.default_channel  # connects (and PINGs) now
        self._accept = accept  # content types kombu may decode (--accept-content)
        self._exchange = exchange
        self._on_bodies = on_bodies
        self._on_error = on_error
        self._pubsub: Any = None
        self._connection: Any = None

    def subscribe(self) -> None:
        # kombu's subclient prefixes the pattern with global_keyprefix, as kombu's publisher
        # prefixes the topic it publishes to.
        self._pubsub = self._channel.subclient
        # Over RESP3 (redis-py 8's default) every pub/sub message passes through a push
        # handler; redis-py's default one builds a debug string of the whole message first,
        # which cost as much as decoding the message (bench/README.md). Hand it back as is.
        self._pubsub.push_handler_func = _as_is
        self._pubsub.psubscribe(topic_for(self._channel, self._exchange))
        self._connection = self._pubsub.connection

    def drain(self, timeout: float) -> None:
        """Read and hand over messages for about `timeout` seconds, or less if quiet."""
        import redis  # here, not at the top: redis-py costs 8 MB of RSS on RabbitMQ too

        connection = self._connection
        read = connection.read_response
        deadline = time.monotonic() + timeout
        self._pubsub.check_health()  # a PING now and then, as kombu's poller sends
        # After check_health, which may have connected again (and so made a new reader).
        buffered = parsed_replies(connection)
        try:
            while True:
                # Checked per socket read, not per message: a steady trickle of events must
                # not keep the caller's housekeeping waiting, and a busy socket read brings
                # dozens of messages, so the clock costs nothing per message.
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                bodies: list[Any] = []
                try:
                    # The timeout only applies when the parser's buffer is empty.
                    reply = read(timeout=remaining, disconnect_on_error=False, push_request=True)
                    self._take(reply, bodies)
                    if buffered is not None:
                        self._take_buffered(buffered, bodies)
                finally:  # what was read before an error is handed over all the same
                    if bodies:
                        self._on_bodies(bodies)
        except redis.TimeoutError:
            return  # quiet until the deadline: time for the caller's housekeeping
        except redis.ConnectionError as exc:
            if self._server_answers():
                raise SubscriptionDropped(str(exc)) from exc
            raise

    def _take_buffered(self, buffered: ParsedReplies, bodies: list[Any]) -> None:
        """Every reply hiredis has already parsed, each as read_response would return it."""
        take = self._take
        gets, none_left, push_type, on_push = buffered
        reply = gets()
        while reply is not none_left:
            if isinstance(reply, Exception):
                raise reply  # a connection or reply error: read_response raises it too
            if isinstance(reply, push_type) and reply and reply[0] != b"pmessage":
                # Subscribe confirmations, and redis-py's own notices (a server's maintenance
                # or move notices): its parser's push handling decides, as in read_response.
                on_push(reply)
            else:
                take(reply, bodies)  # a message; anything else is passed over there
            reply = gets()

    def _take(self, reply: Any, bodies: list[Any]) -> None:
        """The body of a message, decoded onto `bodies`; any other reply is passed over."""
        # [b"pmessage", pattern, channel, data], a list (RESP2) or a push reply (RESP3, which
        # redis-py 8 speaks by default; push_request=True returns it instead of swallowing
        # it). Subscribe confirmations and PING replies are the only other replies here.
        if not isinstance(reply, list) or not reply or reply[0] != b"pmessage":
            return
        try:
            bodies.append(self._decode(reply[3]))
        except Exception:  # the guard around one message: count it and go on
            self._on_error("undecodable")

    def _decode(self, data: bytes) -> Any:
        envelope = loads(data)
        properties = envelope["properties"]
        encoding = properties.get("body_encoding")
        if envelope.get("content-type") != JSON or "compression" in (envelope.get("headers") or {}):
            return self._decode_with_kombu(envelope)
        if encoding == "base64":
            return loads(b64decode(envelope["body"]))
        if encoding is None or encoding.lower() == "utf-8":
            return loads(envelope["body"])
        return self._decode_with_kombu(envelope)

    def _decode_with_kombu(self, envelope: dict[str, Any]) -> Any:
        """Other serializers, compression, body encodings: kombu's own Message decodes."""
        message = self._channel.Message(envelope, channel=self._channel)
        if self._accept is not None:
            message.accept = self._accept
        return message.decode()

    def _server_answers(self) -> bool:
        """After the subscription broke: does the server still take a command? Then it
        closed this client on purpose (output buffer limit, CLIENT KILL), it did not die."""
        import redis

        try:
            return bool(redis.Redis(connection_pool=self._channel.pool).ping())
        except (redis.RedisError, OSError):
            return False
