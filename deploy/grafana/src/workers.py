"""Celery / Workers: per-worker health: heartbeats, saturation, load, CPU and memory."""

from __future__ import annotations

from board import celery_dashboard
from grafana_foundation_sdk.builders.dashboard import Dashboard
from panels import RED_BELOW_1, row, stat, target, timeseries
from queries import QUEUE, RATE_WINDOW, WORKER, aggregate, gauge, increase, rate, select

UID = "celery-workers"
RECORDED = " Needs the recording rules in deploy/alert_rules.yml."


def dashboard() -> Dashboard:
    return (
        celery_dashboard(
            UID,
            "Workers",
            "Per-worker health: heartbeats, saturation, load, CPU and memory.",
            hidden=("task",),
        )
        .with_row(row("Selected workers"))
        .with_panel(
            stat(
                "Workers online",
                "Workers whose last heartbeat is within --worker-timeout.",
                target(aggregate("sum", gauge("celery_worker_up", WORKER)), "online"),
                steps=RED_BELOW_1,
                width=6,
            )
        )
        .with_panel(
            stat(
                "Workers down",
                "Workers the exporter still remembers that stopped sending heartbeats.",
                target(
                    aggregate("count", gauge("celery_worker_up", WORKER) + " == 0")
                    + " or vector(0)",
                    "down",
                ),
                steps=[("green", None), ("red", 1)],
                width=6,
            )
        )
        .with_panel(
            stat(
                "Pool processes",
                "Sum of the workers' pool sizes (concurrency), from inspect stats.",
                target(aggregate("sum", gauge("celery_worker_concurrency", WORKER)), "processes"),
                width=6,
            )
        )
        .with_panel(
            stat(
                "Busy",
                "Running tasks over pool processes.",
                target(
                    f"{aggregate('sum', gauge('celery_worker_tasks_active', WORKER))}"
                    f" / {aggregate('sum', gauge('celery_worker_concurrency', WORKER))}",
                    "busy",
                ),
                unit="percentunit",
                steps=[("green", None), ("orange", 0.8), ("red", 0.95)],
                width=6,
            )
        )
        .with_row(row("Workers"))
        .with_panel(
            timeseries(
                "Up",
                "1 while the worker sends heartbeats, 0 once its last heartbeat is older than"
                " --worker-timeout.",
                target(gauge("celery_worker_up", WORKER), "{{worker}}"),
                min_value=0,
                max_value=1,
            )
        )
        .with_panel(
            timeseries(
                "Heartbeat age",
                "Seconds since each worker's last heartbeat (workers send one every 2 s by"
                " default).",
                target(
                    "time() - " + gauge("celery_worker_last_heartbeat_timestamp_seconds", WORKER),
                    "{{worker}}",
                ),
                unit="s",
                min_value=0,
            )
        )
        .with_panel(
            timeseries(
                "Running tasks and pool size",
                "Tasks being executed against the pool size; running at the pool size means the"
                " worker is saturated.",
                target(
                    aggregate("sum", gauge("celery_worker_tasks_active", WORKER), ("worker",)),
                    "{{worker}} running",
                ),
                target(
                    aggregate("sum", gauge("celery_worker_concurrency", WORKER), ("worker",)),
                    "{{worker}} pool size",
                ),
                min_value=0,
            )
        )
        .with_panel(
            timeseries(
                "Tasks processed /s",
                "Tasks each worker processed per second, from its heartbeats (counted even without"
                " task events).",
                target(
                    aggregate(
                        "sum", rate("celery_worker_tasks_processed_total", WORKER), ("worker",)
                    ),
                    "{{worker}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            timeseries(
                "Load average",
                "System load average of each worker's host, from its heartbeats.",
                target(gauge("celery_worker_loadavg", WORKER), "{{worker}} {{period}}"),
            )
        )
        .with_panel(
            timeseries(
                "CPU",
                "CPU seconds per second used by each worker and its pool, by mode, from inspect"
                " stats.",
                target(
                    aggregate(
                        "sum", rate("celery_worker_cpu_seconds_total", WORKER), ("worker", "mode")
                    ),
                    "{{worker}} {{mode}}",
                ),
                unit="percentunit",
            )
        )
        .with_panel(
            timeseries(
                "Peak memory",
                "Peak resident set size of each worker, from inspect stats.",
                target(gauge("celery_worker_max_rss_bytes", WORKER), "{{worker}}"),
                unit="bytes",
            )
        )
        .with_panel(
            timeseries(
                "Task events enabled",
                "1 if the worker sends task events, 0 if it runs tasks without them (start it with"
                " -E).",
                target(gauge("celery_worker_task_events_enabled", WORKER), "{{worker}}"),
                min_value=0,
                max_value=1,
            )
        )
        .with_panel(
            timeseries(
                "Task events missed by worker",
                "Tasks each worker started (per its heartbeats) whose task-started event never"
                " reached the exporter, per rate interval. Above 0, task counters and histograms"
                " read low for that worker (see the CeleryTaskEventsMissed runbook entry).",
                target(
                    increase(
                        "celery_exporter_task_events_missed_total", WORKER, window=RATE_WINDOW
                    ),
                    "{{worker}}",
                ),
                min_value=0,
            )
        )
        .with_panel(
            timeseries(
                "Tasks held, not started",
                "Tasks each worker has received but not started, from task events: prefetched"
                " (no ETA, or the ETA has passed) and scheduled (ETA still in the future)."
                " Prefetched tasks on a busy worker wait while other workers may be idle.",
                target(gauge("celery_worker_tasks_prefetched", WORKER), "{{worker}} prefetched"),
                target(gauge("celery_worker_tasks_scheduled", WORKER), "{{worker}} scheduled"),
                min_value=0,
            )
        )
        .with_panel(
            timeseries(
                "Workers per queue",
                "Workers and pool processes consuming each queue, from inspect active_queues.",
                target(
                    aggregate("sum", gauge("celery_active_worker_count", QUEUE), ("queue_name",)),
                    "{{queue_name}} workers",
                ),
                target(
                    aggregate("sum", gauge("celery_active_process_count", QUEUE), ("queue_name",)),
                    "{{queue_name}} processes",
                ),
                min_value=0,
                width=24,
            )
        )
        .with_row(row("Pool capacity"))
        .with_panel(
            timeseries(
                "Idle pool processes by worker",
                "Pool processes of each worker not running a task: pool size (inspect stats)"
                " minus running tasks (heartbeats)." + RECORDED,
                target(select("celery:worker_idle_processes:max", WORKER), "{{worker}}"),
                min_value=0,
            )
        )
        .with_panel(
            timeseries(
                "Idle pool processes by queue",
                "Idle pool processes of the workers consuming each queue; a worker on several"
                " queues counts in each. 0 with tasks waiting means the queue's workers are all"
                " busy." + RECORDED,
                target(select("celery:queue_idle_processes:sum", QUEUE), "{{queue_name}}"),
                min_value=0,
            )
        )
    )
