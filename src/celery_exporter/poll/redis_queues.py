"""Queue lengths on Redis (redis, rediss, sentinel), as kombu lays its queues out there.

One pipelined round trip per poll for every queue's priority sub-lists and the `unacked` hash,
keyed exactly as kombu keys them (`sep`, `priority_steps`, `global_keyprefix`, `unacked_key`
come from kombu's channel, so transport options apply). The same round trip reads the oldest
message of each sub-list (kombu LPUSHes and BRPOPs, so that is LINDEX -1) for its headers' task
id, ETA and expiry; the body (args) is never read. Optionally, queues are discovered from
kombu's `_kombu.binding.*` sets.

An error in place of an answer (an ACL `NOPERM`, say) is never read as 0: the queue (or the
unacked hash) is left out of the reading and the reading carries the error, so the poll fails
and the log says which ACL rules (commands, key patterns) this user lacks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery

from ..faults.refusals import REDIS_COMMAND, Refused
from ..state.broker_evidence import BrokerHead, message_headers, parse_head
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
        self._binding_errors: list[tuple[str, str, BaseException]] = []  # from discover()

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
        unacked_key = f"{prefix}{channel.unacked_key}"
        binding_keys = [f"{prefix}{channel.keyprefix_queue % (e,)}" for e in exchanges]
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(key)
            for key in keys:
                pipe.lindex(key, -1)  # the end kombu pops from: the sub-list's oldest message
            pipe.hvals(unacked_key)
            for key in binding_keys:
                pipe.smembers(key)
            # A key of another type answers WRONGTYPE; kombu counts that as 0 and so do we.
            results = pipe.execute(raise_on_error=False)
        failures = ReadFailures(channel)
        failures.errors += self._binding_errors
        self._binding_errors = []
        lengths: dict[str, int] = {}
        heads: dict[str, tuple[BrokerHead, ...]] = {}
        for index, queue in enumerate(queues):
            span = slice(index * per_queue, (index + 1) * per_queue)
            sizes, raw = results[: len(keys)][span], results[len(keys) : 2 * len(keys)][span]
            answers = [("llen", key, r) for key, r in zip(keys[span], sizes, strict=True)]
            answers += [("lindex", key, r) for key, r in zip(keys[span], raw, strict=True)]
            if failures.add(f"{QUEUE}'{queue}'", answers):
                continue  # no length rather than a false 0, and no heads to age it by
            lengths[queue] = sum(size for size in sizes if isinstance(size, int))
            heads[queue] = tuple(head for head in map(parse_head, raw) if head is not None)
        offset = 2 * len(keys)
        unacked_values = results[offset]
        unacked_ok = not failures.add("the unacked hash", [("hvals", unacked_key, unacked_values)])
        for exchange, key, members in zip(
            exchanges, binding_keys, results[offset + 1 :], strict=True
        ):
            if not failures.add("the binding sets", [("smembers", key, members)]):
                self._bindings[exchange] = self._parse_bindings(channel.sep, members)
        unacked_ids: set[str] = set()
        routes = self._unacked_routes(unacked_values, unacked_ids)
        new = {exchange for exchange, _ in routes if exchange and exchange not in self._bindings}
        if new:
            failures.errors += self._load_bindings(channel, client, new)
        unacked: dict[str, int] | None = dict.fromkeys(queues, 0)
        for (exchange, routing_key), count in routes.items():
            queue = self._queue_for(exchange, routing_key)
            if unacked is not None and queue in unacked:
                unacked[queue] += count
        # Without ack emulation kombu keeps no unacked hash: its emptiness would prove nothing.
        ack_emulation = getattr(channel, "ack_emulation", True)
        ids = frozenset(unacked_ids) if ack_emulation and unacked_ok else None
        if not unacked_ok:
            unacked = None  # unknown, not 0
        return QueueReading(lengths, unacked, heads=heads, unacked_ids=ids, error=failures.error())

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

    def _load_bindings(
        self, channel: Any, client: Any, exchanges: Iterable[str]
    ) -> list[tuple[str, str, BaseException]]:
        """Read the binding sets of `exchanges`; the refused ones as ReadFailures.errors."""
        names = sorted(exchanges)
        keys = [f"{channel.global_keyprefix}{channel.keyprefix_queue % (e,)}" for e in names]
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.smembers(key)
            results = pipe.execute(raise_on_error=False)
        failures = ReadFailures(channel)
        for exchange, key, members in zip(names, keys, results, strict=True):
            if not failures.add("the binding sets", [("smembers", key, members)]):
                self._bindings[exchange] = self._parse_bindings(channel.sep, members)
        return failures.errors

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
            # A refused set is told by the next read (one poll, one outcome).
            self._binding_errors += self._load_bindings(channel, client, exchanges)
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


QUEUE = "queue "  # how a refused queue is named: "queue 'jobs'"
GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _glob_escape(text: str) -> str:
    return GLOB_SPECIAL.sub(r"\\\1", text)


class ReadFailures:
    """The answers of one read that are errors, and the ACL rules that would have allowed them."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.errors: list[tuple[str, str, BaseException]] = []  # (what, rule, error)

    def add(self, what: str, answers: Iterable[tuple[str, str, Any]]) -> bool:
        """Note the errors among `answers` ((command, key, result)); True if there were any."""
        failed = False
        for command, key, result in answers:
            if not isinstance(result, Exception) or str(result).startswith("WRONGTYPE"):
                continue
            failed = True
            text = str(result).lower()  # Redis 7.2 reworded these: "No permissions to access a key"
            if REDIS_COMMAND.search(text):
                rule = f"+{command}"
            elif "no permissions to access" in text and "key" in text:
                rule = f"~{self._pattern(key)}"
            else:
                rule = ""  # not a refusal (say, LOADING): no rule would help
            self.errors.append((what, rule, result))
        return failed

    def _pattern(self, key: str) -> str:
        """An ACL key pattern for `key`: the unacked hash itself, every binding set, or a
        queue's whole family of priority sub-lists (`q`, `q\\x06\\x163`, ...)."""
        channel = self.channel
        bindings = f"{channel.global_keyprefix}{channel.keyprefix_queue % ('',)}"
        if key.startswith(bindings):
            return _glob_escape(bindings) + "*"
        if key == f"{channel.global_keyprefix}{channel.unacked_key}":
            return _glob_escape(key)
        return _glob_escape(key.split(channel.sep, 1)[0]) + "*"

    def error(self) -> BaseException | None:
        """A Refused naming what was refused and the rules to grant (from the first refusal),
        else the first other error; None if the read was whole."""
        if not self.errors:
            return None
        refusals = [(what, rule, error) for what, rule, error in self.errors if rule]
        if not refusals:
            return self.errors[0][2]
        whats = list(dict.fromkeys(what for what, _, _ in refusals))
        queues = [what for what in whats if what.startswith(QUEUE)]
        named = [what[len(QUEUE) :] for what in queues]
        if len(named) > 3:
            named = [*named[:3], f"{len(named) - 3} more"]
        if len(queues) > 1:
            whats = [f"queues {', '.join(named)}", *(w for w in whats if w not in queues)]
        rules = list(dict.fromkeys(rule for _, rule, _ in refusals))
        rules.sort(key=lambda rule: not rule.startswith("+"))  # commands, then keys
        whats_text = ", ".join(whats)
        refused = Refused(whats_text, rules)
        refused.__cause__ = refusals[0][2]
        return refused
