"""Label-keyed rows of the tracker's task series: worker-side counters, histograms, caps.

Plain dicts and lists, no prometheus_client objects: one event costs an increment, and a
scrape copies the tables once. A worker-side label set (name, hostname, queue) is one
TaskRow object, which the in-flight record of a task keeps: the task's later events count
through it without hashing the label tuple again (a tuple's hash is not cached, and was the
largest single cost of an event).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

from .event_fields import OVERFLOW

Labels = tuple[str, ...]

# Counters zero-initialised when a worker first reports a (name, hostname, queue) label set,
# so increase() sees the first real increment. Not `failed`: its exception is not known yet.
ZERO_INITIALISED = ("received", "started", "succeeded", "rejected", "revoked", "retried")
RECEIVED, STARTED, SUCCEEDED, REJECTED, REVOKED, RETRIED = range(len(ZERO_INITIALISED))


class HistogramTable:
    """Per-label-set bucket counts (not cumulative) with the sum in the last slot."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.rows: dict[Labels, list[float]] = {}

    def row(self, labels: Labels) -> list[float]:
        """The row of `labels`, created empty if need be. Callers may keep it and observe
        into it directly (observe_into) until drop() leaves it out."""
        row = self.rows.get(labels)
        if row is None:
            row = self.rows[labels] = [0.0] * (len(self.bounds) + 1)
        return row

    def observe(self, labels: Labels, value: float) -> None:
        observe_into(self.row(labels), self.bounds, value)

    def copy(self) -> dict[Labels, list[float]]:
        return {labels: row.copy() for labels, row in self.rows.items()}

    def drop(self, keep: Callable[[Labels], bool]) -> None:
        self.task_row = {labels: row for labels, row in self.rows.items() if keep(labels)}


def observe_into(row: list[float], bounds: tuple[float, ...], value: float) -> None:
    # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive).
    row[bisect_left(bounds, value)] += 1
    row[-1] += value


@dataclass(slots=True, eq=False)
class TaskRow:
    """The row of one worker-side label set: its counters (indexed by RECEIVED...), and
    its rows of the runtime and queue-wait histograms once it has any."""

    labels: Labels
    counts: list[int]
    runtime: list[float] | None = None
    wait: list[float] | None = None
    # task-revoked counts by event_fields.REVOKE_REASONS index, from the row's first revoke.
    revoked_by: list[int] | None = None
    live: bool = True  # False once forgotten: a record holding it must look its labels up again


class TaskRowTable:
    """Labels -> TaskRow, in the order first seen (the order they are exported in)."""

    def __init__(self) -> None:
        self.rows: dict[Labels, TaskRow] = {}

    def get(self, labels: Labels) -> TaskRow:
        task_row = self.rows.get(labels)
        if task_row is None:
            task_row = self.rows[labels] = TaskRow(labels, [0] * len(ZERO_INITIALISED))
        return task_row

    def counts(self) -> dict[str, dict[Labels, int]]:
        """kind -> labels -> count, for every zero-initialised kind."""
        return {
            kind: {labels: task_row.counts[index] for labels, task_row in self.rows.items()}
            for index, kind in enumerate(ZERO_INITIALISED)
        }

    def drop(self, keep: Callable[[Labels], bool]) -> None:
        kept = {}
        for labels, task_row in self.rows.items():
            if keep(labels):
                kept[labels] = task_row
            else:
                task_row.live = False
        self.rows = kept


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
