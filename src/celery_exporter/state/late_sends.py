"""The memory of finished tasks whose task-sent may still come.

Celery publishes a task before it sends its task-sent event, so on a loaded machine task-sent
often arrives after the worker's task-started or even after the task finished. Such a late send
is still the task's original send: its wait in the queue is observed then, under the labels the
worker-side events used. A finished task whose send was not seen is remembered a while so that
its late task-sent finds it, instead of starting a fresh in-flight record that nothing would
ever end.

The memory is bounded (RECENTLY_FINISHED) and kept only while producers may send task-sent at
all: once one was seen, or in the first minutes (the first send of a producer is the one most
often late). Clusters without task_send_sent_event pay nothing for it after that.
"""

from __future__ import annotations

from .in_flight import TaskRecord
from .queue_age import newest

# How long finished tasks are remembered for a late task-sent before any task-sent was seen.
SENDS_GRACE = 600.0
# Finished tasks remembered for a late task-sent: seconds of a busy cluster's events (~1 MB).
RECENTLY_FINISHED = 10_000


class LateSends:
    def __init__(self, now: float) -> None:
        self.tasks: dict[str, TaskRecord] = {}  # uuid -> its record, oldest first
        self.sends_seen = False  # set by every task-sent: producers send them
        self._grace_until = now + SENDS_GRACE

    def finished(self, uuid: str, record: TaskRecord, now: float) -> None:
        """A task left the in-flight table: remember it if its task-sent may still come."""
        if record.sent_at is None and (self.sends_seen or now < self._grace_until):
            self.tasks[uuid] = record
            if len(self.tasks) > RECENTLY_FINISHED:
                self.tasks = newest(self.tasks, RECENTLY_FINISHED)

    def expire(self, now: float) -> None:
        """Housekeeping: past the grace without a task-sent, producers send none."""
        if not self.sends_seen and now >= self._grace_until:
            self.tasks.clear()
