"""How long the oldest waiting task of each queue has waited (queue_oldest_task_age_seconds).

Pure code, no I/O, clock passed in. The tracker owns one QueueAge and calls it under its lock:
the event hooks from the event thread, `prune()` from the event thread's housekeeping, and
`ages()` from a scrape (read-only, so a scrape never writes cluster state).

A task waits from task-sent (or its ETA, if later) until it starts. A worker that prefetched a
task still makes it wait ("held"); task-started, -succeeded, -failed, -revoked or a rejection
without requeue end the wait. Two sources, combined per queue by the oldest ready time:

- events: every waiting task's ready time. Without task-sent events a task is known only from
  task-received, timed from when the exporter saw that (a lower bound).
- Redis: the oldest message of each priority sub-list (kombu LPUSHes and pops from the right,
  so it is LINDEX -1). It confirms or corrects the events: a task still in the broker is never
  older than those heads, so tasks the events call waiting but that are older and not a head
  have left the broker (purged, or taken by a worker whose task-received was lost). A head with
  no task-sent event is timed from when the exporter first saw it there (a lower bound).

No phantom ages, from evidence the broker poll brings (`BrokerEvidence`, applied in `prune()`):
- a queue holding N messages holds at most the N newest tasks not held by a worker, so older
  ones whose task-sent arrived before the poll read are forgotten (N = 0: a purged queue);
- on Redis, a held task whose message is no longer in kombu's unacked hash has started (its
  task-started was lost) or was dropped: forgotten;
- a worker that went away no longer holds its prefetched tasks: they count as back in the broker
  (on Redis, where they sit in the unacked hash until the visibility timeout, as long as they do);
- a worker whose heartbeat says it runs nothing does not keep a task it prefetched well before
  waiting (only a rate limit would): that task started and its task-started event was lost;
- a task whose `expires` passed will never run: it does not count (a worker that picks it up
  revokes it, and the broker evidence above forgets it once it left the broker).

Memory: at most `max_tasks` waiting tasks (the in-flight table's cap); past it the oldest-seen
is forgotten, so the age from events alone becomes a lower bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from .broker_evidence import BrokerEvidence, BrokerHead
from .workers import WorkerView

V = TypeVar("V")

# Task events are batched (flushed about once a second) and heartbeats come every 2 s: a task
# held this long before an idle heartbeat has had every chance to be reported started.
IDLE_GRACE = 10.0


@dataclass(slots=True)
class Waiting:
    queue: str
    ready_at: float  # max(sent, eta); producer's clock, or the exporter's for a lower bound
    seen_at: float  # exporter clock: when it last learned the message was in the broker
    expires: float | None
    holder: str | None = None  # the worker that prefetched it
    held_since: float = 0.0


class QueueAge:
    def __init__(self, max_tasks: int, queue_expiry: float) -> None:
        self.max_tasks = max_tasks
        self.queue_expiry = queue_expiry
        # In the order the exporter learned they entered the broker: oldest first. One table
        # for every queue, so an event costs a dict operation or two; per-queue passes are
        # made in prune() and ages(), off the hot path. Trimmed in place, never replaced:
        # state/task_events.py pops from it directly for ended() on the hot path.
        self.waiting: dict[str, Waiting] = {}
        self._queue_seen: dict[str, float] = {}  # queue -> last time a task waited in it
        self._applied_read_at: float | None = None
        self._released: set[str] = set()  # workers whose holds were already given back

    def __len__(self) -> int:
        return len(self.waiting)

    # ---- event hooks (the hot path: a few dict operations each) --------------------------

    def sent(
        self,
        uuid: str,
        queue: str,
        sent_at: float,
        eta: float | None,
        expires: float | None,
        now: float,
    ) -> None:
        ready = sent_at if eta is None or eta < sent_at else eta
        entry = self.waiting.get(uuid)
        if entry is not None:
            # A producer's first task-sent goes out while its event connection opens, so it can
            # arrive after task-received: the task is held, and this gives its true send time
            # and queue (task-received has none; the tracker may have guessed it).
            entry.ready_at = min(entry.ready_at, ready)
            entry.queue = queue
            return
        # (One seen after the task started never comes here: the tracker knows it is late.)
        # A retry re-sends the same uuid after it started: it waits again from this send.
        # _add() inlined: this runs for every task-sent.
        waiting = self.waiting
        waiting[uuid] = Waiting(queue, ready, now, expires)
        self._queue_seen[queue] = now
        if len(waiting) > self.max_tasks:
            self._trim()

    def received(
        self,
        uuid: str,
        queue: str,
        sent_at: float | None,
        eta: float | None,
        expires: float | None,
        worker: str,
        now: float,
    ) -> None:
        entry = self.waiting.get(uuid)
        if entry is None:
            # No task-sent seen (producers without task_send_sent_event, or forgotten on the
            # broker's evidence before this arrived): from the send if known, else from now.
            entry = Waiting(queue, now if sent_at is None else sent_at, now, expires)
            self._add(uuid, entry)
        if eta is not None and eta > entry.ready_at:
            entry.ready_at = eta
        entry.holder, entry.held_since = worker, now

    def requeued(self, uuid: str, now: float) -> None:
        """A rejection with requeue=True: the message is back in the broker."""
        entry = self.waiting.get(uuid)
        if entry is not None:
            self._back_in_broker(uuid, entry, now)

    def ended(self, uuid: str) -> None:
        """The wait is over."""
        self.waiting.pop(uuid, None)

    def _add(self, uuid: str, entry: Waiting) -> None:
        self.waiting[uuid] = entry
        self._queue_seen[entry.queue] = entry.seen_at
        if len(self.waiting) > self.max_tasks:
            self._trim()

    def _trim(self) -> None:
        keep = self.max_tasks - self.max_tasks // 10  # as newest(), but in place
        for oldest in list(islice(self.waiting, len(self.waiting) - keep)):
            del self.waiting[oldest]

    def _back_in_broker(self, uuid: str, entry: Waiting, now: float) -> None:
        entry.holder, entry.seen_at = None, now
        del self.waiting[uuid]
        self.waiting[uuid] = entry  # to the newest end: it re-entered the broker now

    def worker_left(self, worker: str, now: float) -> None:
        """A worker that said goodbye (worker-offline) gave its prefetched tasks back to the
        broker. Called from its event: its view is gone at once, so prune() never sees it."""
        for uuid, entry in [(u, e) for u, e in self.waiting.items() if e.holder == worker]:
            self._back_in_broker(uuid, entry, now)

    # ---- housekeeping (event thread, every few seconds) ----------------------------------

    def prune(
        self, now: float, workers: Sequence[WorkerView], evidence: BrokerEvidence | None
    ) -> None:
        """Forget what evidence says no longer waits. A worker that is down or went offline
        no longer holds its prefetched tasks: they went back to the broker (RabbitMQ requeues
        them at once, Redis after its visibility timeout). A worker whose last heartbeat says
        it runs no task is not keeping what it prefetched well before then waiting for a pool
        slot: that task started and its task-started event was lost."""
        seen = self._queue_seen  # before forgetting: a queue just emptied reads 0 for a while
        for entry in self.waiting.values():
            seen[entry.queue] = now
        for queue in [q for q, at in seen.items() if now - at > self.queue_expiry]:
            del seen[queue]
        gone = {w.worker for w in workers if not w.up}
        idle = {
            w.worker: w.last_heartbeat
            for w in workers
            if w.up and w.active == 0 and w.last_heartbeat is not None
        }
        self._released &= gone  # a worker that came back may hold tasks again
        newly_gone = gone - self._released
        self._released |= newly_gone
        if newly_gone or idle:
            released, started = [], []
            for uuid, entry in self.waiting.items():
                holder = entry.holder
                if holder is None:
                    continue
                if holder in newly_gone:
                    released.append((uuid, entry))
                elif holder in idle:
                    settled = idle[holder] - IDLE_GRACE
                    if entry.held_since < settled and entry.ready_at < settled:
                        started.append(uuid)
            for uuid, entry in released:
                self._back_in_broker(uuid, entry, now)
            for uuid in started:
                self.ended(uuid)
        if evidence is not None and evidence.read_at != self._applied_read_at:
            self._applied_read_at = evidence.read_at
            self._apply(evidence)

    def _apply(self, evidence: BrokerEvidence) -> None:
        read_at = evidence.read_at
        gone: list[str] = []
        # A Redis head is in the broker whatever its age (priority sub-lists are not one FIFO).
        at_head = {h.task_id for hs in (evidence.heads or {}).values() for h in hs}
        # Taken by a worker (its task-received lost, or the worker died): not in the list, but
        # Redis gives it back after the visibility timeout.
        taken = evidence.unacked_ids or frozenset()
        in_broker: dict[str, list[str]] = {}  # queue -> tasks no worker holds, oldest first
        for uuid, entry in self.waiting.items():
            if (
                entry.holder is None
                and entry.seen_at < read_at
                and uuid not in at_head
                and uuid not in taken
            ):
                in_broker.setdefault(entry.queue, []).append(uuid)
        for queue, uuids in in_broker.items():
            length = evidence.lengths.get(queue)
            if length is not None:
                # The broker hands out the oldest first, so N messages are the N newest tasks.
                gone += uuids[: max(0, len(uuids) - length)]
        if evidence.unacked_ids is not None:
            unacked = evidence.unacked_ids
            gone += [
                uuid
                for uuid, entry in self.waiting.items()
                if entry.holder is not None and entry.held_since < read_at and uuid not in unacked
            ]
        for uuid in gone:
            self.ended(uuid)

    # ---- scrape (read-only) --------------------------------------------------------------

    def ages(self, now: float, evidence: BrokerEvidence | None) -> dict[str, float]:
        """Queue -> seconds its oldest ready, unstarted task has waited (0: none)."""
        # A task whose ETA is still ahead is ready later than now: it never wins.
        oldest = dict.fromkeys(self._queue_seen, now)
        heads: Mapping[str, tuple[BrokerHead, ...]] = {}
        redis_read_at: dict[str, float] = {}  # queues whose Redis heads speak for the broker
        taken: frozenset[str] = frozenset()
        if evidence is not None:
            oldest.update(dict.fromkeys(evidence.lengths, now))
            if evidence.heads is not None:
                heads = evidence.heads
                redis_read_at = dict.fromkeys(evidence.lengths, evidence.read_at)
                taken = evidence.unacked_ids or frozenset()
        for uuid, entry in self.waiting.items():
            ready, queue = entry.ready_at, entry.queue
            if ready >= oldest.get(queue, now):
                continue
            if entry.expires is not None and entry.expires <= now:
                continue
            # On Redis the heads speak for every task that was in the list when it was read;
            # one in the unacked hash that no live worker holds comes back when it times out.
            in_list_at_read = entry.seen_at < redis_read_at.get(queue, 0.0)
            if entry.holder is None and in_list_at_read and uuid not in taken:
                continue
            oldest[queue] = ready
        for queue in redis_read_at:
            oldest[queue] = self._oldest_head(heads.get(queue, ()), oldest[queue], now)
        return {queue: max(0.0, now - ready) for queue, ready in oldest.items()}

    def _oldest_head(self, heads: tuple[BrokerHead, ...], oldest: float, now: float) -> float:
        for head in heads:
            if head.expires is not None and head.expires <= now:
                continue
            known = self.waiting.get(head.task_id) if head.task_id else None
            if known is not None:
                ready = known.ready_at
            else:
                ready = head.first_seen if head.eta is None else max(head.first_seen, head.eta)
            oldest = min(oldest, ready)
        return oldest


def newest(table: dict[str, V], limit: int) -> dict[str, V]:
    """The newest 90% of `limit` entries of an insertion-ordered table. Trimming a tenth at a
    time keeps the cost per insertion constant; a plain dict is cheaper per event than an
    OrderedDict, but cannot drop its oldest entry one at a time."""
    keep = limit - limit // 10
    return dict(islice(table.items(), len(table) - keep, None))
