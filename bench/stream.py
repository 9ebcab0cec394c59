"""The synthetic Celery event stream: pure code, no I/O, clock injected.

`EventStream` yields broker messages shaped like the ones real producers and prefork workers
send: task-sent from producers (`gen<pid>@host`), task-received / started / succeeded /
failed / retried from workers batched into `task.multi` lists of up to 24 events, and
worker-online / heartbeat / offline. `bench.loadgen` publishes them.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from celery.utils.time import utcoffset

BATCH_LIMIT = 24  # EventDispatcher(buffer_limit=24): the most events a task.multi list holds
SW_SYS = "Linux"
EventBody = dict[str, Any]
FAKE_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/.venv/lib/python3.11/site-packages/celery/app/trace.py", line 453, '
    "in trace_task\n    R = retval = fun(*args, **kwargs)\n"
    '  File "/app/bench/tasks.py", line 12, in run\n    raise {exc}\n{exc}\n'
)


class Message(NamedTuple):
    """One broker message: a single event dict, or a `task.multi` list of worker events."""

    routing_key: str
    body: EventBody | list[EventBody]
    hostname: str  # the `hostname` header EventDispatcher puts on every message
    events: int


@dataclass(frozen=True)
class StreamSpec:
    """What the synthetic cluster looks like. Workers and producers are node names."""

    task_names: tuple[str, ...] = tuple(f"bench.tasks.t{i:03d}" for i in range(20))
    workers: tuple[str, ...] = tuple(f"celery@bench-{i:03d}" for i in range(10))
    queues: tuple[str, ...] = ("celery", "priority", "reports")
    producers: tuple[str, ...] = ("producer-0", "producer-1")
    batch_min: int = 1
    batch_max: int = BATCH_LIMIT
    fail_ratio: float = 0.05
    retry_ratio: float = 0.03
    task_sent: bool = True  # producers run with task_send_sent_event=True
    heartbeat_interval: float = 2.0  # seconds; worker_heartbeat's default `freq`
    online_at_start: bool = True
    arriving_workers: tuple[str, ...] | None = None  # who sends worker-online; None: everyone
    depart_workers: tuple[str, ...] = ()  # these send worker-offline when the stream closes
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.task_names or not self.workers or not self.queues or not self.producers:
            raise ValueError("task_names, workers, queues and producers must not be empty")
        if not 1 <= self.batch_min <= self.batch_max <= BATCH_LIMIT:
            raise ValueError(f"want 1 <= batch_min <= batch_max <= {BATCH_LIMIT}")

    def share(self, index: int, count: int) -> StreamSpec:
        """The part of the cluster publisher process `index` of `count` plays: its own workers
        (so heartbeat counters stay consistent per worker) and its own random seed."""
        workers = self.workers[index::count] or (self.workers[index % len(self.workers)],)
        departing = tuple(w for w in self.depart_workers if w in workers)
        return replace(
            self, workers=workers, depart_workers=departing, seed=self.seed * 1000 + index
        )


def queue_of(spec: StreamSpec, name: str) -> str:
    """Tasks are routed by name, so one task name always lands on one queue."""
    return spec.queues[spec.task_names.index(name) % len(spec.queues)]


def _pid_of(node: str) -> int:
    return 1000 + sum(node.encode()) % 60000


@dataclass
class _Worker:
    node: str
    pid: int
    buffer: list[EventBody] = field(default_factory=list)
    flush_at: int = 1
    processed: int = 0
    active: int = 0
    next_heartbeat: float = 0.0


class EventStream:
    """An endless, seeded stream of messages. `clock` supplies event timestamps and paces
    heartbeats, so tests drive it with a fake clock."""

    def __init__(self, spec: StreamSpec, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.clock = clock
        self.rng = random.Random(spec.seed)
        self.lamport = itertools.count(1)
        self.offset = utcoffset()
        start = clock()
        self.workers = [
            _Worker(node, _pid_of(node), next_heartbeat=start + spec.heartbeat_interval)
            for node in spec.workers
        ]
        self.producer_nodes = [f"gen{_pid_of(p)}@{p}" for p in spec.producers]
        self.queue_by_name = {name: queue_of(spec, name) for name in spec.task_names}
        for worker in self.workers:
            worker.flush_at = self._batch_target()

    def _batch_target(self) -> int:
        return self.rng.randint(self.spec.batch_min, self.spec.batch_max)

    def _uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def _event(self, type_: str, node: str, pid: int, now: float, fields: EventBody) -> EventBody:
        # Key order and envelope as celery.events.event.Event builds it.
        event = dict(fields)
        event.update(
            hostname=node,
            utcoffset=self.offset,
            pid=pid,
            clock=next(self.lamport),
            timestamp=now,
            type=type_,
        )
        return event

    def _worker_event(self, worker: _Worker, type_: str, now: float, **fields: Any) -> EventBody:
        return self._event(type_, worker.node, worker.pid, now, fields)

    def _heartbeat(self, worker: _Worker, type_: str, now: float) -> Message:
        fields: EventBody = {
            "freq": self.spec.heartbeat_interval,
            "sw_ident": "py-celery",
            "sw_ver": "5.7.0",
            "sw_sys": SW_SYS,
        }
        if type_ != "worker-offline":
            load = round(self.rng.uniform(0.1, 4.0), 2)
            fields.update(
                active=worker.active,
                processed=worker.processed,
                loadavg=[load, round(load * 0.9, 2), round(load * 0.8, 2)],
            )
        body = self._event(type_, worker.node, worker.pid, now, fields)
        return Message(type_.replace("-", "."), body, worker.node, 1)

    def _lifecycle(self, now: float) -> tuple[list[Message], _Worker, list[EventBody]]:
        """One task from send to finish: producer messages, and the worker's events."""
        rng = self.rng
        name = rng.choice(self.spec.task_names)
        queue = self.queue_by_name[name]
        worker = rng.choice(self.workers)
        uuid = self._uuid()
        sent: list[Message] = []
        worker_events: list[EventBody] = []
        retries = 0
        while True:
            args = f"({rng.randint(0, 9999)}, 'bench')"
            if self.spec.task_sent:
                producer = rng.choice(self.producer_nodes)
                fields: EventBody = {
                    "uuid": uuid,
                    "root_id": uuid,
                    "parent_id": None,
                    "name": name,
                    "args": args,
                    "kwargs": "{}",
                    "retries": retries,
                    "eta": None,
                    "expires": None,
                    "queue": queue,
                    "exchange": "",
                    "routing_key": queue,
                }
                body = self._event("task-sent", producer, _pid_of(producer), now, fields)
                sent.append(Message("task.sent", body, producer, 1))
            worker_events.append(
                self._worker_event(
                    worker,
                    "task-received",
                    now,
                    uuid=uuid,
                    name=name,
                    args=args,
                    kwargs="{}",
                    root_id=uuid,
                    parent_id=None,
                    retries=retries,
                    eta=None,
                    expires=None,
                )
            )
            worker_events.append(self._worker_event(worker, "task-started", now, uuid=uuid))
            roll = rng.random()
            if roll < self.spec.retry_ratio and retries < 3:
                exc = "ConnectionError('upstream flaked')"
                worker_events.append(
                    self._worker_event(
                        worker,
                        "task-retried",
                        now,
                        uuid=uuid,
                        exception=exc,
                        traceback=FAKE_TRACEBACK.format(exc=exc),
                    )
                )
                retries += 1
                continue
            if roll < self.spec.retry_ratio + self.spec.fail_ratio:
                exc = "ValueError('bench failure')"
                worker_events.append(
                    self._worker_event(
                        worker,
                        "task-failed",
                        now,
                        uuid=uuid,
                        exception=exc,
                        traceback=FAKE_TRACEBACK.format(exc=exc),
                    )
                )
            else:
                runtime = min(rng.lognormvariate(-3.0, 1.2), 60.0)
                worker_events.append(
                    self._worker_event(
                        worker, "task-succeeded", now, uuid=uuid, result="'ok'", runtime=runtime
                    )
                )
            worker.processed += 1
            worker.active = rng.randint(0, 4)
            return sent, worker, worker_events

    def messages(self) -> Iterator[Message]:
        """Endless: each task's messages, worker batches as their buffers fill, heartbeats."""
        if self.spec.online_at_start:
            now = self.clock()
            arriving = self.spec.arriving_workers
            for worker in self.workers:
                if arriving is None or worker.node in arriving:
                    yield self._heartbeat(worker, "worker-online", now)
        while True:
            now = self.clock()
            for worker in self.workers:
                if now >= worker.next_heartbeat:
                    worker.next_heartbeat = now + self.spec.heartbeat_interval
                    yield self._heartbeat(worker, "worker-heartbeat", now)
            sent, worker, events = self._lifecycle(now)
            yield from sent
            for event in events:
                worker.buffer.append(event)
                if len(worker.buffer) >= worker.flush_at:
                    yield self._flush(worker)

    def _flush(self, worker: _Worker) -> Message:
        batch, worker.buffer = worker.buffer, []
        worker.flush_at = self._batch_target()
        return Message("task.multi", batch, worker.node, len(batch))

    def closing_messages(self) -> Iterator[Message]:
        """What the cluster sends as it stops: buffered events, then departing workers' goodbye."""
        now = self.clock()
        for worker in self.workers:
            if worker.buffer:
                yield self._flush(worker)
        for worker in self.workers:
            if worker.node in self.spec.depart_workers:
                yield self._heartbeat(worker, "worker-offline", now)


def take(messages: Iterable[Message], events: int) -> Iterator[Message]:
    """Messages holding exactly `events` events; a final batch is cut short to fit."""
    left = events
    for message in messages:
        if left <= 0:
            return
        fitted = message
        if message.events > left:
            assert isinstance(message.body, list)
            fitted = message._replace(body=message.body[:left], events=left)
        left -= fitted.events
        yield fitted


def event_types(message: Message) -> list[str]:
    body = message.body
    return [e["type"] for e in body] if isinstance(body, list) else [body["type"]]
