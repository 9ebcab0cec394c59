"""The metric catalogue: every metric's name, type, help text and labels, in one place.

Collectors build families from these specs at scrape time; the README's metric table is kept in
step with this module by a test. Names are given without the prefix: `--metric-prefix`
(default `celery_`) is put in front of every one of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from .families import Family

Kind = Literal["counter", "gauge", "histogram", "info"]

DEFAULT_PREFIX = "celery_"

DEFAULT_RUNTIME_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    math.inf,
)
DEFAULT_QUEUE_WAIT_BUCKETS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    math.inf,
)

TASK_LABELS = ("name", "hostname", "queue_name")
WORKER_LABELS = ("hostname", "worker")
QUEUE_LABELS = ("queue_name",)
BEAT_LABELS = ("entry", "name")  # the beat_schedule key, and the task name it sends


@dataclass(frozen=True)
class MetricSpec:
    """One metric family. `name` has no prefix; for counters it has no `_total` either."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    # True for the names kept from danihodovic/celery-exporter so its dashboards keep working,
    # even where they break today's naming rules (no unit suffix, `_count` on a gauge).
    compat: bool = False

    def exposed_name(self, prefix: str) -> str:
        """The name as it appears in the exposition (counters gain `_total` there)."""
        suffix = "_total" if self.kind == "counter" else ""
        return f"{prefix}{self.name}{suffix}"


def _task_counter(event: str, labels: tuple[str, ...] = TASK_LABELS) -> MetricSpec:
    return MetricSpec(
        f"task_{event}",
        "counter",
        f"Tasks with a task-{event} event. Source: Celery event stream.",
        labels,
        compat=True,
    )


CATALOGUE: tuple[MetricSpec, ...] = (
    # --- task metrics, from the event stream (drop-in names) ---
    _task_counter("sent"),
    _task_counter("received"),
    _task_counter("started"),
    _task_counter("succeeded"),
    _task_counter("failed", ("name", "hostname", "exception", "queue_name")),
    _task_counter("rejected"),
    _task_counter("revoked"),
    _task_counter("retried"),
    MetricSpec(
        "task_revoked_by_reason",
        "counter",
        "Tasks revoked, by reason: expired (dropped unrun), terminated (killed while "
        "running) or other. Source: Celery event stream (task-revoked).",
        (*TASK_LABELS, "reason"),
    ),
    MetricSpec(
        "task_oldest_running_age_seconds",
        "gauge",
        "Seconds the oldest running task of this name and queue has run, on a live worker; "
        "0: none. Source: Celery event stream and heartbeats.",
        ("name", "queue_name"),
    ),
    MetricSpec(
        "task_runtime",
        "histogram",
        "Seconds a succeeded task ran in the pool (task-succeeded runtime).",
        TASK_LABELS,
        compat=True,
    ),
    MetricSpec(
        "task_queue_wait_time",
        "histogram",
        "Seconds from task-sent (or the ETA, if later) to task-started; needs task-sent events.",
        TASK_LABELS,
        compat=True,
    ),
    MetricSpec(
        "task_failed_runtime_seconds",
        "histogram",
        "Seconds a failed task ran, task-started to task-failed on the worker's own clock.",
        TASK_LABELS,
    ),
    # --- worker metrics, from heartbeats ---
    MetricSpec(
        "worker_up",
        "gauge",
        "1 if the worker sent a heartbeat within --worker-timeout seconds, else 0.",
        WORKER_LABELS,
        compat=True,
    ),
    MetricSpec(
        "worker_tasks_active",
        "gauge",
        "Tasks the worker is executing, from its last heartbeat.",
        WORKER_LABELS,
        compat=True,
    ),
    MetricSpec(
        "worker_last_heartbeat_timestamp_seconds",
        "gauge",
        "Unix time (exporter clock) at which the worker's last heartbeat arrived.",
        WORKER_LABELS,
    ),
    MetricSpec(
        "worker_tasks_processed",
        "counter",
        "Tasks the worker has processed (started), from its heartbeats; a restart under the "
        "same node name continues the count.",
        WORKER_LABELS,
    ),
    MetricSpec(
        "worker_loadavg",
        "gauge",
        "System load average of the worker's host over `period`, from its heartbeats.",
        (*WORKER_LABELS, "period"),
    ),
    MetricSpec(
        "worker_task_events_enabled",
        "gauge",
        "1 if the worker sends task events, 0 if it processes tasks without sending them "
        "(start it with -E). Absent until known.",
        WORKER_LABELS,
    ),
    MetricSpec(
        "worker_tasks_prefetched",
        "gauge",
        "Tasks the worker has received and not started, with no ETA or one that has passed, "
        "from task events (received minus started/finished/rejected/revoked).",
        WORKER_LABELS,
    ),
    MetricSpec(
        "worker_tasks_scheduled",
        "gauge",
        "Tasks the worker has received with an ETA still in the future (exporter clock), "
        "from task events.",
        WORKER_LABELS,
    ),
    MetricSpec(
        "worker_concurrency",
        "gauge",
        "Pool size (max concurrency) of the worker, from inspect stats.",
        WORKER_LABELS,
    ),
    MetricSpec(
        "worker_queue_info",
        "gauge",
        "Always 1: the worker consumes the queue, from inspect active_queues. For joins, "
        "e.g. idle pool slots per queue.",
        (*WORKER_LABELS, "queue_name"),
    ),
    MetricSpec(
        "worker_cpu_seconds",
        "counter",
        "CPU seconds used by the worker's main process and reaped children, by mode "
        "(user|system), from inspect stats rusage.",
        (*WORKER_LABELS, "mode"),
    ),
    MetricSpec(
        "worker_max_rss_bytes",
        "gauge",
        "Peak resident set size of the worker in bytes, from inspect stats rusage.",
        WORKER_LABELS,
    ),
    # --- queue metrics, from the broker poll and inspect (drop-in names) ---
    MetricSpec(
        "queue_length",
        "gauge",
        "Messages ready in the queue (all priority sub-queues), from the broker poll.",
        QUEUE_LABELS,
        compat=True,
    ),
    MetricSpec(
        "queue_unacked_messages",
        "gauge",
        "Messages delivered to workers but not yet acknowledged (not in queue_length), "
        "from the broker poll.",
        QUEUE_LABELS,
    ),
    MetricSpec(
        "queue_oldest_task_age_seconds",
        "gauge",
        "Seconds the oldest unstarted task has waited since task-sent or ETA. Source: "
        "task-sent events; Redis also list heads (lower bound).",
        QUEUE_LABELS,
    ),
    MetricSpec(
        "queue_oldest_running_task_age_seconds",
        "gauge",
        "Seconds the oldest running task of the queue has run, on a live worker; 0: none. "
        "Source: Celery event stream and heartbeats.",
        QUEUE_LABELS,
    ),
    MetricSpec(
        "active_consumer_count",
        "gauge",
        "Consumers of the queue, from the broker (RabbitMQ) or the workers' active_queues.",
        QUEUE_LABELS,
        compat=True,
    ),
    MetricSpec(
        "active_worker_count",
        "gauge",
        "Workers consuming the queue, from inspect active_queues.",
        QUEUE_LABELS,
        compat=True,
    ),
    MetricSpec(
        "active_process_count",
        "gauge",
        "Pool processes of the workers consuming the queue, from inspect stats.",
        QUEUE_LABELS,
        compat=True,
    ),
    # --- periodic tasks: the --app beat_schedule, and runs seen in the event stream ---
    MetricSpec(
        "beat_entry_last_run_timestamp_seconds",
        "gauge",
        "Unix time of the last run seen of the entry's task (task-sent, else task-received); "
        "absent until one is seen. Source: Celery event stream, --app.",
        BEAT_LABELS,
    ),
    MetricSpec(
        "beat_entry_next_run_timestamp_seconds",
        "gauge",
        "Unix time the entry's schedule expects the run after the last seen (or after the "
        "exporter's start). Source: --app beat_schedule.",
        BEAT_LABELS,
    ),
    MetricSpec(
        "beat_entry_overdue_seconds",
        "gauge",
        "Seconds (exporter clock) since the entry's expected next run with no run seen; 0 "
        "while it is not due. Source: --app beat_schedule and the Celery event stream.",
        BEAT_LABELS,
    ),
    # --- the exporter's own health ---
    MetricSpec(
        "exporter_build_info",
        "gauge",
        "Always 1; labels give the exporter, Celery and Python versions.",
        ("version", "celery_version", "python_version"),
    ),
    MetricSpec(
        "exporter_broker_up",
        "gauge",
        "1 if the event consumer is connected to the broker, else 0.",
    ),
    MetricSpec(
        "exporter_events",
        "counter",
        "Celery events received, by event type.",
        ("event",),
    ),
    MetricSpec(
        "exporter_event_errors",
        "counter",
        "Events or messages that could not be used and were skipped, by reason.",
        ("reason",),
    ),
    MetricSpec(
        "exporter_task_events_missed",
        "counter",
        "Tasks the worker's heartbeats say it started whose task-started event never "
        "arrived, counted after a 10 s grace.",
        WORKER_LABELS,
    ),
    MetricSpec(
        "exporter_broker_reconnects",
        "counter",
        "Times the event consumer reconnected to the broker after losing it.",
    ),
    MetricSpec(
        "exporter_last_event_timestamp_seconds",
        "gauge",
        "Unix time (exporter clock) at which the last event arrived.",
    ),
    MetricSpec(
        "exporter_tracked_tasks",
        "gauge",
        "Tasks held in the in-flight task table (bounded by --max-tracked-tasks).",
    ),
    MetricSpec(
        "exporter_cardinality_overflow",
        "counter",
        "Events whose task name or worker was folded into the __overflow__ label value "
        "because a cardinality cap was reached, by label.",
        ("label",),
    ),
    MetricSpec(
        "exporter_queue_poll_success",
        "gauge",
        "1 if the last broker queue poll succeeded, else 0.",
    ),
    MetricSpec(
        "exporter_queue_poll_duration_seconds",
        "gauge",
        "Seconds the last broker queue poll took.",
    ),
    MetricSpec(
        "exporter_queue_poll_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful broker queue poll.",
    ),
    MetricSpec(
        "exporter_queue_length_supported",
        "gauge",
        "1 if the broker transport can report queue lengths, else 0.",
    ),
    MetricSpec(
        "exporter_inspect_success",
        "gauge",
        "1 if the last inspect round (active_queues, stats) completed, even with no worker "
        "replying, else 0.",
    ),
    MetricSpec(
        "exporter_inspect_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last inspect round that got an answer.",
    ),
    MetricSpec(
        "exporter_http_requests",
        "counter",
        "HTTP requests served, by handler and status code.",
        ("handler", "code"),
    ),
)

SPECS: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOGUE}


class FamilyFactory:
    """Builds metric families from specs with the configured prefix and static labels."""

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        static_labels: Sequence[tuple[str, str]] = (),
        disabled: Iterable[str] = (),
    ) -> None:
        self.prefix = prefix
        self.static_names = tuple(name for name, _ in static_labels)
        self.static_values = tuple(value for _, value in static_labels)
        self.disabled = frozenset(disabled)

    def enabled(self, name: str) -> bool:
        return name not in self.disabled

    def new(self, name: str) -> Family:
        """An empty family for the spec called `name` (prefix-less, without `_total`)."""
        spec = SPECS[name]
        return Family(
            f"{self.prefix}{spec.name}", spec.kind, spec.help, (*spec.labels, *self.static_names)
        )

    def labels(self, values: Sequence[str]) -> list[str]:
        """Label values with the static labels' values appended, in family order."""
        return [*values, *self.static_values]
