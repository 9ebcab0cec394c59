"""The report's time range from --since, or --start and --end; bad input raises RangeError."""

from __future__ import annotations

import re
from datetime import datetime, timezone

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class RangeError(ValueError):
    """A range the report cannot use; one line for the operator, exit 2."""


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `24h`, `7d`, `2w` -> seconds."""
    match = DURATION.match(text.strip())
    if not match:
        raise RangeError(f"--since {text!r}: expected a number and a unit s, m, h, d or w (24h)")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


def parse_time(option: str, text: str) -> float:
    """RFC 3339 / ISO 8601 (a time without a zone is UTC) or Unix seconds -> Unix seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(
            f"{option} {text!r}: expected a time like 2024-05-01T12:00:00Z or Unix seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def resolve(
    since: str | None, start: str | None, end: str | None, now: float
) -> tuple[float, float]:
    """(start, end) in Unix seconds. --since counts back from --end (default now)."""
    if since and start:
        raise RangeError("give --since or --start, not both")
    end_at = parse_time("--end", end) if end else now
    if since:
        seconds = parse_duration(since)
        if seconds <= 0:
            raise RangeError(f"--since {since!r} must be longer than 0")
        start_at = end_at - seconds
    elif start:
        start_at = parse_time("--start", start)
    else:
        start_at = end_at - 86400.0
    if start_at >= end_at:
        raise RangeError("the range is empty: --start must be before --end")
    if start_at > now:
        raise RangeError("the range starts in the future")
    return start_at, end_at


def iso(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )
