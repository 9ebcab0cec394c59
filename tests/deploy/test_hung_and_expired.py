"""Drills for CeleryTaskHung and CeleryTaskExpired: the fault caused for real, the alert seen.

A real Redis, real prefork workers (tests.support.workload_app), the real exporter and a real
Prometheus evaluating a test copy of the shipped rules (every `for:` SHORT_FOR, 1 s scrapes and
evaluations; the hung-task threshold set to HANG_THRESHOLD seconds). Each drill first runs the
workload without the fault and asserts the alert stays quiet for a stated time, then causes the
fault and asserts the alert goes pending within a stated bound, naming the task and queue. Each
prints what it measured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.exporter_process import ExporterProcess
from tests.support.producer import producer, send
from tests.support.prometheus import SHORT_FOR, Prometheus, write_test_config
from tests.support.servers import WorkerFactory, wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

HANG_THRESHOLD = 4.0  # seconds: celery:alert_threshold:task_running_seconds in the test copy
WORKER_TIMEOUT = 4.0  # the exporter's --worker-timeout
QUIET_SECONDS = 10.0  # the workload without the fault, watched for the alert
# From the fault to pending: the threshold (hung only), then event delivery (~1 s), a scrape,
# a recording-rule and an alerting-rule evaluation (1 s each), and slack for a busy machine.
PENDING_BOUND = 8.0


@dataclass
class Stack:
    exporter: ExporterProcess
    prometheus: Prometheus
    queue: str


@pytest.fixture
def stack(redis_url: str, unique_name: str, tmp_path: Path) -> Iterator[Stack]:
    queue = f"drill-{unique_name}"
    exporter = ExporterProcess(
        redis_url,
        tmp_path / "exporter",
        ("-Q", queue, "--queue-poll-interval", "1", "--inspect-interval", "0",
         "--worker-timeout", str(WORKER_TIMEOUT)),
    )  # fmt: skip
    prometheus: Prometheus | None = None
    try:
        exporter.start()
        config = write_test_config(tmp_path / "prometheus", exporter.port)
        set_threshold(config.parent / "alert_rules.yml", "task_running_seconds", HANG_THRESHOLD)
        prometheus = Prometheus(config, config.parent)
        prometheus.wait_ready()
        yield Stack(exporter, prometheus, queue)
    finally:
        if prometheus is not None:
            prometheus.stop()
        exporter.stop()


def set_threshold(rules: Path, name: str, value: float) -> None:
    """The default (unlabelled) celery:alert_threshold:<name> of the test copy set to value."""
    document = yaml.safe_load(rules.read_text())
    (rule,) = [
        r
        for g in document["groups"]
        for r in g["rules"]
        if r.get("record") == f"celery:alert_threshold:{name}" and not r.get("labels")
    ]
    rule["expr"] = f"vector({value})"
    rules.write_text(yaml.safe_dump(document))


def active(prometheus: Prometheus, alertname: str) -> list[dict[str, Any]]:
    """Labels of the alert's pending or firing instances."""
    return [
        alert["labels"]
        for alert in prometheus.alerts()
        if alert["labels"]["alertname"] == alertname and alert["state"] in ("pending", "firing")
    ]


def stays_quiet(prometheus: Prometheus, alertname: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert active(prometheus, alertname) == [], f"{alertname} without the fault"
        time.sleep(0.5)


def seconds_to_pending(
    prometheus: Prometheus, alertname: str, since: float, bound: float, **labels: str
) -> float:
    """Seconds from `since` (monotonic) until the alert is pending (or firing) with labels."""

    def pending() -> bool:
        return any(labels.items() <= a.items() for a in active(prometheus, alertname))

    wait_for(pending, bound - (time.monotonic() - since), f"{alertname} {labels}", step=0.2)
    return time.monotonic() - since


class NormalWork:
    """The workload without the fault, in a thread: additions and short sleeps, without end."""

    def __init__(self, broker_url: str, queue: str) -> None:
        self.app = producer(broker_url)
        self.queue = queue
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0
        while not self.stopped.wait(0.2):
            send(self.app, "workload.add", self.queue, args=(tick, 1))
            if tick % 5 == 0:  # 1.5 s: a task that runs a while, well below the threshold
                send(self.app, "workload.sleep", self.queue, args=(1.5,))
            tick += 1

    def __enter__(self) -> NormalWork:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(5)


def total(exporter: ExporterProcess, metric: str, **labels: str) -> float:
    """The sum of `metric` over the series that carry `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in exporter.scrape().items() if n == metric and wanted <= ls)


def test_a_hung_task_goes_pending_naming_its_task_and_queue(
    stack: Stack, redis_url: str, worker_factory: WorkerFactory
) -> None:
    prometheus, queue = stack.prometheus, stack.queue
    worker = worker_factory(redis_url, queues=[queue], concurrency=2)
    with NormalWork(redis_url, queue):
        # Without the fault: tasks run up to 1.5 s, the threshold is 4 s.
        stays_quiet(prometheus, "CeleryTaskHung", QUIET_SECONDS)
        seen = prometheus.query(
            f'max_over_time(celery_task_oldest_running_age_seconds{{queue_name="{queue}",'
            f'name="workload.sleep"}}[{int(QUIET_SECONDS)}s])'
        )
        longest = max(float(s["value"][1]) for s in seen)
        assert longest > 0.5, "the quiet phase saw no running task: it tests nothing"

        # The fault: one task that blocks, among the normal ones.
        sent = time.monotonic()
        send(producer(redis_url), "workload.hang", queue, args=(60.0,))
        seconds = seconds_to_pending(
            prometheus,
            "CeleryTaskHung",
            sent,
            HANG_THRESHOLD + PENDING_BOUND,
            name="workload.hang",
            queue_name=queue,
        )
        # Timed from its start, which comes after the send: never pending before the threshold.
        assert seconds >= HANG_THRESHOLD
        alerts = active(prometheus, "CeleryTaskHung")
        assert {(a["name"], a["queue_name"]) for a in alerts} == {("workload.hang", queue)}
        print(
            f"\nhung: quiet {QUIET_SECONDS:.0f} s (longest normal run seen {longest:.1f} s);"
            f" CeleryTaskHung pending {seconds:.1f} s after the hung task was sent"
            f" (threshold {HANG_THRESHOLD:.0f} s, bound {HANG_THRESHOLD + PENDING_BOUND:.0f} s)"
        )

    # A worker that goes away takes its running task out of the figure (section 2 counts it).
    worker.kill()
    killed = time.monotonic()
    stack.exporter.wait_value(
        "celery_task_oldest_running_age_seconds",
        {"name": "workload.hang", "queue_name": queue},
        lambda v: v == 0,
        timeout=WORKER_TIMEOUT + PENDING_BOUND,
    )
    gone = time.monotonic() - killed
    print(f"hung: the killed worker's task left the figure {gone:.1f} s after the kill")


def test_tasks_that_expire_in_a_queue_without_a_worker_are_counted_expired(
    stack: Stack, redis_url: str, worker_factory: WorkerFactory
) -> None:
    prometheus, exporter, queue = stack.prometheus, stack.exporter, stack.queue
    tasks = 5
    app = producer(redis_url)

    def send_expiring(expires: float) -> None:
        with app.producer_or_acquire() as publisher:
            for i in range(tasks):
                app.send_task(
                    "workload.add", (i, 1), queue=queue, expires=expires, producer=publisher
                )

    # Without the fault: a worker takes them well within their `expires`.
    worker = worker_factory(redis_url, queues=[queue], hostname=f"on-time@{queue}")
    send_expiring(3.0)
    wait_for(
        lambda: total(exporter, "celery_task_succeeded_total", name="workload.add") >= tasks,
        20.0,
        "the on-time tasks to succeed",
    )
    stays_quiet(prometheus, "CeleryTaskExpired", 3 * float(SHORT_FOR.rstrip("s")) + 2)
    worker.stop()
    expired_labels = {"name": "workload.add", "queue_name": queue, "reason": "expired"}
    assert total(exporter, "celery_task_revoked_by_reason_total", **expired_labels) == 0

    # The fault: sent with a short `expires` to a queue no worker consumes; a worker comes later.
    sent = time.monotonic()
    send_expiring(1.0)
    # Their `expires` is on the wall clock of the worker that receives them: let it pass.
    time.sleep(max(0.0, sent + 1.5 - time.monotonic()))
    worker_factory(redis_url, queues=[queue], hostname=f"late@{queue}")
    started = time.monotonic()
    wait_for(
        lambda: total(exporter, "celery_task_revoked_by_reason_total", **expired_labels) >= tasks,
        20.0,
        "the expired tasks' task-revoked",
    )
    expired = total(exporter, "celery_task_revoked_by_reason_total", **expired_labels)
    revoked = total(exporter, "celery_task_revoked_total", name="workload.add", queue_name=queue)
    succeeded = total(exporter, "celery_task_succeeded_total", name="workload.add")
    assert (expired, revoked, succeeded) == (tasks, tasks, tasks)  # none of the late ones ran
    other = {"name": "workload.add", "queue_name": queue}
    assert total(exporter, "celery_task_revoked_by_reason_total", **other) == tasks
    seconds = seconds_to_pending(
        prometheus,
        "CeleryTaskExpired",
        started,
        PENDING_BOUND,
        name="workload.add",
        queue_name=queue,
    )
    print(
        f"\nexpired: {expired:.0f} of {tasks} counted expired ({revoked:.0f} revoked, drop-in);"
        f" CeleryTaskExpired pending {seconds:.1f} s after the late worker was ready"
        f" (bound {PENDING_BOUND:.0f} s); quiet while on time"
    )
