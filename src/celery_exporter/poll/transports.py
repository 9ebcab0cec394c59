"""The queue probe for a broker's transport: Redis, RabbitMQ, or kombu's generic one.

Called once at start-up (and by `check`); the probe it returns is used from the poll thread.
"""

from __future__ import annotations

from celery import Celery
from kombu.transport import virtual

from ..config import Config
from .amqp_queues import AmqpQueueProbe, KombuQueueProbe
from .queue_probe import QueueProbe
from .redis_queues import RedisQueueProbe


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
