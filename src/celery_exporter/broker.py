"""Queue probes per broker transport, and the choice among them (`make_probe`).

Called only from the poll thread, never from a scrape. Each probe keeps one broker connection
(opened with the configured timeouts, dropped on the first error) and turns the transport's own
errors into ProbeError, so the poller records a failed poll instead of crashing.

- Redis (redis, rediss, sentinel): redis_queues.py.
- AMQP (RabbitMQ): a passive queue_declare per queue gives ready messages and consumers. A
  missing queue closes the channel with 404; it reads 0 and a fresh channel serves the rest.
  A queue this user may not use (403, RabbitMQ 4.2.6 and later check passive declares) is
  left out and fails the poll, so it reads neither 0 nor "fine".
  Unacked messages are not available over AMQP (only the management API has them).
- Any other kombu transport (SQS, ...): kombu's own passive queue_declare, whose message_count
  comes from the transport's size call. Transports without one report no lengths.

The probe contract (QueueProbe, QueueReading, ProbeError) lives in queue_probe.py and is
re-exported here, where the poller and the tests have always imported it from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu.transport import virtual

from .config import Config
from .queue_probe import (
    ProbeError,
    QueueProbe,
    QueueReading,
    describe_error,
    is_access_refused,
    is_internal_queue,
    is_not_found,
)
from .redis_queues import RedisQueueProbe

__all__ = [
    "AmqpQueueProbe",
    "KombuQueueProbe",
    "ProbeError",
    "QueueProbe",
    "QueueReading",
    "RedisQueueProbe",
    "describe_error",
    "is_internal_queue",
    "make_probe",
]

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
