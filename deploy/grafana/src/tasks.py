"""Celery / Tasks: throughput, failures, retries, runtime, queue wait, running and expired tasks
per task name."""

from __future__ import annotations

from board import celery_dashboard
from grafana_foundation_sdk.builders.dashboard import Dashboard
from panels import row, stat, target, timeseries
from queries import QUEUE, TASK, aggregate, gauge, quantile, rate, select

UID = "celery-tasks"


def _by(labels: tuple[str, ...], metric: str) -> str:
    """Per-second rate of a task counter over the selected tasks, summed by `labels`."""
    return aggregate("sum", rate(metric, QUEUE, TASK), labels)


def dashboard() -> Dashboard:
    return (
        celery_dashboard(
            UID,
            "Tasks",
            "Throughput, failures, retries, runtime, queue wait, running and expired tasks per"
            " task name.",
            hidden=("worker",),
        )
        .with_row(row("Selected tasks"))
        .with_panel(
            stat(
                "Succeeded /s",
                "Succeeded tasks per second.",
                target(_by((), "celery_task_succeeded_total"), "succeeded"),
                unit="reqps",
                width=6,
            )
        )
        .with_panel(
            stat(
                "Failed /s",
                "Failed tasks per second.",
                target(_by((), "celery_task_failed_total") + " or vector(0)", "failed"),
                unit="reqps",
                steps=[("green", None), ("orange", 0.001)],
                width=6,
            )
        )
        .with_panel(
            stat(
                "Runtime p95",
                "95th percentile runtime of succeeded tasks.",
                target(quantile(0.95, "celery_task_runtime", QUEUE, TASK), "p95"),
                unit="s",
                width=6,
            )
        )
        .with_panel(
            stat(
                "Queue wait p95",
                "95th percentile of the time from task-sent (or the ETA) to task-started.",
                target(quantile(0.95, "celery_task_queue_wait_time", QUEUE, TASK), "p95"),
                unit="s",
                width=6,
            )
        )
        .with_row(row("Throughput"))
        .with_panel(
            timeseries(
                "Succeeded /s by task",
                "Succeeded tasks per second, per task name.",
                target(_by(("name",), "celery_task_succeeded_total"), "{{name}}"),
                unit="reqps",
            )
        )
        .with_panel(
            timeseries(
                "Sent and started /s by task",
                "Tasks published (task-sent, needs task_send_sent_event) against tasks started by"
                " workers. Sent above started for long means a backlog builds.",
                target(_by(("name",), "celery_task_sent_total"), "{{name}} sent"),
                target(_by(("name",), "celery_task_started_total"), "{{name}} started"),
                unit="reqps",
            )
        )
        .with_panel(
            timeseries(
                "Failed /s by task and exception",
                "Failed tasks per second, per task name and exception class.",
                target(
                    _by(("name", "exception"), "celery_task_failed_total"),
                    "{{name}} {{exception}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            timeseries(
                "Failure ratio by task",
                "Failed over finished tasks per task name and queue, 5 minute rates. Needs the"
                " recording rules in deploy/alert_rules.yml.",
                target(
                    select("celery:task_failure_ratio:rate5m", QUEUE, TASK),
                    "{{name}} ({{queue_name}})",
                ),
                unit="percentunit",
                min_value=0,
            )
        )
        .with_panel(
            timeseries(
                "Retried /s by task",
                "Retries per second, per task name.",
                target(_by(("name",), "celery_task_retried_total"), "{{name}}"),
                unit="reqps",
            )
        )
        .with_panel(
            timeseries(
                "Succeeded /s by worker host",
                "Succeeded tasks per second, per worker host (the part of the node name after @).",
                target(_by(("hostname",), "celery_task_succeeded_total"), "{{hostname}}"),
                unit="reqps",
            )
        )
        .with_row(row("Latency"))
        .with_panel(
            timeseries(
                "Runtime p95 by task",
                "95th percentile runtime of succeeded tasks, per task name.",
                target(
                    quantile(0.95, "celery_task_runtime", QUEUE, TASK, by=("name",)), "{{name}}"
                ),
                unit="s",
            )
        )
        .with_panel(
            timeseries(
                "Mean runtime by task",
                "Average runtime of succeeded tasks, per task name.",
                target(
                    f"{_by(('name',), 'celery_task_runtime_sum')}"
                    f" / {_by(('name',), 'celery_task_runtime_count')}",
                    "{{name}}",
                ),
                unit="s",
            )
        )
        .with_panel(
            timeseries(
                "Failed runtime p95 by task",
                "95th percentile of how long failing tasks ran before they failed.",
                target(
                    quantile(0.95, "celery_task_failed_runtime_seconds", QUEUE, TASK, by=("name",)),
                    "{{name}}",
                ),
                unit="s",
            )
        )
        .with_panel(
            timeseries(
                "Queue wait p95 by task",
                "95th percentile of the time from task-sent (or the ETA) to task-started, per task"
                " name.",
                target(
                    quantile(0.95, "celery_task_queue_wait_time", QUEUE, TASK, by=("name",)),
                    "{{name}}",
                ),
                unit="s",
            )
        )
        .with_row(row("Hung and dropped"))
        .with_panel(
            timeseries(
                "Oldest running task by task",
                "Seconds the oldest started, unfinished task of each name and queue has run (0:"
                " none runs), against its CeleryTaskHung threshold (per task or queue where set)."
                " A line that climbs without falling back is a task that hangs. The threshold"
                " needs the recording rules in deploy/alert_rules.yml.",
                target(
                    aggregate(
                        "max",
                        gauge("celery_task_oldest_running_age_seconds", QUEUE, TASK),
                        ("name", "queue_name"),
                    ),
                    "{{name}} ({{queue_name}})",
                ),
                target(
                    aggregate(
                        "max",
                        select("celery:task_oldest_running_age:threshold", QUEUE, TASK),
                        ("name", "queue_name"),
                    ),
                    "{{name}} ({{queue_name}}) threshold",
                ),
                unit="s",
                min_value=0,
            )
        )
        .with_panel(
            timeseries(
                "Revoked /s by task and reason",
                "Revoked tasks per second by reason: expired (its expires passed before a worker"
                " took it: the work was dropped), terminated (killed while running) or other.",
                target(
                    _by(("name", "reason"), "celery_task_revoked_by_reason_total"),
                    "{{name}} {{reason}}",
                ),
                unit="reqps",
                min_value=0,
            )
        )
    )
