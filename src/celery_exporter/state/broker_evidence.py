"""What the broker poll tells about waiting tasks, for the oldest task's age (state/queue_age.py).

On Redis the poll reads the oldest message of each priority sub-list and the unacked hash; from
a message only its headers are used (task id, ETA, expiry): never its body, which holds the
task's arguments. `HeadWatch` remembers, in the poll thread, since when each of those messages
has been the oldest, and `BrokerEvidence` carries one poll's reading to the tracker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .event_fields import BadEvent, eta_timestamp


@dataclass(frozen=True, slots=True)
class BrokerHead:
    """The oldest message of one Redis priority sub-list, from its headers (never its body)."""

    key: str  # the task id, else kombu's delivery tag: what identifies it from poll to poll
    task_id: str | None
    eta: float | None
    expires: float | None
    first_seen: float = 0.0  # exporter clock; set by HeadWatch


@dataclass(frozen=True)
class BrokerEvidence:
    """What the latest fresh broker poll says, for the queues it could read."""

    read_at: float  # the poll started here: a task-sent seen before was in the broker by then
    lengths: Mapping[str, int]
    heads: Mapping[str, tuple[BrokerHead, ...]] | None = None  # Redis only
    unacked_ids: frozenset[str] | None = None  # Redis only: task ids in kombu's unacked hash


def timestamp_or_none(value: object) -> float | None:
    """An ETA or expiry as Unix time; None if absent or unreadable (it must not cost the event)."""
    try:
        return eta_timestamp(value)
    except BadEvent:
        return None


class HeadWatch:
    """Remembers since when each Redis sub-list's oldest message has been there (poll thread)."""

    def __init__(self) -> None:
        self._first_seen: dict[tuple[str, str], float] = {}

    def stamp(
        self, heads: Mapping[str, tuple[BrokerHead, ...]], now: float
    ) -> dict[str, tuple[BrokerHead, ...]]:
        seen: dict[tuple[str, str], float] = {}
        stamped: dict[str, tuple[BrokerHead, ...]] = {}
        for queue, queue_heads in heads.items():
            out = []
            for head in queue_heads:
                first = self._first_seen.get((queue, head.key), now)
                seen[(queue, head.key)] = first
                out.append(replace(head, first_seen=first))
            stamped[queue] = tuple(out)
        self._first_seen = seen  # only current heads: bounded by queues x priority steps
        return stamped


def message_headers(message: Any) -> dict[str, Any]:
    """The `headers` of a kombu message dict (a Celery task's id, eta, expires...)."""
    headers = message.get("headers") if isinstance(message, dict) else None
    return headers if isinstance(headers, dict) else {}


def parse_head(raw: Any) -> BrokerHead | None:
    """A kombu Redis message (JSON) -> its identity, ETA and expiry, from the headers only."""
    if raw is None or isinstance(raw, Exception):
        return None
    try:
        message = json.loads(raw)
    except (ValueError, TypeError):
        return None
    headers = message_headers(message)
    task_id = headers.get("id") if isinstance(headers.get("id"), str) else None
    properties = message.get("properties") if isinstance(message, dict) else None
    tag = properties.get("delivery_tag") if isinstance(properties, dict) else None
    key = task_id or (str(tag) if tag is not None else None)
    if key is None:
        return None
    eta, expires = timestamp_or_none(headers.get("eta")), timestamp_or_none(headers.get("expires"))
    return BrokerHead(key, task_id, eta, expires)
