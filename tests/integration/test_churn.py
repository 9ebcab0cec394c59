"""Worker churn on a real Redis: workers join and leave every few seconds under a steady load,
and every task is counted under the queue it was routed to from the worker's first task.

Producers send no task-sent events, so a task's queue_name comes from the queues its worker
consumes; each worker consumes a queue of its own, so the right label is known for every task.
The regular inspect round is pushed out of the test's reach (--inspect-interval 300): only
the exporter's targeted `active_queues` request to each new worker (poll/arrivals.py) can know.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import pytest
from celery import Celery

from tests.support.exporter_process import ExporterFactory, ExporterProcess, Samples
from tests.support.producer import producer, send
from tests.support.servers import CeleryWorker, WorkerFactory

pytestmark = pytest.mark.integration

WORKERS = 5
JOIN_EVERY = 2.5  # seconds between two workers starting
LIFETIME = 4.0  # seconds a worker runs after its worker_up reads 1, then a clean shutdown
TASKS_PER_TICK = 2  # per live worker, every TICK: a steady 20 tasks/s each
TICK = 0.1
BACKLOG = 5  # tasks queued for a worker before it starts: received before any answer can come
STEADY_TASK = "workload.add"  # sent only after the worker's worker_up reads 1
BACKLOG_TASK = "workload.sleep"  # sent before the worker starts


@dataclass
class Member:
    worker: CeleryWorker
    queue: str
    host: str  # the `hostname` label: unique per worker here
    started_at: float
    up_at: float | None = None
    left_at: float | None = None
    sent: int = 0
    samples: list[float] = field(default_factory=list)


def counts(samples: Samples, task: str, host: str) -> dict[str, float]:
    """queue_name -> received count of `task` on worker host `host`."""
    found: dict[str, float] = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if (
            name == "celery_task_received_total"
            and label.get("name") == task
            and label.get("hostname") == host
        ):
            found[label["queue_name"]] = found.get(label["queue_name"], 0) + value
    return found


def worker_up(samples: Samples, node: str) -> float | None:
    for (name, labels), value in samples.items():
        if name == "celery_worker_up" and dict(labels).get("worker") == node:
            return value
    return None


def join(factory: WorkerFactory, broker: str, app: Celery, run: str, index: int) -> Member:
    host = f"churn{index}-{run}"
    queue = f"churn-{run}-{index}"
    send(app, BACKLOG_TASK, queue, times=BACKLOG, args=(0,))
    worker = factory(broker, queues=[queue], hostname=f"celery@{host}", wait=False)
    return Member(worker, queue, host, started_at=time.monotonic())


def test_tasks_of_joining_workers_carry_their_queue_from_the_first_task(
    redis_url: str, worker_factory: WorkerFactory, exporter_factory: ExporterFactory
) -> None:
    exporter: ExporterProcess = exporter_factory(
        redis_url,
        "--retry-interval", "0.2",
        "--inspect-interval", "300",  # the first round runs now, before any worker exists
        "--inspect-timeout", "1",
        "--worker-timeout", "60",  # keeps the task series of workers that left until the end
    )  # fmt: skip
    app = producer(redis_url, sent_events=False)
    run = uuid.uuid4().hex[:6]
    members: list[Member] = []
    began = time.monotonic()
    next_join = began
    deadline = began + WORKERS * JOIN_EVERY + LIFETIME + 30  # generous for a loaded machine
    while len(members) < WORKERS or any(m.left_at is None for m in members):
        now = time.monotonic()
        assert now < deadline, [(m.host, m.up_at, m.left_at) for m in members] + [exporter.log]
        if len(members) < WORKERS and now >= next_join:
            members.append(join(worker_factory, redis_url, app, run, len(members)))
            next_join = now + JOIN_EVERY
        samples = exporter.scrape()
        for m in members:
            if m.left_at is not None:
                continue
            if m.up_at is None:
                if m.worker.process is not None and m.worker.process.poll() is not None:
                    raise AssertionError(f"{m.host} exited early:\n{m.worker.log()[-2000:]}")
                if worker_up(samples, m.worker.hostname) == 1:
                    m.up_at = now
            elif now - m.up_at >= LIFETIME:
                assert m.worker.process is not None
                m.worker.process.terminate()  # warm shutdown: worker-offline, a pod replaced
                m.left_at = now
            else:
                send(app, STEADY_TASK, m.queue, times=TASKS_PER_TICK, args=(1, 1))
                m.sent += TASKS_PER_TICK
        time.sleep(max(0.0, TICK - (time.monotonic() - now)))

    # Counted once processed; held events (if any) are out after their hold at the latest.
    churned = time.monotonic()
    settle = time.monotonic() + 15
    while True:
        samples = exporter.scrape()
        steady = {m.host: counts(samples, STEADY_TASK, m.host) for m in members}
        backlog = {m.host: counts(samples, BACKLOG_TASK, m.host) for m in members}
        done = all(sum(steady[m.host].values()) > 0 for m in members) and all(
            sum(backlog[m.host].values()) >= BACKLOG for m in members
        )
        if done or time.monotonic() > settle:
            break
        time.sleep(0.2)

    right = sum(steady[m.host].get(m.queue, 0) for m in members)
    wrong = sum(v for m in members for q, v in steady[m.host].items() if q != m.queue)
    backlog_right = sum(backlog[m.host].get(m.queue, 0) for m in members)
    backlog_wrong = sum(v for m in members for q, v in backlog[m.host].items() if q != m.queue)
    print(
        f"\n{WORKERS} workers joined and left in {churned - began:.1f}s "
        f"(counts settled {time.monotonic() - churned:.1f}s later); "
        f"tasks sent after worker_up read 1: {sum(m.sent for m in members)}, "
        f"counted under the right queue_name: {right:.0f}, under a wrong queue_name: {wrong:.0f}; "
        f"tasks queued before the worker started: counted right {backlog_right:.0f}, "
        f"wrong {backlog_wrong:.0f}"
    )
    for m in members:
        assert m.up_at is not None
        print(
            f"  {m.host}: up {m.up_at - m.started_at:.1f}s after start, "
            f"sent {m.sent}, counted {steady[m.host]}, backlog {backlog[m.host]}"
        )
    assert wrong == 0, steady
    assert all(steady[m.host].get(m.queue, 0) > 0 for m in members), steady
