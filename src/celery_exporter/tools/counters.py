"""Exact counts from raw Prometheus samples: counter resets, series born in the range, HA pairs.

PromQL's increase() extrapolates to the window's edges, so it returns 9.87 tasks where 10 ran.
Here the raw samples of each series are read instead and every step between two samples is
counted: a rise counts its difference, a fall is a counter reset (the exporter restarted) and
counts the new value, as rate() does. A restart the counter's fall cannot show (the new
process counted past the old value before its first scrape) is found from the exporter's
process_start_time_seconds, and the first sample after it counts in full. A series with no
sample before the range starts inside it (its first task was in the range), so its first value
counts from 0. Replicas of one exporter
(an HA pair, `instance` or `pod` apart) see the same stream: their increases are deduplicated
with max, as the shipped rules do with `max without (instance, pod)`, before anything is summed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from .prometheus import SampleStream

REPLICA_LABELS = frozenset({"instance", "pod"})
LabelKey = tuple[tuple[str, str], ...]


def increments(
    values: Sequence[tuple[float, float]], start: float, restarts: Sequence[float] = ()
) -> list[tuple[float, float]]:
    """(time, what the counter counted since its previous sample) for each sample after `start`.

    `values`: the counter's samples, oldest first. `restarts`: times at which the process
    exposing the counter (re)started.
    """
    previous, previous_at = 0.0, -math.inf
    found = []
    for at, value in values:
        restarted = any(previous_at < r <= at for r in restarts)
        if at > start:
            found.append((at, value - previous if value >= previous and not restarted else value))
        previous, previous_at = value, at
    return found


def increase(
    values: Sequence[tuple[float, float]], start: float, restarts: Sequence[float] = ()
) -> float:
    """What a counter counted after `start`."""
    return sum(counted for _, counted in increments(values, start, restarts))


def restart_times(series: Iterable[SampleStream]) -> dict[tuple[str, str], list[float]]:
    """(job, instance) -> start times seen in process_start_time_seconds samples."""
    found: dict[tuple[str, str], list[float]] = {}
    for s in series:
        key = (s["metric"].get("job", ""), s["metric"].get("instance", ""))
        found.setdefault(key, []).extend(sorted({v for _, v in s["values"]}))
    return found


def deduplicated(
    series: Iterable[SampleStream],
    start: float,
    restarts: dict[tuple[str, str], list[float]] | None = None,
) -> dict[LabelKey, float]:
    """Increase per label set, replicas folded with max (`max without (instance, pod)`)."""
    found: dict[LabelKey, float] = {}
    for s in series:
        key = tuple(sorted((k, v) for k, v in s["metric"].items() if k not in REPLICA_LABELS))
        process = (s["metric"].get("job", ""), s["metric"].get("instance", ""))
        counted = increase(s["values"], start, (restarts or {}).get(process, ()))
        found[key] = max(found.get(key, 0.0), counted)
    return found


def binned(
    series: Iterable[SampleStream],
    start: float,
    step: float,
    bins: int,
    restarts: dict[tuple[str, str], list[float]] | None = None,
) -> list[float]:
    """What all series counted in each of `bins` intervals of `step` seconds from `start`.

    Of the replicas of a label set, the one that counted most is used whole (its bins, not a
    max per bin: replicas scrape at different moments, so one task can land in neighbouring
    bins), so the bins add up to the deduplicated total.
    """
    chosen: dict[LabelKey, tuple[float, list[tuple[float, float]]]] = {}
    for s in series:
        key = tuple(sorted((k, v) for k, v in s["metric"].items() if k not in REPLICA_LABELS))
        process = (s["metric"].get("job", ""), s["metric"].get("instance", ""))
        steps = increments(s["values"], start, (restarts or {}).get(process, ()))
        total = sum(counted for _, counted in steps)
        if key not in chosen or total > chosen[key][0]:
            chosen[key] = (total, steps)
    out = [0.0] * bins
    for _, steps in chosen.values():
        for at, counted in steps:
            out[min(bins - 1, max(0, int((at - start) // step)))] += counted
    return out


def total_by(counts: dict[LabelKey, float], *labels: str) -> dict[tuple[str, ...], float]:
    """Sum the deduplicated counts by `labels` (`sum by (...)`)."""
    out: dict[tuple[str, ...], float] = {}
    for key, value in counts.items():
        named = dict(key)
        group = tuple(named.get(label, "") for label in labels)
        out[group] = out.get(group, 0.0) + value
    return out


def exact(value: float) -> int:
    """Counters of events are whole numbers; round away float noise from the sums."""
    return round(value)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """histogram_quantile over cumulative bucket counts {upper bound: count}, as Prometheus does.

    None when nothing was observed. A quantile in the +Inf bucket reads as the highest finite
    bound, as in Prometheus.
    """
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return bounds[-2] if len(bounds) > 1 else None
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return None


def bucket_counts(
    counts: dict[LabelKey, float], *labels: str
) -> dict[tuple[str, ...], dict[float, float]]:
    """Deduplicated `_bucket` increases -> {group: {le: count}} summed by `labels`."""
    out: dict[tuple[str, ...], dict[float, float]] = {}
    for key, value in counts.items():
        named = dict(key)
        group = tuple(named.get(label, "") for label in labels)
        le = float(named.get("le", "nan"))
        if math.isnan(le):
            continue
        per_le = out.setdefault(group, {})
        per_le[le] = per_le.get(le, 0.0) + value
    return out
