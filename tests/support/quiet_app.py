"""tests.support.workload_app with worker task events off: a worker started without -E, as
so many are."""

from __future__ import annotations

from tests.support.workload_app import app

app.conf.worker_send_task_events = False

__all__ = ["app"]
