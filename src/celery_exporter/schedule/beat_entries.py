"""The user's `beat_schedule` as plain data: entry name, task name, and when it should run next.

Read once at start-up from the app `-A/--app` loads (schedule/user_app.py). Each entry's schedule
is turned into celery's own schedule object, as beat does (`maybe_schedule`: a number or a
timedelta is an interval; crontab and solar objects are kept), so the expected run times are
celery's: `BeatEntry.next_run(last)` asks the object's `remaining_estimate` with `now` pinned to
`last`, which gives the first run beat would make after one at `last` (an interval's next tick,
a crontab's next matching minute in the app's time zone). Never called per event: the beat
collector calls it at scrape time, and each entry remembers its last answer, so a scrape that
finds the same last run does no date arithmetic at all.

Bounds: the schedule's own size, refused past --max-task-names distinct task names (the same cap
the task series have). Thread: built in the main thread; next_run() is called from scrape
threads, under one lock per entry (the pinned `now` lives on the schedule object).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from celery import Celery
from celery.schedules import BaseSchedule, maybe_schedule

from ..config import ConfigError


@dataclass(eq=False)
class BeatEntry:
    """One beat_schedule entry. `entry` is its key in beat_schedule, `task` the task name."""

    entry: str
    task: str
    schedule: BaseSchedule
    description: str
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pinned: float = 0.0  # what the schedule's `now` reads while next_run() asks it
    _last: tuple[float, float] | None = field(default=None, repr=False)  # (last, next)

    def __post_init__(self) -> None:
        # The object is ours: the app was loaded in this process only to read its schedule.
        self.schedule.nowfun = self._now

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._pinned, tz=timezone.utc)

    def next_run(self, last: float) -> float:
        """Unix time of the first run the schedule makes after a run at Unix time `last`."""
        with self._lock:
            if self._last is not None and self._last[0] == last:
                return self._last[1]
            self._pinned = last
            remaining = self.schedule.remaining_estimate(self._now())
            # remaining is measured from `now`, pinned to `last`; a schedule with no run after
            # `last` (never) would say so with a huge delta, which reads as never overdue.
            expected = last + max(float(remaining.total_seconds()), 0.0)
            self._last = (last, expected)
            return expected


def beat_entries(app: Celery, spec: str, max_task_names: int) -> tuple[BeatEntry, ...]:
    """The entries of `app.conf.beat_schedule`, or ConfigError naming --app and the entry."""
    try:
        raw = app.conf.beat_schedule  # reading the config may import the user's settings
    except Exception as exc:  # the user's configuration runs here
        raise ConfigError(f"--app {spec!r}: cannot read its beat_schedule: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"--app {spec!r}: beat_schedule is a {type(raw).__name__}, not a dict")
    if not raw:
        raise ConfigError(f"--app {spec!r}: its beat_schedule is empty: there is nothing to watch")
    entries = tuple(_entry(app, spec, str(name), options) for name, options in raw.items())
    tasks = {entry.task for entry in entries}
    if len(tasks) > max_task_names:
        raise ConfigError(
            f"--app {spec!r}: beat_schedule names {len(tasks)} tasks, more than "
            f"--max-task-names {max_task_names}"
        )
    return entries


def _entry(app: Celery, spec: str, name: str, options: Any) -> BeatEntry:
    where = f"--app {spec!r}: beat_schedule entry {name!r}"
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where} is not a dict")
    task = options.get("task")
    if not isinstance(task, str) or not task:
        raise ConfigError(f"{where} has no task name")
    raw = options.get("schedule")
    if isinstance(raw, bool) or not isinstance(raw, int | float | timedelta | BaseSchedule):
        raise ConfigError(f"{where}: schedule {raw!r} is not a number, timedelta or schedule")
    schedule = maybe_schedule(raw, bool(options.get("relative", False)), app=app)
    if not isinstance(schedule, BaseSchedule):  # maybe_schedule only passes None through
        raise ConfigError(f"{where}: schedule {raw!r} is not usable")
    if isinstance(raw, int | float | timedelta):
        seconds = raw.total_seconds() if isinstance(raw, timedelta) else float(raw)
        if not seconds > 0:
            raise ConfigError(f"{where}: an interval must be positive, not {raw!r}")
    return BeatEntry(name, task, schedule, repr(schedule))
