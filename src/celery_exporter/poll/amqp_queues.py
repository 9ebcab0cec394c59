"""Queue lengths on RabbitMQ, and on any other kombu transport (SQS, ...).

Called only from the poll thread, never from a scrape. Each probe keeps one broker connection
(opened with the configured timeouts, dropped on the first error) and turns the transport's own
errors into ProbeError, so the poller records a failed poll instead of crashing.

- AMQP (RabbitMQ): a passive queue_declare per queue gives ready messages and consumers. A
  missing queue closes the channel with 404; it reads 0 and a fresh channel serves the rest.
  A queue this user may not use (403, RabbitMQ 4.2.6 and later check passive declares) is
  left out and fails the poll, so it reads neither 0 nor "fine".
  Unacked messages are not available over AMQP (only the management API has them).
- Any other kombu transport: kombu's own passive queue_declare, whose message_count comes from
  the transport's size call. Transports without one report no lengths.

Redis is in poll/redis_queues.py; the probe contract in poll/queue_probe.py; the choice among the
probes in transports.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery

from .queue_probe import (
    QueueProbe,
    QueueReading,
    describe_error,
    is_access_refused,
    is_not_found,
)

log = logging.getLogger(__name__)


class AmqpQueueProbe(QueueProbe):
    """RabbitMQ: passive queue_declare per queue on a channel of its own."""

    driver = "amqp"

    def _transport_options(self) -> dict[str, Any]:
        return {"read_timeout": self.timeout, "write_timeout": self.timeout}

    def _read(self, conn: Any, queues: Sequence[str]) -> QueueReading:
        lengths: dict[str, int] = {}
        consumers: dict[str, int] = {}
        refused: BaseException | None = None
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
                    elif is_access_refused(exc):
                        refused = refused or exc
                    else:
                        log.debug("queue %r not readable: %s", queue, describe_error(exc))
                    continue
                lengths[queue] = int(ok.message_count)
                consumers[queue] = int(ok.consumer_count)
        finally:
            if channel is not None:
                channel.close()
        return QueueReading(lengths=lengths, consumers=consumers, error=refused)


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
        refused: BaseException | None = None
        for queue in queues:
            try:
                ok = channel.queue_declare(queue=queue, passive=True)
            except conn.channel_errors as exc:
                if is_not_found(exc):
                    lengths[queue] = 0
                elif is_access_refused(exc):
                    refused = refused or exc
                else:
                    log.debug("queue %r not readable: %s", queue, describe_error(exc))
                continue
            lengths[queue] = int(ok.message_count)
        return QueueReading(lengths=lengths, error=refused)
