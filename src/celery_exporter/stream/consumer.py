"""The event thread: connect to the broker, consume the event stream, reconnect forever.

Owns the hot path up to the tracker: one message is decoded (orjson for JSON, which is what
Celery sends, kombu's decoder otherwise) and handed over. No celery.events.State and no
timestamp localisation: the metrics need neither. A broker outage is data (broker_up 0); its
log lines are written by faults/outages.py, once for all threads that see it.

On Redis the messages are read straight off the pub/sub socket (stream/redis_reader.py); on
RabbitMQ off py-amqp's frames (stream/amqp_reader.py); every other transport (SQS, Sentinel's
fanout compat mode...) goes through a kombu Consumer, which is what they have to offer.
All run under the same loop here: connect, housekeeping, reconnect
with backoff, health flags.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu.connection import Connection
from kombu.exceptions import OperationalError
from kombu.message import Message
from kombu.serialization import prepare_accept_content

from ..config import redact_url
from ..exposition.health import ExporterHealth
from ..faults.classify import passwords
from ..faults.outages import BrokerOutages, broker_outages
from ..state.tracker import Tracker
from .amqp_reader import AmqpEventReader, event_queue, uses_amqp_reader
from .json_decode import loads
from .redis_reader import RedisEventReader, SubscriptionDropped, uses_direct_reader

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
EXPIRE_EVERY = 5.0  # seconds between purges of dead workers
HEARTBEAT_CHECK_EVERY = 1.0
JSON = "application/json"
DRAIN_TIMEOUT = 1.0  # longest a drain call blocks: how soon `stop` and housekeeping are seen
RESUBSCRIBE_DELAY = 0.1  # after Redis dropped only us: no spin if it keeps doing so


class Backoff:
    """Capped exponential delays with jitter: base, 2x base, 4x base... up to MAX_BACKOFF."""

    def __init__(self, base: float, rand: Callable[[], float] = random.random) -> None:
        self.base = base
        self.attempt = 0
        self._rand = rand

    def next_delay(self) -> float:
        delay = min(MAX_BACKOFF, self.base * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return float(delay * (0.8 + 0.4 * self._rand()))  # spread reconnects of many exporters

    def reset(self) -> None:
        self.attempt = 0


class EventConsumer:
    def __init__(
        self,
        app: Celery,
        tracker: Tracker,
        health: ExporterHealth,
        retry_interval: float,
        outages: BrokerOutages | None = None,
    ) -> None:
        self._app = app
        self._tracker = tracker
        self._health = health
        self._backoff = Backoff(retry_interval)
        self._secrets = passwords(str(app.conf.broker_url))
        # Shared with the poll threads, so one outage is one log line (faults/outages.py).
        self._outages = outages or broker_outages(str(app.conf.broker_url), app.conf.broker_use_ssl)
        # Content types a non-JSON event may come in (--accept-content; Celery's default json).
        self._accept = prepare_accept_content(app.conf.accept_content)
        self._ever_connected = False
        self._resubscribing = False

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; never raises for broker trouble."""
        while not stop.is_set():
            conn: Connection = self._app.connection_for_read()
            # kombu re-raises a failed connect as its OperationalError: an outage like the rest.
            errors = (*conn.connection_errors, *conn.channel_errors, OperationalError, OSError)
            try:
                with conn:
                    conn.ensure_connection(max_retries=1)
                    self._consume(conn, stop)
            except SubscriptionDropped as exc:
                # The server is up and cut only us off: resubscribe at once, say why once.
                log.warning(
                    "Redis closed the event subscription (%s) while the server kept answering; "
                    "events published meanwhile were probably lost. Redis drops a subscriber "
                    "that falls behind once its output buffer passes "
                    "`client-output-buffer-limit pubsub` (default 32mb hard, 8mb for 60s): "
                    "raise that limit on the Redis server (CLIENT KILL and a Sentinel "
                    "failover close subscriptions too)",
                    self._scrub(str(exc)),
                )
                self._resubscribing = True
                stop.wait(RESUBSCRIBE_DELAY)
                continue
            except errors as exc:
                self._went_down(exc)
            except Exception as exc:
                # Not a transport error (e.g. redis' AuthenticationError, a broken TLS setup):
                # still no reason to let the only event thread die. Retry like an outage.
                log.debug("event consumer failed", exc_info=True)
                self._went_down(exc)
            else:
                continue
            stop.wait(self._backoff.next_delay())

    def _consume(self, conn: Connection, stop: threading.Event) -> None:
        exchange = self._app.conf.event_exchange
        if uses_direct_reader(conn):
            reader = RedisEventReader(
                conn,
                exchange,
                self._tracker.record_messages,
                self._tracker.record_error,
                self._accept,
            )
            reader.subscribe()
            self._serve(conn, stop, reader.drain)
            return
        queue = event_queue(self._app, conn)
        if uses_amqp_reader(conn):
            amqp_reader = AmqpEventReader(
                conn,
                queue,
                self._tracker.record_messages,
                self._tracker.record_error,
                self._accept,
            )
            amqp_reader.subscribe()
            self._serve(conn, stop, amqp_reader.drain)
            return
        with conn.Consumer(
            queues=[queue],
            on_message=self._on_message,
            on_decode_error=self._on_decode_error,
            accept=self._accept,
            no_ack=True,
        ):
            self._serve(conn, stop, lambda timeout: self._drain_kombu(conn, timeout))

    @staticmethod
    def _drain_kombu(conn: Connection, timeout: float) -> None:
        """Messages for about `timeout` seconds, or until a quiet `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                conn.drain_events(timeout=timeout)  # returns after one message
        except TimeoutError:
            pass  # a quiet second: time to housekeep

    def _serve(
        self, conn: Connection, stop: threading.Event, drain: Callable[[float], None]
    ) -> None:
        """Subscribed: drain events until `stop`, with housekeeping between drains."""
        self._came_up()
        # Ask every worker for a heartbeat now, so workers show up without waiting 2 s.
        self._app.control.broadcast("heartbeat", connection=conn)
        last_expire = last_heartbeat_check = time.monotonic()
        while not stop.is_set():
            drain(DRAIN_TIMEOUT)
            self._tracker.release_deferred()  # a new worker's task events, once it answered
            now = time.monotonic()
            if now - last_heartbeat_check >= HEARTBEAT_CHECK_EVERY:
                conn.heartbeat_check()
                last_heartbeat_check = now
            if now - last_expire >= EXPIRE_EVERY:
                self._tracker.expire()
                last_expire = now

    def _on_message(self, message: Message) -> None:
        body: Any
        try:
            # message.decode() checks `accept`, which honours --accept-content
            body = loads(message.body) if message.content_type == JSON else message.decode()
        except Exception:  # the guard around one message: count it and go on
            self._tracker.record_error("undecodable")
            return
        self._tracker.record_message(body)

    def _on_decode_error(self, message: Message, exc: Exception) -> None:
        self._tracker.record_error("undecodable")

    def _came_up(self) -> None:
        self._health.broker_up = True
        self._backoff.reset()
        # After a failure the outage reporter says "connected" once every thread is back.
        was_failing = self._outages.succeeded("events")
        if not self._ever_connected:
            if not was_failing:
                log.info("connected to broker %s", redact_url(str(self._app.conf.broker_url)))
        else:
            self._health.reconnects += 1
            if self._resubscribing and not was_failing:
                log.info("resubscribed to the event stream")
        self._ever_connected = True
        self._resubscribing = False

    def _went_down(self, exc: BaseException) -> None:
        self._health.broker_up = False
        self._outages.failed("events", exc)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
