"""The Celery event stream on RabbitMQ, read off py-amqp's frames without kombu's message path.

Runs on the event thread only (stream/consumer.py calls `subscribe` then `drain`). Bounds: at
most BATCH decoded bodies are held before they are handed to the tracker, and never across a
moment the socket has nothing more to read, so a lone event is recorded as soon as it came.

What kombu's per-message path cost, and what is done instead:

- kombu's Connection.drain_events -> Transport.drain_events -> py-amqp drain_events sets and
  restores the socket timeout around every frame (two syscalls a frame, three frames a
  message). Here the timeout is set once per drain and frames are read in a loop under it
  (py-amqp's own `having_timeout`, which also maps SSL's "timed out" errors).
- One tracker call per message took its lock and read its clock per message. Here the bodies
  read together go in one `on_bodies` call, as the Redis reader does (stream/redis_reader.py).
- py-amqp's channel hands its own amqp.Message to our callback: no kombu Message per event. A
  body that is not plain JSON (another serializer, compression) is handed to kombu's Message
  after all, with `--accept-content` applied, so the same content is refused as before.

Where to connect (URL, vhost, TLS and `--broker-ssl-option`, heartbeats, failover hosts)
comes from kombu's own Connection, which both this reader and the queue poller
(poll/amqp_queues.py) open through `app.connection_for_read()`: one source of truth. The
queue is declared exactly as Celery's own Receiver declares it (`event_queue`). Messages are
consumed with no_ack, as before: an event queue is auto-delete with a TTL, nothing to redeliver.

Connection errors propagate to the consumer's reconnect loop.
"""

from __future__ import annotations

import select
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.events.event import get_exchange
from kombu.connection import Connection
from kombu.entity import Queue

from .json_decode import loads

JSON = "application/json"
BATCH = 64  # bodies per tracker call at most: bounds the lock hold and the memory held


def event_queue(app: Celery, conn: Connection) -> Queue:
    """The event queue as celery.events.receiver.EventReceiver declares it (a unit test
    compares the two): exchange `celeryev`, routing key `#`, TTL and expiry arguments, and the
    durable/exclusive settings with the same consequences."""
    conf = app.conf
    durable = bool(conf.event_queue_durable)
    return Queue(
        f"{conf.event_queue_prefix}.{uuid.uuid4()}",
        exchange=get_exchange(conn, name=conf.event_exchange),
        routing_key="#",
        auto_delete=not durable,
        durable=durable,
        exclusive=conf.event_queue_exclusive,
        message_ttl=conf.event_queue_ttl,
        expires=conf.event_queue_expires,
    )


def uses_amqp_reader(conn: Connection) -> bool:
    """True when kombu's transport is py-amqp (pyamqp://, amqp://, amqps://)."""
    if getattr(conn.transport, "driver_type", None) != "amqp":
        return False
    try:
        import amqp
    except ImportError:  # pragma: no cover - kombu's amqp transport needs it
        return False
    return isinstance(conn.connection, amqp.Connection)


class AmqpEventReader:
    """Consumes the event queue on kombu's channel and hands the decoded bodies over.

    `on_bodies` gets bodies in order, each an event dict or a list of them (prefork's
    `task.multi`); `on_error` the reason of a message that could not be decoded. Both are
    called from the thread that calls `drain`.
    """

    def __init__(
        self,
        conn: Connection,
        queue: Queue,
        on_bodies: Callable[[list[Any]], None],
        on_error: Callable[[str], None],
        accept: set[str] | None = None,
    ) -> None:
        self._conn = conn
        self._queue = queue
        self._on_bodies = on_bodies
        self._on_error = on_error
        self._accept = accept
        self._bodies: list[Any] = []

    def subscribe(self) -> None:
        channel: Any = self._conn.default_channel  # connects now
        self._queue(channel).declare()
        channel.basic_consume(self._queue.name, no_ack=True, callback=self._on_message)

    def drain(self, timeout: float) -> None:
        """Read and hand over messages for about `timeout` seconds, or until a quiet `timeout`."""
        amqp_conn: Any = self._conn.connection
        transport = amqp_conn.transport
        read_frame = transport.read_frame
        on_frame = amqp_conn.on_inbound_frame
        bodies = self._bodies
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(transport.sock, select.POLLIN)
        try:
            with transport.having_timeout(timeout):
                while time.monotonic() < deadline:
                    if bodies and (len(bodies) >= BATCH or not self._more_to_read(poller)):
                        self._flush()
                    on_frame(read_frame())
        except TimeoutError:
            pass  # quiet for `timeout`: time for the caller's housekeeping
        finally:  # what was read before an error is handed over all the same
            if bodies:
                self._flush()

    def _more_to_read(self, poller: select.poll) -> bool:
        """Bytes wait in py-amqp's buffer, TLS' buffer or the socket: the next read won't block."""
        transport = self._conn.connection.transport
        if getattr(transport, "_read_buffer", b""):
            return True
        sock = transport.sock
        pending = getattr(sock, "pending", None)  # an SSL socket's decrypted, unread bytes
        if pending is not None and pending():
            return True
        return bool(poller.poll(0))

    def _flush(self) -> None:
        bodies = self._bodies[:]
        self._bodies.clear()
        self._on_bodies(bodies)

    def _on_message(self, raw: Any) -> None:
        """One py-amqp message; anything but plain JSON goes through kombu's Message."""
        properties = raw.properties
        headers = properties.get("application_headers") or {}
        try:
            if properties.get("content_type") != JSON or "compression" in headers:
                message = raw.channel.message_to_python(raw)
                message.accept = self._accept  # --accept-content, checked by decode()
                body = message.decode()
            else:
                body = loads(raw.body)
        except Exception:  # the guard around one message: count it and go on
            self._on_error("undecodable")
            return
        self._bodies.append(body)
