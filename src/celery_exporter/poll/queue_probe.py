"""The queue probe contract: a reading, the error a failed poll raises, and the base class
that owns one lazily opened, time-bounded broker connection. The transports' probes are in
redis_queues.py (Redis, rediss, Sentinel) and amqp_queues.py (RabbitMQ, any other kombu transport).
Called only from the poll thread, never from a scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kombu.exceptions
from celery import Celery

from ..state.broker_evidence import BrokerHead

log = logging.getLogger(__name__)

# Exchanges kombu and Celery use for their own plumbing; their queues are not task queues.
INTERNAL_EXCHANGES = frozenset({"celeryev", "celery.pidbox", "reply.celery.pidbox"})
INTERNAL_QUEUE_SUFFIXES = (".pidbox", ".celery.pidbox")
INTERNAL_QUEUE_PREFIXES = ("celeryev.",)
NOT_FOUND = 404
ACCESS_REFUSED = 403


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
    # Set when the broker answered but refused (or failed) part of the reading, e.g. this user
    # may not read some queue: those queues are absent from `lengths` (never a false 0), and the
    # poll counts as failed. The broker's error, for faults/classify.py to put in words.
    error: BaseException | None = None


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def is_not_found(exc: BaseException) -> bool:
    # py-amqp sets reply_code 404 (int); kombu's virtual transports pass the string "404".
    return str(getattr(exc, "reply_code", "")) == str(NOT_FOUND)


def is_access_refused(exc: BaseException) -> bool:
    """RabbitMQ's 403: this user may not use the resource (on a passive declare since 4.2.6)."""
    return str(getattr(exc, "reply_code", "")) == str(ACCESS_REFUSED)


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
