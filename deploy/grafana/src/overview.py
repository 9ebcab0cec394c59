"""Celery / Overview: workers, tasks, queues and the exporter's own health at a glance."""

from __future__ import annotations

from board import celery_dashboard
from grafana_foundation_sdk.builders.dashboard import Dashboard
from panels import RED_BELOW_1, row, stat, target, timeseries, up_down
from queries import QUEUE, TASK, WORKER, aggregate, gauge, increase, quantile, rate, select

UID = "celery-overview"
RECORDED = " Needs the recording rules in deploy/alert_rules.yml."


def _percentiles(histogram: str) -> list[tuple[str, str]]:
    return [(quantile(q, histogram, QUEUE, TASK), f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)]


def dashboard() -> Dashboard:
    task_events = [
        target(aggregate("sum", rate(f"celery_task_{event}_total", QUEUE, TASK)), event)
        for event in ("received", "succeeded", "failed", "retried")
    ]
    return (
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
            )
        )
        .with_panel(
            stat(
                "Tasks running",
                "Tasks being executed, from the workers' last heartbeats.",
                target(aggregate("sum", gauge("celery_worker_tasks_active", WORKER)), "active"),
            )
        )
        .with_panel(
            stat(
                "Tasks waiting",
                "Messages ready in the broker queues, not yet taken by a worker.",
                target(aggregate("sum", gauge("celery_queue_length", QUEUE)), "waiting"),
                steps=[("green", None), ("orange", 100), ("red", 1000)],
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
            )
        )
        .with_panel(
            stat(
                "Broker",
                "Whether the exporter's event consumer is connected to the broker.",
                target(aggregate("min", select("celery_exporter_broker_up")), "broker"),
                steps=RED_BELOW_1,
                mappings=up_down("DOWN", "UP"),
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
        # Exporter health is about each exporter process: min/max over replicas, not dedup,
        # so that one replica of an HA pair in trouble shows.
        .with_row(row("Exporter"))
        .with_panel(
            stat(
                "Exporter scraped",
                "Whether Prometheus reaches the exporter (the up series of its job).",
                target(aggregate("min", select("up")), "up"),
                steps=RED_BELOW_1,
                mappings=up_down("DOWN", "UP"),
            )
        )
        .with_panel(
            stat(
                "Queue poll",
                "Whether the last broker queue-length poll succeeded.",
                target(aggregate("min", select("celery_exporter_queue_poll_success")), "poll"),
                steps=RED_BELOW_1,
                mappings=up_down("FAILING", "OK"),
            )
        )
        .with_panel(
            stat(
                "Last event",
                "Seconds since the exporter received the last Celery event.",
                target(
                    "time() - "
                    + aggregate("max", select("celery_exporter_last_event_timestamp_seconds")),
                    "age",
                ),
                unit="s",
                steps=[("green", None), ("orange", 60), ("red", 300)],
            )
        )
        .with_panel(
            stat(
                "Skipped events /s",
                "Events or messages the exporter could not use, per second.",
                target(
                    aggregate("sum", rate("celery_exporter_event_errors_total")) + " or vector(0)",
                    "skipped /s",
                ),
                unit="reqps",
                steps=[("green", None), ("orange", 0.001)],
            )
        )
        .with_panel(
            stat(
                "Broker reconnects",
                "Times the event consumer reconnected to the broker during the dashboard's time"
                " range.",
                target(
                    aggregate(
                        "sum",
                        increase("celery_exporter_broker_reconnects_total", window="$__range"),
                    ),
                    "reconnects",
                ),
                steps=[("green", None), ("orange", 1)],
                decimals=0,
            )
        )
        .with_panel(
            stat(
                "Queue poll duration",
                "Seconds the last broker queue-length poll took.",
                target(
                    aggregate("max", select("celery_exporter_queue_poll_duration_seconds")), "poll"
                ),
                unit="s",
                steps=[("green", None), ("orange", 1), ("red", 3)],
            )
        )
        .with_panel(
            timeseries(
                "Events received /s",
                "Celery events the exporter received, by type.",
                target(
                    aggregate("sum", rate("celery_exporter_events_total"), ("event",)), "{{event}}"
                ),
                unit="reqps",
                width=24,
            )
        )
    )
