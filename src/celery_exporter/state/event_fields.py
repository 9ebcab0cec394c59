"""Field access and normalisation for Celery events: node names, exception classes, times.

Pure functions, no state. Raw event dicts are untrusted input: anything here may raise
BadEvent with a short reason, which the tracker counts in exporter_event_errors_total.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

# Label values the exporter makes up itself; documented in the README.
UNKNOWN = "unknown"  # a task name or exception class that the events did not tell us
OVERFLOW = "__overflow__"  # every value past a cardinality cap is folded into this one


MAX_LABEL_LENGTH = 200  # longer label values are cut: a 1 MB task name must not reach Prometheus
# An event claiming more than a year of runtime or wait is broken, not slow.
MAX_DURATION = 366 * 24 * 3600.0

_EXCEPTION_CLASS = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*[(:]?")


class BadEvent(ValueError):
    """An event that cannot be used; `reason` becomes the error counter's label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def host_of(nodename: str) -> str:
    """`celery@pod-1` -> `pod-1`: the drop-in `hostname` label."""
    return nodename.rpartition("@")[2] or nodename


def label_text(value: Any, field: str) -> str:
    """A string fit to be a label value, or BadEvent."""
    if not isinstance(value, str) or not value:
        raise BadEvent(f"bad_{field}")
    text: str = value[:MAX_LABEL_LENGTH]
    if not text.isascii():
        # JSON can carry a lone surrogate ("\ud800"); such a label could never be written
        # out as UTF-8 and would turn every later scrape into an error.
        try:
            text.encode()
        except UnicodeEncodeError:
            raise BadEvent(f"bad_{field}") from None
    return text


def exception_class(exception: Any) -> str:
    """`ValueError('x')` -> `ValueError`; `mod.Err: msg` -> `mod.Err`; else `unknown`."""
    if not isinstance(exception, str):
        return UNKNOWN
    match = _EXCEPTION_CLASS.match(exception)
    if match is None:
        return UNKNOWN
    return match.group(1)[:MAX_LABEL_LENGTH]


def timestamp_of(event: dict[str, Any], now: float) -> float:
    """The sender's Unix time. Never localised: time.time() is zone-free, so durations
    between two hosts in different zones are right without undoing Celery's utcoffset shift.
    A time more than MAX_DURATION from the exporter's clock is a broken clock: rejected, so
    that it cannot put decades into a histogram's sum."""
    value = event.get("timestamp")
    if type(value) is float and abs(value - now) <= MAX_DURATION:  # the common case, fast
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadEvent("bad_timestamp")
    if not abs(value - now) <= MAX_DURATION:  # also rejects NaN and infinities
        raise BadEvent("bad_timestamp")
    return float(value)


def worker_time(event: dict[str, Any], now: float) -> float:
    """The sender's clock, or the exporter's where the event has no usable timestamp."""
    try:
        return timestamp_of(event, now)
    except BadEvent:
        return now


def duration(value: Any) -> float:
    """A runtime in seconds, validated: negative, absurd or non-numeric values raise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadEvent("bad_runtime")
    if not 0.0 <= value <= MAX_DURATION:  # also rejects NaN
        raise BadEvent("bad_runtime")
    return float(value)


def eta_timestamp(value: Any) -> float | None:
    """The ETA of a task as Unix time; None if absent. A naive ETA is taken as UTC, which is
    what Celery sends with enable_utc (its default)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadEvent("bad_eta")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadEvent("bad_eta") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def int_field(event: dict[str, Any], field: str) -> int | None:
    value = event.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadEvent(f"bad_{field}")
    return value


def loadavg_of(event: dict[str, Any]) -> tuple[float, float, float] | None:
    value = event.get("loadavg")
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise BadEvent("bad_loadavg")
    try:
        one, five, fifteen = (float(v) for v in value)
    except (TypeError, ValueError):
        raise BadEvent("bad_loadavg") from None
    return one, five, fifteen


# Why a task-revoked was sent, from its `expired` and `terminated` flags (the worker's
# _announce_revoked): a task that expired before it ran, one killed while running, or any
# other revoke (by id, before it started).
REVOKE_REASONS = ("expired", "terminated", "other")


def revoke_reason(event: dict[str, Any]) -> int:
    """The index in REVOKE_REASONS of a task-revoked's reason."""
    if event.get("expired") is True:
        return 0
    if event.get("terminated") is True:
        return 1
    return 2
