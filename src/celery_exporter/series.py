"""Label-keyed series storage for the tracker: histograms and cardinality caps.

Plain dicts and lists, no prometheus_client objects: one event costs a dict lookup and an
increment, and a scrape copies the tables once.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from .metrics import OVERFLOW

Labels = tuple[str, ...]


class HistogramTable:
    """Per-label-set bucket counts (not cumulative) with the sum in the last slot."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.bounds) + 1)
        # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive).
        row[bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def copy(self) -> dict[Labels, list[float]]:
        return {labels: row.copy() for labels, row in self.series.items()}

    def drop(self, keep: Callable[[Labels], bool]) -> None:
        self.series = {labels: row for labels, row in self.series.items() if keep(labels)}


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
