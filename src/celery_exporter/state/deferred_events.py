"""Task events of a newly appeared worker, deferred until its queues are known.

Without task-sent events the queue_name of a worker's task comes from the queues that worker
consumes, and a worker that just came online has not told us yet (poll/arrivals.py asks it). An
event counted now would sit under the fallback queue for good: a counter once exposed cannot
be moved. So its task events wait here, in arrival order, until the asker settles the worker
(answered or gave up) or the deferral runs out, and are then counted as if they had just come,
with whatever is known by then. A deferred event was never exposed, so nothing moves.

Bounded in time (DEFER_SECONDS from the worker's appearance) and in count (MAX_DEFERRED_EVENTS
in all; reaching it counts everything deferred at once, under the queues known then). Deferred
events keep no args, kwargs, result or traceback, and only the class of an exception. Event
thread only: no lock of its own; the tracker calls it under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .event_fields import exception_class

# Covers the asker's first three tries (arrivals.RETRY_DELAYS, ASK_TIMEOUT) on a slow broker;
# a worker that never answers (remote control disabled) only has its first counts delayed.
DEFER_SECONDS = 6.0
MAX_DEFERRED_EVENTS = 10_000
# Worker-side task events: they carry the worker's node name and are labelled with its queues.
DEFERRABLE = frozenset(
    f"task-{kind}"
    for kind in ("received", "started", "succeeded", "failed", "retried", "rejected", "revoked")
)


class ArrivalNotices(Protocol):
    """The event thread's side of the hand-off to the asker thread (poll/arrivals.py)."""

    def appeared(self, node: str) -> bool:
        """Ask `node` for its queues soon; False when too many wait to be asked."""

    def any_settled(self) -> bool:
        """Whether settled() has nodes to return (a cheap look)."""

    def settled(self) -> list[str]:
        """Nodes whose asking ended since the last call."""


INF = float("inf")
DeferredEvent = tuple[dict[str, Any], float]  # the event, and the exporter clock when it came


@dataclass(slots=True)
class _Deferral:
    deadline: float
    events: list[DeferredEvent] = field(default_factory=list)


class DeferredEvents:
    def __init__(
        self,
        arrivals: ArrivalNotices | None,
        defer_seconds: float = DEFER_SECONDS,
        max_events: int = MAX_DEFERRED_EVENTS,
    ) -> None:
        self.arrivals = arrivals  # None: new workers are not asked (inspect is off)
        self.defer_seconds = defer_seconds
        self.max_events = max_events
        self.nodes: dict[str, _Deferral] = {}  # empty almost always: the hot path checks only this
        self.count = 0
        self._next_deadline = INF  # the earliest deadline of a deferral in `nodes`

    def worker_appeared(self, node: str, now: float) -> None:
        """Have `node` asked for its queues, and hold its task events meanwhile (a hold already
        running keeps its deadline). Not held when too many workers wait to be asked."""
        if self.arrivals is not None and self.arrivals.appeared(node) and node not in self.nodes:
            self.nodes[node] = _Deferral(deadline=now + self.defer_seconds)
            self._next_deadline = min(self._next_deadline, now + self.defer_seconds)

    def take(self, event: dict[str, Any], now: float) -> bool:
        """Keep `event` if its worker is held; False: count it now."""
        hostname = event.get("hostname")
        deferral = self.nodes.get(hostname) if type(hostname) is str else None
        if deferral is None or event.get("type") not in DEFERRABLE:
            return False
        # The decoded event is ours alone: trim it in place, cheaper than a copy per event
        # (unrolled: every event of a held worker comes here).
        event.pop("args", None)
        event.pop("kwargs", None)
        event.pop("result", None)
        event.pop("traceback", None)
        if "exception" in event:
            event["exception"] = exception_class(event["exception"])  # the label, not the text
        deferral.events.append((event, now))
        self.count += 1
        return True

    def drop_settled(self) -> None:
        """Nothing is held: the asker's notices have nothing to end."""
        if self.arrivals is not None:
            self.arrivals.settled()

    def due(self, now: float) -> list[DeferredEvent]:
        """Ends the holds of settled workers, of those past their deadline, or of all when the
        count is reached; returns their events to count now, each worker's in arrival order."""
        if (
            now < self._next_deadline
            and self.count < self.max_events
            and (self.arrivals is None or not self.arrivals.any_settled())
        ):
            return []  # the tracker asks before every message while a deferral runs: cheaply
        settled = self.arrivals.settled() if self.arrivals is not None else []
        ended = [node for node in settled if node in self.nodes]
        if self.count >= self.max_events:
            ended = list(self.nodes)
        else:
            ended += [
                n
                for n, deferral in self.nodes.items()
                if deferral.deadline <= now and n not in ended
            ]
        released: list[DeferredEvent] = []
        for node in ended:
            events = self.nodes.pop(node).events
            self.count -= len(events)
            released += events
        self._next_deadline = min(
            (deferral.deadline for deferral in self.nodes.values()), default=INF
        )
        return released
