"""Queue probes per broker transport: ready and unacked message counts and consumers.

Called only from the poll thread, never from a scrape. Each probe keeps one broker connection
(opened with the configured timeouts, dropped on the first error) and turns the transport's own
errors into ProbeError, so the poller records a failed poll instead of crashing.

- Redis (redis, rediss, sentinel): one pipelined round trip per poll for every queue's priority
  sub-lists and the `unacked` hash, keyed exactly as kombu keys them (`sep`, `priority_steps`,
  `global_keyprefix`, `unacked_key` come from kombu's channel, so transport options apply).
  The same round trip reads the oldest message of each sub-list (kombu LPUSHes and BRPOPs, so
  that is LINDEX -1) for its headers' task id, ETA and expiry; the body (args) is never read.
- AMQP (RabbitMQ): a passive queue_declare per queue gives ready messages and consumers. A
  missing queue closes the channel with 404; it reads 0 and a fresh channel serves the rest.
  Unacked messages are not available over AMQP (only the management API has them).
- Any other kombu transport (SQS, ...): kombu's own passive queue_declare, whose message_count
  comes from the transport's size call. Transports without one report no lengths.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kombu.exceptions
from celery import Celery
from kombu.transport import virtual

from .config import Config
from .queue_evidence import BrokerHead, message_headers, parse_head

log = logging.getLogger(__name__)

# Exchanges kombu and Celery use for their own plumbing; their queues are not task queues.
INTERNAL_EXCHANGES = frozenset({"celeryev", "celery.pidbox", "reply.celery.pidbox"})
INTERNAL_QUEUE_SUFFIXES = (".pidbox", ".celery.pidbox")
INTERNAL_QUEUE_PREFIXES = ("celeryev.",)
NOT_FOUND = 404


class ProbeError(Exception):
    """The broker could not be asked; the message names the error, never a password."""


@dataclass(frozen=True)
class QueueReading:
    """One poll's answer. A queue absent from `lengths` could not be read this time."""

    lengths: Mapping[str, int]
    # None where the transport cannot tell (RabbitMQ unacked; consumers outside RabbitMQ).
    unacked: Mapping[str, int] | None = None
    consumers: Mapping[str, int] | None = None
    # Redis only: the oldest message of each priority sub-list, and the task ids workers took.
    heads: Mapping[str, tuple[BrokerHead, ...]] | None = None
    unacked_ids: frozenset[str] | None = None


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def is_not_found(exc: BaseException) -> bool:
    # py-amqp sets reply_code 404 (int); kombu's virtual transports pass the string "404".
    return str(getattr(exc, "reply_code", "")) == str(NOT_FOUND)


def is_internal_queue(name: str) -> bool:
    return name.startswith(INTERNAL_QUEUE_PREFIXES) or name.endswith(INTERNAL_QUEUE_SUFFIXES)


class QueueProbe:
    """Base: owns one lazily opened broker connection with bounded timeouts."""

    driver = "generic"
    supports_length = True

    def __init__(self, app: Celery, timeout: float) -> None:
        self.app = app
        self.timeout = timeout
        self._conn: Any = None

    def _transport_options(self) -> dict[str, Any]:
        return {}

    def _connect(self) -> Any:
        if self._conn is None:
            options = {**self._transport_options(), **self.app.conf.broker_transport_options}
            # heartbeat=0: we do not run the heartbeat loop; polls keep the connection busy.
            conn = self.app.connection_for_read(
                connect_timeout=self.timeout, heartbeat=0, transport_options=options
            )
            try:
                conn.connect()
            except self.errors(conn) as exc:
                conn.release()
                raise ProbeError(describe_error(exc)) from exc
            self._conn = conn
        return self._conn

    @staticmethod
    def errors(conn: Any) -> tuple[type[BaseException], ...]:
        return (
            *conn.connection_errors,
            *conn.channel_errors,
            kombu.exceptions.OperationalError,
            OSError,
        )

    def read(self, queues: Sequence[str]) -> QueueReading:
        """Lengths (and what else the broker tells) of `queues`; ProbeError if unreachable."""
        conn = self._connect()
        try:
            return self._read(conn, queues)
        except self.errors(conn) as exc:
            self.close()
            raise ProbeError(describe_error(exc)) from exc

    def _read(self, conn: Any, queues: Sequence[str]) -> QueueReading:
        raise NotImplementedError

    def discover(self) -> tuple[str, ...]:
        """Task queues the broker itself knows of; most transports cannot list them."""
        return ()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.release()
            except self.errors(conn) as exc:
                log.debug("closing the poll connection: %s", describe_error(exc))


class RedisQueueProbe(QueueProbe):
    """Redis, rediss and sentinel, with priorities, key prefix and the unacked hash."""

    driver = "redis"

    def __init__(self, app: Celery, timeout: float, discover_bindings: bool = False) -> None:
        super().__init__(app, timeout)
        self.discover_bindings = discover_bindings
        # exchange -> routing key -> queues, from kombu's binding sets; read when an unacked
        # message names an exchange other than the default one.
        self._bindings: dict[str, dict[str, list[str]]] = {}

    def _transport_options(self) -> dict[str, Any]:
        return {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}

    def _client(self, conn: Any) -> Any:
        import redis

        channel = conn.default_channel
        # A plain client on kombu's pool (host, TLS, sentinel master already resolved): kombu's
        # prefixing client prefixes some commands and not others, so we prefix every key here.
        return channel, redis.Redis(connection_pool=channel.pool)

    @staticmethod
    def queue_keys(channel: Any, queue: str) -> list[str]:
        """The keys of every priority sub-list of `queue`, as kombu names them."""
        prefix, sep = channel.global_keyprefix, channel.sep
        return [
            f"{prefix}{queue}{sep}{step}" if step else f"{prefix}{queue}"
            for step in channel.priority_steps
        ]

    def _read(self, conn: Any, queues: Sequence[str]) -> QueueReading:
        channel, client = self._client(conn)
        prefix = channel.global_keyprefix
        exchanges = sorted(self._bindings)
        per_queue = len(channel.priority_steps)
        keys = [key for queue in queues for key in self.queue_keys(channel, queue)]
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(key)
            for key in keys:
                pipe.lindex(key, -1)  # the end kombu pops from: the sub-list's oldest message
            pipe.hvals(f"{prefix}{channel.unacked_key}")
            for exchange in exchanges:
                pipe.smembers(f"{prefix}{channel.keyprefix_queue % (exchange,)}")
            # A key of another type answers WRONGTYPE; kombu counts that as 0 and so do we.
            results = pipe.execute(raise_on_error=False)
        lengths: dict[str, int] = {}
        for index, queue in enumerate(queues):
            sizes = results[index * per_queue : (index + 1) * per_queue]
            lengths[queue] = sum(size for size in sizes if isinstance(size, int))
        heads: dict[str, tuple[BrokerHead, ...]] = {}
        for index, queue in enumerate(queues):
            raw = results[len(keys) + index * per_queue : len(keys) + (index + 1) * per_queue]
            heads[queue] = tuple(head for head in map(parse_head, raw) if head is not None)
        offset = 2 * len(keys)
        unacked_values = results[offset]
        for exchange, members in zip(exchanges, results[offset + 1 :], strict=True):
            self._bindings[exchange] = self._parse_bindings(channel.sep, members)
        unacked_ids: set[str] = set()
        routes = self._unacked_routes(unacked_values, unacked_ids)
        new = {exchange for exchange, _ in routes if exchange and exchange not in self._bindings}
        if new:
            self._load_bindings(channel, client, new)
        unacked = dict.fromkeys(queues, 0)
        for (exchange, routing_key), count in routes.items():
            queue = self._queue_for(exchange, routing_key)
            if queue in unacked:
                unacked[queue] += count
        # Without ack emulation kombu keeps no unacked hash: its emptiness would prove nothing.
        ids = frozenset(unacked_ids) if getattr(channel, "ack_emulation", True) else None
        return QueueReading(lengths, unacked, heads=heads, unacked_ids=ids)

    @staticmethod
    def _unacked_routes(values: Any, ids: set[str] | None = None) -> dict[tuple[str, str], int]:
        """(exchange, routing key) -> messages, from kombu's `[message, exchange, key]` JSON;
        the messages' task ids go into `ids` if given."""
        routes: dict[tuple[str, str], int] = {}
        if not isinstance(values, list):
            return routes
        for raw in values:
            try:
                message, exchange, routing_key = json.loads(raw)
            except (ValueError, TypeError):
                continue
            route = (str(exchange or ""), str(routing_key or ""))
            routes[route] = routes.get(route, 0) + 1
            if ids is not None:
                task_id = message_headers(message).get("id")
                if isinstance(task_id, str):
                    ids.add(task_id)
        return routes

    @staticmethod
    def _parse_bindings(sep: str, members: Any) -> dict[str, list[str]]:
        table: dict[str, list[str]] = {}
        if not isinstance(members, (set, list)):
            return table
        for member in members:
            text = member.decode() if isinstance(member, bytes) else str(member)
            parts = text.split(sep)
            if len(parts) == 3 and parts[2]:
                table.setdefault(parts[0], []).append(parts[2])
        for targets in table.values():
            targets.sort()
        return table

    def _load_bindings(self, channel: Any, client: Any, exchanges: Iterable[str]) -> None:
        names = sorted(exchanges)
        prefix = channel.global_keyprefix
        with client.pipeline(transaction=False) as pipe:
            for exchange in names:
                pipe.smembers(f"{prefix}{channel.keyprefix_queue % (exchange,)}")
            results = pipe.execute(raise_on_error=False)
        for exchange, members in zip(names, results, strict=True):
            self._bindings[exchange] = self._parse_bindings(channel.sep, members)

    def _queue_for(self, exchange: str, routing_key: str) -> str:
        # The default exchange routes by queue name; Celery's own direct exchanges bind the
        # queue under its own name, so the routing key is the fallback when no binding says.
        if exchange:
            targets = self._bindings.get(exchange, {}).get(routing_key)
            if targets:
                return targets[0]
        return routing_key

    def discover(self) -> tuple[str, ...]:
        """Queues bound in kombu's `_kombu.binding.*` sets (if switched on)."""
        if not self.discover_bindings:
            return ()
        conn = self._connect()
        try:
            channel, client = self._client(conn)
            prefix = channel.global_keyprefix
            pattern = f"{prefix}{channel.keyprefix_queue % ('*',)}"
            head = f"{prefix}{channel.keyprefix_queue % ('',)}"
            exchanges = []
            for key in client.scan_iter(match=pattern, count=1000):
                name = (key.decode() if isinstance(key, bytes) else str(key))[len(head) :]
                if name not in INTERNAL_EXCHANGES:
                    exchanges.append(name)
            self._load_bindings(channel, client, exchanges)
        except self.errors(conn) as exc:
            self.close()
            raise ProbeError(describe_error(exc)) from exc
        found = {
            queue
            for exchange in exchanges
            for targets in self._bindings.get(exchange, {}).values()
            for queue in targets
            if not is_internal_queue(queue)
        }
        return tuple(sorted(found))


class AmqpQueueProbe(QueueProbe):
    """RabbitMQ: passive queue_declare per queue on a channel of its own."""

    driver = "amqp"

    def _transport_options(self) -> dict[str, Any]:
        return {"read_timeout": self.timeout, "write_timeout": self.timeout}

    def _read(self, conn: Any, queues: Sequence[str]) -> QueueReading:
        lengths: dict[str, int] = {}
        consumers: dict[str, int] = {}
        # Open a channel even with no queues to read: that round trip is what tells a dead
        # node from a quiet one, so the poll never reports success through an outage.
        channel: Any = conn.channel()
        try:
            for queue in queues:
                if channel is None:
                    channel = conn.channel()
                try:
                    ok = channel.queue_declare(queue=queue, passive=True)
                except conn.channel_errors as exc:
                    # The broker closed this channel; the next queue gets a fresh one.
                    channel = None
                    if is_not_found(exc):
                        lengths[queue] = consumers[queue] = 0
                    else:
                        log.debug("queue %r not readable: %s", queue, describe_error(exc))
                    continue
                lengths[queue] = int(ok.message_count)
                consumers[queue] = int(ok.consumer_count)
        finally:
            if channel is not None:
                channel.close()
        return QueueReading(lengths=lengths, consumers=consumers)


class KombuQueueProbe(QueueProbe):
    """Any other kombu transport, through its passive queue_declare."""

    def __init__(self, app: Celery, timeout: float, driver: str, supported: bool) -> None:
        super().__init__(app, timeout)
        self.driver = driver
        self.supports_length = supported

    def _read(self, conn: Any, queues: Sequence[str]) -> QueueReading:
        if not self.supports_length:
            return QueueReading(lengths={})
        channel = conn.default_channel
        lengths: dict[str, int] = {}
        for queue in queues:
            try:
                ok = channel.queue_declare(queue=queue, passive=True)
            except conn.channel_errors as exc:
                if is_not_found(exc):
                    lengths[queue] = 0
                else:
                    log.debug("queue %r not readable: %s", queue, describe_error(exc))
                continue
            lengths[queue] = int(ok.message_count)
        return QueueReading(lengths=lengths)


def make_probe(app: Celery, config: Config, discover_bindings: bool = False) -> QueueProbe:
    """The probe for the app's broker transport, with `config.broker_timeout` on its I/O."""
    timeout = config.broker_timeout
    conn = app.connection_for_read()
    try:
        transport = conn.transport
    finally:
        conn.release()
    driver = str(getattr(transport, "driver_type", "unknown"))
    if driver == "redis":
        return RedisQueueProbe(app, timeout, discover_bindings)
    if driver == "amqp":
        return AmqpQueueProbe(app, timeout)
    channel_cls = getattr(transport, "Channel", None)
    # Virtual transports inherit a size call that always answers 0: that is "cannot tell",
    # not "empty", so such a transport reports no lengths at all.
    supported = (
        isinstance(channel_cls, type)
        and issubclass(channel_cls, virtual.Channel)
        and channel_cls._size is not virtual.Channel._size
    )
    return KombuQueueProbe(app, timeout, driver, supported)
