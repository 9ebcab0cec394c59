"""Custom collector for the periodic-task metrics: each beat_schedule entry's last run seen,
the run its schedule expects next, and how overdue that run is.

Scrape threads only. The last runs are a copy from the tracker (one short lock, state/
beat_runs.py); the expected runs come from celery's schedule objects (schedule/beat_entries.py),
asked at most once per entry and last run, never per event. An entry whose task has not been
seen since the exporter started is expected one period (or the next crontab time) after the
start: a beat that is down when the exporter starts is overdue too, and an exporter restart
does not make every entry overdue at once. Bounds: one series per entry and family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from ..schedule.beat_entries import BeatEntry
from ..state.tracker import Tracker
from .catalogue import FamilyFactory
from .families import Family, FamilyCollector

NAMES = (
    "beat_entry_last_run_timestamp_seconds",
    "beat_entry_next_run_timestamp_seconds",
    "beat_entry_overdue_seconds",
)


class BeatCollector(FamilyCollector):
    def __init__(
        self,
        tracker: Tracker,
        entries: Sequence[BeatEntry],
        factory: FamilyFactory,
        clock: Callable[[], float],
        started_at: float,
    ) -> None:
        self._tracker = tracker
        self._entries = tuple(entries)
        self._factory = factory
        self._clock = clock
        self._started_at = started_at

    def families(self) -> Iterator[Family]:
        f = self._factory
        families = {name: f.new(name) for name in NAMES if f.enabled(name)}
        if not families:
            return
        runs = self._tracker.beat_last_runs()
        now = self._clock()
        last_run, next_run, overdue = (families.get(name) for name in NAMES)
        for entry in self._entries:
            labels = f.labels((entry.entry, entry.task))
            last = runs.get(entry.task)
            expected = entry.next_run(self._started_at if last is None else last)
            if last_run is not None and last is not None:
                last_run.add_metric(labels, last)
            if next_run is not None:
                next_run.add_metric(labels, expected)
            if overdue is not None:
                overdue.add_metric(labels, max(0.0, now - expected))
        yield from families.values()
