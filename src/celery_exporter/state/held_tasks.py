"""Tasks a worker holds but has not started: prefetched, and scheduled for a future ETA.

From task events only, no inspect broadcast: task-received puts a task in its worker's hands;
task-started, -succeeded, -failed, -rejected or -revoked takes it out. Whether a held task is
scheduled (ETA still in the future) or prefetched (no ETA, or the ETA has passed) is decided at
scrape time from the exporter's clock, so a scheduled task turns prefetched when its ETA passes.

No phantoms: a task whose task-started event was lost would otherwise stay held for ever. The
evidence that clears it: a heartbeat saying the worker runs nothing (`active` 0), GRACE seconds
(worker clock) after the task was received and after its ETA. A worker with a free pool slot
starts a due task at once, so such a task is no longer held. (A task waiting for its
`rate_limit` token is the exception, and is dropped early.) A worker that goes offline or is
purged drops everything it held: its unacknowledged messages go back to the broker.

Memory: at most `cap` held tasks in all (the oldest are forgotten first), as the in-flight table.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

# Seconds (worker clock) a held task must be older than an idle heartbeat to be dropped: covers
# the flush delay of the task-started event that would have taken it out.
GRACE = 10.0


@dataclass(slots=True)
class Held:
    """One worker's held tasks, uuid -> worker-clock time received (and ETA)."""

    plain: dict[str, float] = field(default_factory=dict)
    eta: dict[str, tuple[float, float]] = field(default_factory=dict)  # (received, eta)


class HeldTasks:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        # uuid -> the table of its worker's Held that holds it (`plain` or `eta`), in the order
        # received: done() is two dict operations, `owner.pop(uuid)` and a `del` from that
        # table, which state/task_events.py inlines on the hot path. A plain dict (cheaper per event
        # than an OrderedDict); past the cap the oldest tenth goes at once, so that finding the
        # oldest (a scan over deleted slots at the front) is paid once per many tasks.
        self.owner: dict[str, dict[str, Any]] = {}
        self._workers: dict[str, Held] = {}

    def received(self, uuid: str, worker: str, received_at: float, eta: float | None) -> None:
        if uuid in self.owner:
            self.done(uuid)  # redelivered, maybe to another worker
        held = self._workers.get(worker)
        if held is None:
            held = self._workers[worker] = Held()
        if eta is None:
            held.plain[uuid] = received_at
            self.owner[uuid] = held.plain
        else:
            held.eta[uuid] = (received_at, eta)
            self.owner[uuid] = held.eta
        if len(self.owner) > self.cap:
            for oldest in list(itertools.islice(self.owner, self.cap // 10 + 1)):
                self.done(oldest)

    def done(self, uuid: str) -> None:
        """The task started, finished or was given up: no longer held. The hot path (inlined
        in state/task_events.py: keep the two in step)."""
        table = self.owner.pop(uuid, None)
        # An emptied Held stays: workers take and start tasks all the time, and its record
        # goes with the worker (forget_worker), so the number of records is bounded by workers.
        if table is not None:
            del table[uuid]

    def idle(self, worker: str, heartbeat_at: float) -> None:
        """A heartbeat from `worker`, stamped `heartbeat_at`, said it runs no task."""
        held = self._workers.get(worker)
        if held is None:
            return
        before = heartbeat_at - GRACE
        stale = [uuid for uuid, received_at in held.plain.items() if received_at < before]
        stale += [uuid for uuid, (got, eta) in held.eta.items() if got < before and eta < before]
        for uuid in stale:
            self.done(uuid)

    def forget_worker(self, worker: str) -> None:
        held = self._workers.pop(worker, None)
        if held is not None:
            for uuid in (*held.plain, *held.eta):
                del self.owner[uuid]

    def counts(self, now: float) -> dict[str, tuple[int, int]]:
        """worker -> (prefetched, scheduled) at exporter time `now`."""
        result = {}
        for worker, held in self._workers.items():
            if not held.eta:
                result[worker] = (len(held.plain), 0)
                continue
            due = sum(1 for _, eta in held.eta.values() if eta <= now)
            result[worker] = (len(held.plain) + due, len(held.eta) - due)
        return result

    def __len__(self) -> int:
        return len(self.owner)
