"""Celery / Overview: workers, tasks, queues and the exporter's own health at a glance."""

from __future__ import annotations

from board import celery_dashboard
from exporter_row import with_exporter_row
from grafana_foundation_sdk.builders.dashboard import Dashboard
from panels import RED_BELOW_1, row, stat, target, timeseries, up_down
from queries import QUEUE, TASK, WORKER, aggregate, gauge, quantile, rate, select

UID = "celery-overview"
RECORDED = " Needs the recording rules in deploy/alert_rules.yml."
# The Health row's stats: 8 of them fill the 24 columns.
HEALTH_WIDTH = 3
# Seconds: CeleryQueueOldestTaskAgeHigh's default threshold
# (celery:alert_threshold:queue_oldest_task_age_seconds); the stat turns red there.
OLDEST_TASK_AGE_ALERT = 600


def _percentiles(histogram: str) -> list[tuple[str, str]]:
    return [(quantile(q, histogram, QUEUE, TASK), f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)]


def dashboard() -> Dashboard:
    task_events = [
        target(aggregate("sum", rate(f"celery_task_{event}_total", QUEUE, TASK)), event)
        for event in ("received", "succeeded", "failed", "retried")
    ]
    board = (
        celery_dashboard(
            UID, "Overview", "Workers, tasks, queues and the exporter's own health at a glance."
        )
        .with_row(row("Health"))
        .with_panel(
            stat(
                "Workers online",
                "Workers whose last heartbeat is within --worker-timeout.",
                target(aggregate("sum", gauge("celery_worker_up", WORKER)), "online"),
                steps=RED_BELOW_1,
                width=HEALTH_WIDTH,
            )
        )
        .with_panel(
            stat(
                "Tasks running",
                "Tasks being executed, from the workers' last heartbeats.",
                target(aggregate("sum", gauge("celery_worker_tasks_active", WORKER)), "active"),
                width=HEALTH_WIDTH,
            )
        )
        .with_panel(
            stat(
                "Tasks waiting",
                "Messages ready in the broker queues, not yet taken by a worker.",
                target(aggregate("sum", gauge("celery_queue_length", QUEUE)), "waiting"),
                steps=[("green", None), ("orange", 100), ("red", 1000)],
                width=HEALTH_WIDTH,
            )
        )
        .with_panel(
            stat(
                "Oldest waiting task",
                "Seconds the oldest task not yet started has waited, in the selected queues (from"
                " task-sent events, or the ETA; on Redis also the queue heads). Red at the"
                " CeleryQueueOldestTaskAgeHigh threshold.",
                target(
                    aggregate("max", gauge("celery_queue_oldest_task_age_seconds", QUEUE)), "oldest"
                ),
                unit="s",
                steps=[
                    ("green", None),
                    ("orange", OLDEST_TASK_AGE_ALERT // 2),
                    ("red", OLDEST_TASK_AGE_ALERT),
                ],
                width=HEALTH_WIDTH,
            )
        )
        .with_panel(
            stat(
                "Tasks finished /s",
                "Succeeded plus failed tasks per second over 5 minutes." + RECORDED,
                target(
                    aggregate("sum", select("celery:task_completed:rate5m", QUEUE, TASK)),
                    "finished /s",
                ),
                unit="reqps",
                width=HEALTH_WIDTH,
            )
        )
        .with_panel(
            stat(
                "Failure ratio",
                "Failed over finished tasks, 5 minute rates." + RECORDED,
                target(
                    f"({aggregate('sum', select('celery:task_failed:rate5m', QUEUE, TASK))}"
                    " or vector(0))"
                    f" / {aggregate('sum', select('celery:task_completed:rate5m', QUEUE, TASK))}",
                    "failed",
                ),
                unit="percentunit",
                steps=[("green", None), ("orange", 0.05), ("red", 0.1)],
                decimals=1,
                width=HEALTH_WIDTH,
            )
        )
        .with_panel(
            stat(
                "Broker",
                "Whether the exporter's event consumer is connected to the broker.",
                target(aggregate("min", select("celery_exporter_broker_up")), "broker"),
                steps=RED_BELOW_1,
                mappings=up_down("DOWN", "UP"),
                width=HEALTH_WIDTH,
            )
        )
        .with_panel(
            stat(
                "Task events missed (10m)",
                "Tasks the workers' heartbeats say started whose task-started event never reached"
                " the exporter, over 10 minutes. Above 0, task counters and histograms read"
                " low." + RECORDED,
                target(
                    aggregate("sum", select("celery:exporter_task_events_missed:increase10m"))
                    + " or vector(0)",
                    "missed",
                ),
                steps=[("green", None), ("orange", 1), ("red", 10)],
                decimals=0,
                width=HEALTH_WIDTH,
            )
        )
        .with_row(row("Tasks"))
        .with_panel(
            timeseries(
                "Task events /s",
                "Tasks per second by lifecycle event, summed over the selected tasks and queues.",
                *task_events,
                unit="reqps",
            )
        )
        .with_panel(
            timeseries(
                "Failure ratio by task",
                "Failed over finished tasks per task name and queue, 5 minute rates." + RECORDED,
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
                "Task runtime",
                "Percentiles of the runtime of succeeded tasks. A percentile in the +Inf bucket"
                " reads as the highest finite --buckets bound.",
                *[target(expr, legend) for expr, legend in _percentiles("celery_task_runtime")],
                unit="s",
            )
        )
        .with_panel(
            timeseries(
                "Queue wait",
                "Percentiles of the time from task-sent (or the ETA) to task-started. Needs"
                " task_send_sent_event on the producers.",
                *[
                    target(expr, legend)
                    for expr, legend in _percentiles("celery_task_queue_wait_time")
                ],
                unit="s",
            )
        )
        .with_row(row("Queues"))
        .with_panel(
            timeseries(
                "Queue length",
                "Messages ready in each queue (all priority sub-queues).",
                target(
                    aggregate("sum", gauge("celery_queue_length", QUEUE), ("queue_name",)),
                    "{{queue_name}}",
                ),
                min_value=0,
                width=8,
            )
        )
        .with_panel(
            timeseries(
                "Oldest waiting task by queue",
                "Seconds the oldest task not yet started has waited in each queue; 0 when none"
                " waits. Rising steadily: nothing takes tasks from the queue.",
                target(
                    gauge("celery_queue_oldest_task_age_seconds", QUEUE),
                    "{{queue_name}}",
                ),
                unit="s",
                min_value=0,
                width=8,
            )
        )
        .with_panel(
            timeseries(
                "Consumers per queue",
                "Consumers and worker processes serving each queue. A queue with messages and no"
                " consumer never drains.",
                target(
                    aggregate("sum", gauge("celery_active_consumer_count", QUEUE), ("queue_name",)),
                    "{{queue_name}} consumers",
                ),
                target(
                    aggregate("sum", gauge("celery_active_process_count", QUEUE), ("queue_name",)),
                    "{{queue_name}} processes",
                ),
                min_value=0,
                width=8,
            )
        )
        .with_panel(
            timeseries(
                "Work per queue",
                "Tasks waiting in the broker plus those the queue's workers hold (prefetched and"
                " running): celery:queue_work:sum, the KEDA signal. Above the queue length: workers"
                " hoard prefetched tasks." + RECORDED,
                target(select("celery:queue_work:sum", QUEUE), "{{queue_name}}"),
                target(
                    select("celery:queue_work_per_process:ratio", QUEUE),
                    "{{queue_name}} per process",
                ),
                min_value=0,
                width=12,
            )
        )
        .with_panel(
            timeseries(
                "Periodic tasks overdue",
                "Seconds each beat_schedule entry (exporter --app) is past its expected run with no"
                " run seen; 0 while on time. No data without --app.",
                target(gauge("celery_beat_entry_overdue_seconds", TASK), "{{entry}} ({{name}})"),
                unit="s",
                min_value=0,
                width=12,
            )
        )
        .with_row(row("Workers"))
        .with_panel(
            timeseries(
                "Workers online",
                "Workers reporting up, against every worker the exporter still remembers.",
                target(aggregate("sum", gauge("celery_worker_up", WORKER)), "online"),
                target(aggregate("count", gauge("celery_worker_up", WORKER)), "known"),
                min_value=0,
            )
        )
        .with_panel(
            timeseries(
                "Running tasks by worker",
                "Tasks being executed, from each worker's heartbeats.",
                target(
                    aggregate("sum", gauge("celery_worker_tasks_active", WORKER), ("worker",)),
                    "{{worker}}",
                ),
                min_value=0,
                stacked=True,
            )
        )
    )
    return with_exporter_row(board)
