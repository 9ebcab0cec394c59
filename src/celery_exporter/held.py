"""Task events of a newly appeared worker, held back until its queues are known.

Without task-sent events the queue_name of a worker's task comes from the queues that worker
consumes, and a worker that just came online has not told us yet (arrivals.py asks it). An
event counted now would sit under the fallback queue for good: a counter once exposed cannot
be moved. So its task events wait here, in arrival order, until the asker settles the worker
(answered or gave up) or the hold runs out, and are then counted as if they had just come,
with whatever is known by then. A held event was never exposed, so nothing moves.

Bounded in time (HOLD_SECONDS from the worker's appearance) and in count (MAX_HELD_EVENTS in
all; reaching it counts everything held at once, under the queues known then). Held events
keep no args, kwargs, result or traceback, and only the class of an exception. Event thread
only: no lock of its own; the tracker calls it under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .arrivals import WorkerArrivals
from .events import exception_class

# Covers the asker's first three tries (arrivals.RETRY_DELAYS, ASK_TIMEOUT) on a slow broker;
# a worker that never answers (remote control disabled) only has its first counts delayed.
HOLD_SECONDS = 6.0
MAX_HELD_EVENTS = 10_000
# Worker-side task events: they carry the worker's node name and are labelled with its queues.
HOLDABLE = frozenset(
    f"task-{kind}"
    for kind in ("received", "started", "succeeded", "failed", "retried", "rejected", "revoked")
)

INF = float("inf")
HeldEvent = tuple[dict[str, Any], float]  # the event, and the exporter clock when it came


@dataclass(slots=True)
class _Hold:
    deadline: float
    events: list[HeldEvent] = field(default_factory=list)


class HeldEvents:
    def __init__(
        self,
        arrivals: WorkerArrivals | None,
        hold_seconds: float = HOLD_SECONDS,
        max_events: int = MAX_HELD_EVENTS,
    ) -> None:
        self.arrivals = arrivals  # None: new workers are not asked (inspect is off)
        self.hold_seconds = hold_seconds
        self.max_events = max_events
        self.nodes: dict[str, _Hold] = {}  # empty almost always: the hot path checks only this
        self.count = 0
        self._next_deadline = INF  # the earliest deadline of a hold in `nodes`

    def worker_appeared(self, node: str, now: float) -> None:
        """Have `node` asked for its queues, and hold its task events meanwhile (a hold already
        running keeps its deadline). Not held when too many workers wait to be asked."""
        if self.arrivals is not None and self.arrivals.appeared(node) and node not in self.nodes:
            self.nodes[node] = _Hold(deadline=now + self.hold_seconds)
            self._next_deadline = min(self._next_deadline, now + self.hold_seconds)

    def take(self, event: dict[str, Any], now: float) -> bool:
        """Keep `event` if its worker is held; False: count it now."""
        hostname = event.get("hostname")
        hold = self.nodes.get(hostname) if type(hostname) is str else None
        if hold is None or event.get("type") not in HOLDABLE:
            return False
        # The decoded event is ours alone: trim it in place, cheaper than a copy per event
        # (unrolled: every event of a held worker comes here).
        event.pop("args", None)
        event.pop("kwargs", None)
        event.pop("result", None)
        event.pop("traceback", None)
        if "exception" in event:
            event["exception"] = exception_class(event["exception"])  # the label, not the text
        hold.events.append((event, now))
        self.count += 1
        return True

    def drop_settled(self) -> None:
        """Nothing is held: the asker's notices have nothing to end."""
        if self.arrivals is not None:
            self.arrivals.settled()

    def due(self, now: float) -> list[HeldEvent]:
        """Ends the holds of settled workers, of those past their deadline, or of all when the
        count is reached; returns their events to count now, each worker's in arrival order."""
        if (
            now < self._next_deadline
            and self.count < self.max_events
            and (self.arrivals is None or not self.arrivals.any_settled())
        ):
            return []  # the tracker asks before every message while a hold runs: cheaply
        settled = self.arrivals.settled() if self.arrivals is not None else []
        ended = [node for node in settled if node in self.nodes]
        if self.count >= self.max_events:
            ended = list(self.nodes)
        else:
            ended += [
                n for n, hold in self.nodes.items() if hold.deadline <= now and n not in ended
            ]
        released: list[HeldEvent] = []
        for node in ended:
            events = self.nodes.pop(node).events
            self.count -= len(events)
            released += events
        self._next_deadline = min((hold.deadline for hold in self.nodes.values()), default=INF)
        return released
