"""Task events the exporter never received: each worker's heartbeats against its task-started.

A worker's heartbeat carries `processed`, the number of tasks it has started: in Celery 5.7,
`celery/worker/state.py: task_accepted()` adds one to `all_total_count`, and
`Request.on_accepted()` calls it and then sends task-started; `worker/heartbeat.py` sends
`processed=all_total_count[0]`. So every task a heartbeat counts has a task-started event from
the same worker, stamped by the same clock no later than the heartbeat itself.

Per worker, on the worker's own clock (the events' `timestamp`):

- The baseline is a heartbeat this exporter saw; tasks it counts are not ours to check. Until
  the worker's first task event arrives every heartbeat moves the baseline, because a worker
  with task events off (`celery_worker_task_events_enabled 0`) would otherwise count here.
- Every later heartbeat is a checkpoint. A task-started event is put into the interval of the
  first checkpoint stamped at or after it, or into the open interval after the last one.
- A checkpoint settles when a heartbeat stamped GRACE seconds after it arrives. A worker's
  events travel in one stream and prefork flushes its batched task events within about a
  second, so by then every task-started stamped before the checkpoint has arrived, however far
  the exporter itself lags (the grace is measured in the stream, not on the exporter's clock).
- deficit = (processed at the checkpoint - processed at the baseline) - task-started events
  that arrived in time for it. Missed rises to the smaller of the last two settled deficits: a
  shortfall must hold at two checkpoints in a row, which absorbs a thread pool stamping
  task-started a moment after a heartbeat that already counted the task.
- A task-started that arrives for a settled checkpoint is late: it was counted as missed and
  stays counted (the task counters still count it).
- `processed` going down means the worker restarted under the same name: a new baseline, and
  the missed count so far is kept, so the counter is monotonic.

Pure code, written only from the event thread through the tracker. Memory: one ledger per
worker (capped) with a few checkpoints each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Seconds of the worker's clock after a heartbeat before its count is compared: covers prefork's
# event batching (flushed within about a second) and ordering within the stream.
GRACE = 10.0
# A worker whose heartbeats come faster than this many per GRACE is broken; settle early.
MAX_CHECKPOINTS = 64


@dataclass(slots=True)
class Checkpoint:
    timestamp: float  # worker clock
    processed: int
    started: int = 0  # task-started events stamped in (previous checkpoint, this one]


@dataclass(slots=True)
class Ledger:
    base_processed: int | None = None
    base_at: float = 0.0  # worker clock of the baseline heartbeat
    last_processed: int = 0
    settled_at: float = 0.0  # worker clock of the baseline or the last settled checkpoint
    settled_started: int = 0  # in-time task-started events up to settled_at, since the baseline
    pending: list[Checkpoint] = field(default_factory=list)
    open_started: int = 0  # task-started stamped after the last pending checkpoint
    last_deficit: int = 0
    confirmed: int = 0  # highest confirmed deficit since the baseline
    carried: int = 0  # missed before the baseline moved (a restart)
    late: int = 0
    task_events_seen: bool = False

    @property
    def missed(self) -> int:
        return self.carried + self.confirmed


class MissedEvents:
    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self.ledgers: dict[str, Ledger] = {}

    def _ledger(self, worker: str) -> Ledger | None:
        ledger = self.ledgers.get(worker)
        if ledger is None and len(self.ledgers) < self.max_workers:
            ledger = self.ledgers[worker] = Ledger()
        return ledger

    def started(self, worker: str, timestamp: float) -> None:
        """A task-started event from `worker`, stamped `timestamp` by it. The hot path."""
        ledger = self.ledgers.get(worker) or self._ledger(worker)
        if ledger is None:
            return
        ledger.task_events_seen = True
        if ledger.base_processed is None:
            return
        if timestamp <= ledger.settled_at:
            if timestamp > ledger.base_at:  # else: started before the baseline, counted in it
                ledger.late += 1
            return
        pending = ledger.pending
        if not pending or timestamp > pending[-1].timestamp:
            ledger.open_started += 1
            return
        for checkpoint in pending:
            if timestamp <= checkpoint.timestamp:
                checkpoint.started += 1
                return

    def heartbeat(self, worker: str, timestamp: float, processed: int) -> None:
        """A worker-online, -heartbeat or -offline event that carried `processed`."""
        ledger = self._ledger(worker)
        if ledger is None:
            return
        newest = ledger.pending[-1].timestamp if ledger.pending else ledger.settled_at
        if ledger.base_processed is not None and timestamp <= newest:
            return  # a duplicate or out-of-order heartbeat: a later one already counts more
        restarted = processed < ledger.last_processed
        ledger.last_processed = processed
        if ledger.base_processed is None or restarted or not ledger.task_events_seen:
            _rebase(ledger, timestamp, processed)
            return
        ledger.pending.append(Checkpoint(timestamp, processed, ledger.open_started))
        ledger.open_started = 0
        while ledger.pending and (
            ledger.pending[0].timestamp + GRACE <= timestamp
            or len(ledger.pending) > MAX_CHECKPOINTS
        ):
            _settle(ledger, ledger.pending.pop(0))

    def forget(self, worker: str) -> None:
        self.ledgers.pop(worker, None)

    def totals(self) -> dict[str, int]:
        """Missed task-started events per worker with a baseline."""
        return {w: led.missed for w, led in self.ledgers.items() if led.base_processed is not None}


def _rebase(ledger: Ledger, timestamp: float, processed: int) -> None:
    ledger.carried += ledger.confirmed
    ledger.confirmed = ledger.last_deficit = 0
    ledger.base_processed = processed
    ledger.base_at = ledger.settled_at = timestamp
    ledger.settled_started = ledger.open_started = 0
    ledger.pending.clear()


def _settle(ledger: Ledger, checkpoint: Checkpoint) -> None:
    assert ledger.base_processed is not None
    ledger.settled_started += checkpoint.started
    ledger.settled_at = checkpoint.timestamp
    deficit = checkpoint.processed - ledger.base_processed - ledger.settled_started
    confirmed = min(deficit, ledger.last_deficit)
    ledger.last_deficit = deficit
    ledger.confirmed = max(ledger.confirmed, confirmed)
