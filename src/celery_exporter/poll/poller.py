"""The poll threads: broker queue probes and worker inspection, off the scrape path.

One thread polls queue lengths every `queue_poll_interval`; another broadcasts inspect
`active_queues` and `stats` every `inspect_interval` (0 switches it off); a third asks newly
appeared workers alone for their `active_queues` (poll/arrivals.py; off with inspect). Each stores
its latest result under one short lock; a scrape reads `view(now)`, which does no I/O.

Staleness: the last good values of a poll are served for up to two intervals (plus the timeout)
after the poll that produced them, so one failed poll does not punch a gap into graphs and
reset `for:` clauses; past that they are dropped rather than shown as fresh. The success gauge
and the last-success timestamp say what happened in any case. A poll the broker answered only
in part (this user may not read some queue) fails too, and is logged like an outage; its fresh
values for the other queues are served, and a queue it could not read has no value at all.

Queues: the static `-Q` list, plus queues found in workers' `active_queues`, plus (optionally)
Redis binding sets. A found queue is kept while a worker consumes it or it holds messages and is
forgotten `queue_expiry` seconds after the last of those; static queues are never forgotten.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from celery import Celery

from ..config import Config
from ..faults.outages import BrokerOutages, broker_outages
from ..state.broker_evidence import BrokerEvidence, HeadWatch
from .arrivals import ASK_TIMEOUT, ArrivalAsker, QueueAsker, WorkerArrivals, WorkerQueues
from .inspection import CeleryInspector, Inspector, WorkerStats
from .queue_probe import ProbeError, QueueProbe, QueueReading
from .transports import make_probe

log = logging.getLogger(__name__)

STALE_AFTER_INTERVALS = 2
POLL, INSPECT = "queue poll", "worker inspect"  # as faults/outages.py names who saw a problem


@dataclass(frozen=True)
class PollView:
    """What a scrape shows, with staleness already applied. None: nothing to show."""

    queues: tuple[str, ...] = ()
    lengths: Mapping[str, int] | None = None
    unacked: Mapping[str, int] | None = None
    consumers: Mapping[str, int] | None = None
    workers_per_queue: Mapping[str, int] | None = None
    processes_per_queue: Mapping[str, int] | None = None
    length_supported: bool = True
    poll_success: bool | None = None
    poll_duration: float | None = None
    poll_last_success: float | None = None
    inspect_success: bool | None = None
    inspect_last_success: float | None = None
    workers: tuple[WorkerStats, ...] = ()


@dataclass
class _State:
    reading: QueueReading | None = None
    reading_at: float | None = None
    success_at: float | None = None  # a partial reading is fresh, but not a success
    poll_success: bool | None = None
    poll_duration: float | None = None
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    workers_at: float | None = None
    inspect_success: bool | None = None
    found: dict[str, float] = field(default_factory=dict)  # discovered queue -> last seen
    evidence: BrokerEvidence | None = None  # for the oldest task's age


class QueuePoller:
    """Polls the broker and the workers on background threads; scrapes read `view()`."""

    def __init__(
        self,
        config: Config,
        app: Celery,
        clock: Callable[[], float] = time.time,
        *,
        probe: QueueProbe | None = None,
        inspector: Inspector | None = None,
        discover_bindings: bool = False,
        arrivals: WorkerArrivals | None = None,
        queue_asker: QueueAsker | None = None,
        outages: BrokerOutages | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.probe = probe or make_probe(app, config, discover_bindings)
        self.inspector: Inspector | None = inspector
        celery_inspector = CeleryInspector(
            app,
            config.inspect_timeout,
            config.broker_timeout,
            min(ASK_TIMEOUT, config.inspect_timeout),
        )
        if inspector is None and config.inspect_interval > 0:
            self.inspector = celery_inspector
        self.arrival_asker: ArrivalAsker | None = None
        if arrivals is not None and config.inspect_interval > 0:
            asker = queue_asker or celery_inspector
            self.arrival_asker = ArrivalAsker(arrivals, asker, self.learned_queues)
        # Answers of newly appeared workers, until a round covers them or they go stale.
        self._asked: dict[str, tuple[tuple[str, ...], float]] = {}
        self._lock = threading.Lock()
        self._state = _State()
        self._head_watch = HeadWatch()  # poll thread only
        self._worker_queues: Mapping[str, tuple[str, ...]] = MappingProxyType({})
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Shared with the event thread: a broker outage is logged once for all (faults/outages.py).
        self.outages = outages or broker_outages(config.broker_url, config.broker_ssl_options)
        if not self.probe.supports_length:
            log.warning(
                "the %s transport cannot report queue lengths; queue_length is not exported",
                self.probe.driver,
            )

    # --- threads ---

    def start(self) -> None:
        loops = [("queue-poll", self.poll_queues, self.config.queue_poll_interval)]
        if self.inspector is not None:
            loops.append(("inspect", self.inspect_workers, self.config.inspect_interval))
        for name, once, interval in loops:
            thread = threading.Thread(
                target=self._loop, args=(once, interval), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if self.arrival_asker is not None:
            thread = threading.Thread(
                target=self.arrival_asker.run,
                args=(self._stop,),
                name="ask-new-workers",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self.arrival_asker is not None:
            self.arrival_asker.arrivals.wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.probe.close()

    def _loop(self, once: Callable[[], None], interval: float) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                once()
            except Exception:  # the loop's one top-level guard: a bug must not end polling
                log.exception("unexpected error in %s", threading.current_thread().name)
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))

    # --- one round each; tests call these directly ---

    def known_queues(self) -> tuple[str, ...]:
        now = self.clock()
        with self._lock:
            found = self._state.found
            for name in [q for q, seen in found.items() if now - seen > self.config.queue_expiry]:
                del found[name]
            return tuple(dict.fromkeys([*self.config.queues, *sorted(found)]))

    def observe_queues(self, names: Iterable[str]) -> None:
        """Queues seen elsewhere (e.g. task-sent events): polled until they expire."""
        now = self.clock()
        with self._lock:
            for name in names:
                self._state.found[name] = now

    def poll_queues(self) -> None:
        started = self.clock()
        try:
            self.observe_queues(self.probe.discover())
            queues = self.known_queues()
            read_at = self.clock()
            reading = self.probe.read(queues)
        except ProbeError as exc:
            self.outages.failed(POLL, exc.__cause__ or exc)  # the broker's error, unwrapped
            with self._lock:
                self._state.poll_success = False
                self._state.poll_duration = self.clock() - started
            return
        if reading.error is not None:
            self.outages.failed(POLL, reading.error)
        else:
            self.outages.succeeded(POLL)
        now = self.clock()
        heads = None if reading.heads is None else self._head_watch.stamp(reading.heads, now)
        evidence = BrokerEvidence(read_at, reading.lengths, heads, reading.unacked_ids)
        with self._lock:
            self._state.evidence = evidence
            for name, length in reading.lengths.items():
                if length > 0 and name in self._state.found:
                    self._state.found[name] = now  # a backlog nobody consumes still matters
            self._state.reading, self._state.reading_at = reading, now
            self._state.poll_success = reading.error is None
            if reading.error is None:
                self._state.success_at = now
            self._state.poll_duration = now - started

    def inspect_workers(self) -> None:
        if self.inspector is None:
            return
        try:
            workers = self.inspector.round()
        except ProbeError as exc:
            self.outages.failed(INSPECT, exc.__cause__ or exc)
            with self._lock:
                self._state.inspect_success = False
            return
        self.outages.succeeded(INSPECT)
        now = self.clock()
        with self._lock:
            self._state.workers, self._state.workers_at = workers, now
            self._state.inspect_success = True
            # A worker that joined meanwhile may be missing from this round, or be in it with no
            # queues (it answered `stats` but was not listening yet for `active_queues`): keep
            # what it told the asker until a round lists its queues or the answer goes stale.
            self._asked = {
                node: (queues, at)
                for node, (queues, at) in self._asked.items()
                if not (node in workers and workers[node].queues)
                and now - at <= self._inspect_age()
            }
            queues = {node: w.queues for node, w in workers.items()}
            queues.update((node, queues) for node, (queues, _) in self._asked.items())
            self._worker_queues = MappingProxyType(queues)
            for stats in workers.values():
                for name in stats.queues:
                    self._state.found[name] = now

    def learned_queues(self, answers: WorkerQueues) -> None:
        """What newly appeared workers told the asker: used at once for queue_name, and their
        queues are polled. The per-queue worker gauges wait for the regular round."""
        now = self.clock()
        with self._lock:
            self._asked.update((node, (queues, now)) for node, queues in answers.items())
            self._worker_queues = MappingProxyType({**self._worker_queues, **answers})
            for queues in answers.values():
                for name in queues:
                    self._state.found[name] = now

    def _inspect_age(self) -> float:
        cfg = self.config
        return STALE_AFTER_INTERVALS * (cfg.inspect_interval + 2 * cfg.inspect_timeout)

    # --- read side ---

    def worker_queues(self) -> Mapping[str, tuple[str, ...]]:
        """Node name -> queues it consumes, from the last inspect round that answered."""
        return self._worker_queues

    def queue_evidence(self) -> BrokerEvidence | None:
        """The latest poll's evidence about waiting tasks, if fresh (see view()); no I/O."""
        cfg = self.config
        with self._lock:
            evidence, reading_at = self._state.evidence, self._state.reading_at
        poll_age = STALE_AFTER_INTERVALS * cfg.queue_poll_interval + cfg.broker_timeout
        if reading_at is None or self.clock() - reading_at > poll_age:
            return None
        return evidence

    def view(self) -> PollView:
        """The latest values for a scrape; no I/O, one short lock."""
        queues = self.known_queues()
        now = self.clock()
        cfg = self.config
        with self._lock:
            state = self._state
            reading, reading_at, success_at = state.reading, state.reading_at, state.success_at
            workers, workers_at = state.workers, state.workers_at
            poll = (state.poll_success, state.poll_duration)
            inspect_success = state.inspect_success
        poll_age = STALE_AFTER_INTERVALS * cfg.queue_poll_interval + cfg.broker_timeout
        if reading_at is None or now - reading_at > poll_age:
            reading = None
        if workers_at is None or now - workers_at > self._inspect_age():
            workers = {}
            fresh_workers = False
        else:
            fresh_workers = self.inspector is not None
        per_queue: dict[str, int] = dict.fromkeys(queues, 0)
        processes: dict[str, int] = dict.fromkeys(queues, 0)
        for stats in workers.values():
            for name in stats.queues:
                if name in per_queue:
                    per_queue[name] += 1
                    processes[name] += stats.processes or 0
        # Each worker holds one consumer per queue it consumes; RabbitMQ counts them itself.
        consumers: Mapping[str, int] | None = per_queue if fresh_workers else None
        if reading is not None and reading.consumers is not None:
            consumers = reading.consumers
        return PollView(
            queues=queues,
            lengths=reading.lengths if reading and self.probe.supports_length else None,
            unacked=reading.unacked if reading else None,
            consumers=consumers,
            workers_per_queue=per_queue if fresh_workers else None,
            processes_per_queue=processes if fresh_workers else None,
            length_supported=self.probe.supports_length,
            poll_success=poll[0],
            poll_duration=poll[1],
            poll_last_success=success_at,
            inspect_success=inspect_success,
            inspect_last_success=workers_at,
            workers=tuple(workers.values()),
        )
