"""The Celery app that integration-test workers run: a few named tasks and one route.

Configured from the environment so a worker subprocess and the test share it: the broker from
`CE_TEST_BROKER_URL`; task-sent events on unless `CE_TEST_SENT_EVENTS=0`; `broker_use_ssl` and
`broker_transport_options` as JSON from `CE_TEST_BROKER_USE_SSL` and
`CE_TEST_BROKER_TRANSPORT_OPTIONS` (TLS and Sentinel brokers). No result backend.

Its `beat_schedule` is what `celery beat` runs in the periodic-task drill and what the exporter's
`--app` reads there and in the end-to-end runs: `tick`, every `CE_TEST_BEAT_SECONDS` seconds
(3600 unless set), and `nightly`, a crontab; both send `workload.add`, so they also show how two
entries naming one task share its runs. Workers ignore it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from celery import Celery
from celery.exceptions import Reject
from celery.schedules import crontab

app = Celery("workload", broker=os.environ.get("CE_TEST_BROKER_URL", "memory://"))
app.conf.update(
    task_send_sent_event=os.environ.get("CE_TEST_SENT_EVENTS", "1") != "0",
    worker_send_task_events=True,
    task_routes={"workload.routed": {"queue": "routed"}},
    broker_connection_retry_on_startup=True,
    # Tests that count unacked (prefetched) messages set this to make the count exact.
    worker_prefetch_multiplier=int(os.environ.get("CE_TEST_PREFETCH_MULTIPLIER", "4")),
)
app.conf.beat_schedule = {
    "tick": {
        "task": "workload.add",
        "schedule": float(os.environ.get("CE_TEST_BEAT_SECONDS", "3600")),
        "args": (0, 0),
    },
    "nightly": {"task": "workload.add", "schedule": crontab(hour=3, minute=0), "args": (0, 1)},
}
# The section 6 drill: a worker that holds what it prefetched until each task is done.
if os.environ.get("CE_TEST_ACKS_LATE") == "1":
    app.conf.task_acks_late = True
if os.environ.get("CE_TEST_BROKER_USE_SSL"):
    app.conf.broker_use_ssl = json.loads(os.environ["CE_TEST_BROKER_USE_SSL"])
if os.environ.get("CE_TEST_BROKER_TRANSPORT_OPTIONS"):
    app.conf.broker_transport_options = json.loads(os.environ["CE_TEST_BROKER_TRANSPORT_OPTIONS"])


@app.task(name="workload.add")  # type: ignore[untyped-decorator]
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="workload.fail")  # type: ignore[untyped-decorator]
def fail() -> None:
    raise ValueError("boom")


@app.task(name="workload.retry_once", bind=True)  # type: ignore[untyped-decorator]
def retry_once(self: Any) -> str:
    if self.request.retries < 1:
        raise self.retry(countdown=1)
    return "done"


# acks_late: a task rejects its message only while it is still unacknowledged, and only then
# does the worker send task-rejected.
@app.task(name="workload.reject", acks_late=True)  # type: ignore[untyped-decorator]
def reject() -> None:
    raise Reject("rejected by the workload", requeue=False)


@app.task(name="workload.sleep")  # type: ignore[untyped-decorator]
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# A task that hangs: it blocks on an event nobody sets, as on a call without a timeout, for at
# most `seconds` (so a test's worker still stops).
@app.task(name="workload.hang")  # type: ignore[untyped-decorator]
def hang(seconds: float) -> None:
    threading.Event().wait(seconds)


@app.task(name="workload.routed")  # type: ignore[untyped-decorator]
def routed() -> str:
    return "routed"


# The report's figure test needs each task's true queue wait: the producer passes its send time
# and the task returns how long it waited, which the worker logs ("succeeded in Xs: <wait>").
@app.task(name="workload.timed")  # type: ignore[untyped-decorator]
def timed(sent_at: float, seconds: float) -> float:
    waited = time.time() - sent_at
    time.sleep(seconds)
    return round(waited, 6)
