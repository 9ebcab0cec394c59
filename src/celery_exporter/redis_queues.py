"""Queue lengths on Redis (redis, rediss, sentinel), as kombu lays its queues out there.

One pipelined round trip per poll for every queue's priority sub-lists and the `unacked` hash,
keyed exactly as kombu keys them (`sep`, `priority_steps`, `global_keyprefix`, `unacked_key`
come from kombu's channel, so transport options apply). The same round trip reads the oldest
message of each sub-list (kombu LPUSHes and BRPOPs, so that is LINDEX -1) for its headers' task
id, ETA and expiry; the body (args) is never read. Optionally, queues are discovered from
kombu's `_kombu.binding.*` sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery

from .queue_evidence import BrokerHead, message_headers, parse_head
from .queue_probe import (
    INTERNAL_EXCHANGES,
    ProbeError,
    QueueProbe,
    QueueReading,
    describe_error,
    is_internal_queue,
)


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
