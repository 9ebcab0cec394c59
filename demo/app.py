"""The demo's Celery app (scripts/demo.sh): a few tasks of each outcome and one routed queue.

What a real project configures for the exporter is here too: task events from the worker
(`worker_send_task_events`, or `-E`) and task-sent events from the producer
(`task_send_sent_event`). The broker comes from `DEMO_BROKER_URL` (demo.sh sets it).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from celery import Celery

app = Celery("demo", broker=os.environ.get("DEMO_BROKER_URL", "redis://127.0.0.1:6399/0"))
app.conf.update(
    task_send_sent_event=True,
    worker_send_task_events=True,
    task_routes={"demo.report": {"queue": "routed"}},
    broker_connection_retry_on_startup=True,
)


@app.task(name="demo.add")  # type: ignore[untyped-decorator]
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="demo.charge_card")  # type: ignore[untyped-decorator]
def charge_card() -> None:
    raise ValueError("card declined")


@app.task(name="demo.fetch_rates", bind=True)  # type: ignore[untyped-decorator]
def fetch_rates(self: Any) -> str:
    if self.request.retries < 1:
        raise self.retry(countdown=1)
    return "rates"


@app.task(name="demo.resize_image")  # type: ignore[untyped-decorator]
def resize_image() -> None:
    time.sleep(random.uniform(0.5, 3.0))


@app.task(name="demo.report")  # type: ignore[untyped-decorator]
def report() -> str:
    return "report"
