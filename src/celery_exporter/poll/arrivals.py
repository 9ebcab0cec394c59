"""Newly appeared workers: ask each of them alone for its queues at once, off the event thread.

Without task-sent events a task's queue_name comes from the queues its worker consumes, which
the regular inspect round (every --inspect-interval) learns only later. So when a worker comes
online, or this exporter sees its first heartbeat, the event thread calls `appeared()`: it only
notes the node name and wakes the asker thread; no I/O, no waiting. The asker thread sends
`active_queues` to the new workers only (`destination=[...]`, never a broadcast), retries a
few times with a short backoff, then gives up and leaves the worker to the regular round.
Either way the node is reported back as settled, so the tracker can count the task events it
held for it (state/deferred_events.py).

Bounded, so that a hundred workers joining at once cost a few requests, not a flood: at most
`max_pending` workers wait to be asked (more are left to the regular round), one thread with
one request in flight, at most BATCH workers per request, and a request waits COALESCE
seconds for more arrivals to share it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .queue_probe import ProbeError

log = logging.getLogger(__name__)

# Delays before the 2nd, 3rd and 4th try. A worker answers in milliseconds once its control
# consumer listens; on Redis a request published before its pub/sub SUBSCRIBE is simply lost.
RETRY_DELAYS = (0.25, 0.5, 1.0)
ASK_TIMEOUT = 1.0  # per request; a request returns as soon as every asked worker answered
COALESCE = 0.05
BATCH = 64
IDLE_WAIT = 1.0  # the asker thread re-checks its stop flag at least this often

WorkerQueues = Mapping[str, tuple[str, ...]]


class QueueAsker(Protocol):
    def ask(self, nodes: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """The queues of each asked worker that answered; ProbeError if the broker failed."""


@dataclass(slots=True)
class _Pending:
    due: float  # exporter clock
    tries: int = 0


class WorkerArrivals:
    """The hand-off between the event thread (who appeared) and the asker thread (what they
    consume). Every method takes one short lock; none does I/O."""

    def __init__(self, clock: Callable[[], float], max_pending: int = 1000) -> None:
        self.clock = clock
        self.max_pending = max_pending
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._settled: deque[str] = deque()

    # --- event thread ---

    def appeared(self, node: str) -> bool:
        """Ask `node` for its queues soon. False: too many are waiting, left to the round."""
        with self._lock:
            pending = self._pending.get(node)
            if pending is not None:
                # Came online again while waiting: a fresh set of tries, an answer to a request
                # already in flight may come from the incarnation that left.
                pending.tries = 0
                pending.due = min(pending.due, self.clock() + COALESCE)
            elif len(self._pending) >= self.max_pending:
                return False
            else:
                self._pending[node] = _Pending(due=self.clock() + COALESCE)
        self.wake.set()
        return True

    def any_settled(self) -> bool:
        """Whether settled() has nodes to return: a cheap look, for every event message."""
        return bool(self._settled)

    def settled(self) -> list[str]:
        """Nodes whose asking ended (answered or given up) since the last call."""
        done = []
        while self._settled:
            done.append(self._settled.popleft())
        return done

    # --- asker thread ---

    def due(self) -> tuple[list[str], float | None]:
        """Up to BATCH nodes to ask now, and the seconds until the next one is due (None: no
        node is waiting)."""
        now = self.clock()
        with self._lock:
            ready = [node for node, p in self._pending.items() if p.due <= now][:BATCH]
            later = [p.due - now for p in self._pending.values() if p.due > now]
            for node in ready:
                self._pending[node].tries += 1
        if ready:
            return ready, 0.0
        return ready, min(later) if later else None

    def finished(self, asked: Sequence[str], answered: Mapping[str, object]) -> list[str]:
        """Record one request's outcome; returns the nodes given up on."""
        now = self.clock()
        given_up = []
        with self._lock:
            for node in asked:
                pending = self._pending.get(node)
                if pending is None:
                    continue
                if pending.tries == 0:
                    continue  # came online again during the request: ask afresh
                if node not in answered and pending.tries <= len(RETRY_DELAYS):
                    pending.due = now + RETRY_DELAYS[pending.tries - 1]
                    continue
                del self._pending[node]
                if node not in answered:
                    given_up.append(node)
                self._settled.append(node)
        return given_up

    def waiting(self) -> int:
        with self._lock:
            return len(self._pending)


class ArrivalAsker:
    """The asker thread's work: ask due workers, hand the answers on, schedule retries."""

    def __init__(
        self,
        arrivals: WorkerArrivals,
        asker: QueueAsker,
        learned: Callable[[WorkerQueues], None],
    ) -> None:
        self.arrivals = arrivals
        self.asker = asker
        self.learned = learned  # stores answers where queue_name resolution reads them

    def ask_due(self) -> float | None:
        """One request, if any worker is due; returns seconds until the next is due."""
        nodes, wait = self.arrivals.due()
        if not nodes:
            return wait
        try:
            answers = self.asker.ask(nodes)
        except ProbeError as exc:
            log.debug("asking %d new worker(s) for their queues failed: %s", len(nodes), exc)
            answers = {}
        answers = {node: queues for node, queues in answers.items() if node in nodes}
        if answers:
            # Before finished(): the tracker must find the queues once it sees the node settled.
            self.learned(answers)
            log.debug("new workers' queues: %s", answers)
        for node in self.arrivals.finished(nodes, answers):
            log.info(
                "worker %s did not answer active_queues after %d tries; its queues come from "
                "the next inspect round",
                node,
                len(RETRY_DELAYS) + 1,
            )
        return 0.0

    def run(self, stop: threading.Event) -> None:
        """The thread: ask while workers are due, sleep until the next one is."""
        wake = self.arrivals.wake
        while not stop.is_set():
            try:
                wait = self.ask_due()
            except Exception:  # the loop's one top-level guard: a bug must not end asking
                log.exception("unexpected error asking new workers for their queues")
                wait = IDLE_WAIT
            if wait is None or wait > 0:
                wake.wait(IDLE_WAIT if wait is None else min(wait, IDLE_WAIT))
                wake.clear()  # due() re-reads the state after this: no arrival is lost
