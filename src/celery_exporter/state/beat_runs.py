"""When each task that `beat_schedule` names was last seen sent, and last seen received.

`celery beat` sends no events of its own and task events carry no message headers, so a run of a
periodic task is recognised by its task name alone: its task-sent (beat's app needs
`task_send_sent_event`) or its task-received (from the worker that takes it). Several entries
naming one task share its sightings; a task of that name sent by anything else counts as a run.

The last run of a name is its last task-sent once one has been seen, else its last task-received:
task-sent is beat's own act, while task-received comes late behind a backlog, keeps coming while
workers drain a dead beat's last sends, and never comes when nothing consumes the queue. Times are
the sender's clock (beat's or the worker's), checked like every event time (event_fields.py).

Bounds: keyed by the scheduled task names only, fixed at start-up (schedule/beat_entries.py
refuses more than --max-task-names); an event of any other name costs one dict lookup and
writes nothing. Written by the event thread under the tracker's lock (task_events.py inlines the
writes); copied by last_runs() for a scrape.
"""

from __future__ import annotations

from collections.abc import Iterable


class BeatRuns:
    def __init__(self, names: Iterable[str]) -> None:
        # Public: state/task_events.py writes them inline on the hot path (`if name in sent`).
        # Both hold every scheduled name from the start, so the check is one dict lookup.
        self.sent: dict[str, float | None] = {}
        self.received: dict[str, float | None] = {}
        self.add(names)

    def add(self, names: Iterable[str]) -> None:
        """Watch these names too (start-up only: the schedule is fixed)."""
        for name in names:
            self.sent.setdefault(name, None)
            self.received.setdefault(name, None)

    def saw_sent(self, name: str, at: float) -> None:
        """A task-sent of a scheduled name (callers checked `name in sent`)."""
        last = self.sent[name]
        if last is None or at > last:  # events of one sender may come out of order
            self.sent[name] = at

    def saw_received(self, name: str, at: float) -> None:
        """A task-received of a scheduled name (callers checked `name in received`)."""
        last = self.received[name]
        if last is None or at > last:
            self.received[name] = at

    def __len__(self) -> int:
        return len(self.sent)

    def last_runs(self) -> dict[str, float]:
        """Task name -> Unix time of its last run seen; names never seen are left out."""
        runs = {}
        for name, sent_at in self.sent.items():
            seen = sent_at if sent_at is not None else self.received[name]
            if seen is not None:
                runs[name] = seen
        return runs
