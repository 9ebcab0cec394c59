"""Label-keyed series storage for the tracker: worker-side counters, histograms, caps.

Plain dicts and lists, no prometheus_client objects: one event costs an increment, and a
scrape copies the tables once. A worker-side label set (name, hostname, queue) is one
WorkerSeries object, which the in-flight record of a task keeps: the task's later events count
through it without hashing the label tuple again (a tuple's hash is not cached, and was the
largest single cost of an event).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

from .metrics import OVERFLOW

Labels = tuple[str, ...]

# Counters zero-initialised when a worker first reports a (name, hostname, queue) label set,
# so increase() sees the first real increment. Not `failed`: its exception is not known yet.
ZERO_INITIALISED = ("received", "started", "succeeded", "rejected", "revoked", "retried")
RECEIVED, STARTED, SUCCEEDED, REJECTED, REVOKED, RETRIED = range(len(ZERO_INITIALISED))


class HistogramTable:
    """Per-label-set bucket counts (not cumulative) with the sum in the last slot."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[Labels, list[float]] = {}

    def row(self, labels: Labels) -> list[float]:
        """The row of `labels`, created empty if need be. Callers may keep it and observe
        into it directly (observe_into) until drop() leaves it out."""
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.bounds) + 1)
        return row

    def observe(self, labels: Labels, value: float) -> None:
        observe_into(self.row(labels), self.bounds, value)

    def copy(self) -> dict[Labels, list[float]]:
        return {labels: row.copy() for labels, row in self.series.items()}

    def drop(self, keep: Callable[[Labels], bool]) -> None:
        self.series = {labels: row for labels, row in self.series.items() if keep(labels)}


def observe_into(row: list[float], bounds: tuple[float, ...], value: float) -> None:
    # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive).
    row[bisect_left(bounds, value)] += 1
    row[-1] += value


@dataclass(slots=True, eq=False)
class WorkerSeries:
    """The series of one worker-side label set: its counters (indexed by RECEIVED...), and
    its rows of the runtime and queue-wait histograms once it has any."""

    labels: Labels
    counts: list[int]
    runtime: list[float] | None = None
    wait: list[float] | None = None
    live: bool = True  # False once forgotten: a record holding it must look its labels up again


class WorkerSeriesTable:
    """Labels -> WorkerSeries, in the order first seen (the order they are exported in)."""

    def __init__(self) -> None:
        self.series: dict[Labels, WorkerSeries] = {}

    def get(self, labels: Labels) -> WorkerSeries:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = WorkerSeries(labels, [0] * len(ZERO_INITIALISED))
        return series

    def counts(self) -> dict[str, dict[Labels, int]]:
        """kind -> labels -> count, for every zero-initialised kind."""
        return {
            kind: {labels: series.counts[index] for labels, series in self.series.items()}
            for index, kind in enumerate(ZERO_INITIALISED)
        }

    def drop(self, keep: Callable[[Labels], bool]) -> None:
        kept = {}
        for labels, series in self.series.items():
            if keep(labels):
                kept[labels] = series
            else:
                series.live = False
        self.series = kept


class LabelCap:
    """Admits at most `limit` distinct values of one label; the rest become __overflow__."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.known: set[str] = set()
        self.overflowed = 0

    def admit(self, value: str) -> str:
        if value in self.known:
            return value
        if len(self.known) < self.limit:
            self.known.add(value)
            return value
        self.overflowed += 1
        return OVERFLOW

    def release(self, value: str) -> None:
        self.known.discard(value)
