"""Recommendations derived from the report's figures; each names the figure and its threshold.

Thresholds are those of the shipped alert rules (read from Prometheus's
celery:alert_threshold:* series when loaded, else the shipped defaults below), plus a few of
the report's own (OWN_THRESHOLDS). No recommendation is made without a number behind it.
"""

from __future__ import annotations

from typing import Any

# celery:alert_threshold:<name> in deploy/alert_rules.yml, with the values shipped there.
THRESHOLD_DEFAULTS = {
    "task_failure_ratio": 0.1,
    "queue_length_warning": 100.0,
    "task_runtime_p95_seconds": 5.0,
    "task_queue_wait_p95_seconds": 120.0,
}
OWN_THRESHOLDS = {
    "min_finished": 10,  # runs of a task before its ratio or percentile is judged
    "busy_ratio": 0.8,  # share of pool processes busy: above, workers are saturated
    "worker_availability": 0.99,
    "retry_ratio": 0.1,  # retries per finished task
}


def _rec(
    kind: str, subject: str, message: str, figure: str, value: float, op: str, threshold: float
) -> dict[str, Any]:
    return {
        "kind": kind,
        "subject": subject,
        "message": message,
        "figure": {"name": figure, "value": value},
        "threshold": {"comparison": op, "value": threshold},
    }


def recommendations(report: dict[str, Any], thresholds: dict[str, float]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    minimum = OWN_THRESHOLDS["min_finished"]
    for task in report["tasks"]:
        finished = task["succeeded"] + task["failed"]
        ratio = task["failure_ratio"]
        limit = thresholds["task_failure_ratio"]
        if finished >= minimum and ratio is not None and ratio > limit:
            main = task["exceptions"][0] if task["exceptions"] else None
            where = (
                f"; {main['count']} of the {task['failed']} failures raised {main['exception']}: "
                "look there first"
                if main
                else ""
            )
            found.append(
                _rec(
                    "task_failures",
                    task["task"],
                    f"{task['task']} failed {task['failed']} of {finished} runs "
                    f"({ratio:.1%}, threshold {limit:.0%}){where}.",
                    "failure ratio",
                    ratio,
                    ">",
                    limit,
                )
            )
        p95 = task["runtime_p95_seconds"]
        slow = thresholds["task_runtime_p95_seconds"]
        if task["succeeded"] >= minimum and p95 is not None and p95 > slow:
            found.append(
                _rec(
                    "slow_task",
                    task["task"],
                    f"95% of {task['task']} runs took up to {p95:.2f}s (threshold {slow:g}s): "
                    "split it, or give it its own queue and workers so short tasks do not wait.",
                    "runtime p95 seconds",
                    p95,
                    ">",
                    slow,
                )
            )
    busy = report.get("busy_ratio")
    for queue in report["queues"]:
        wait = queue["queue_wait_p95_seconds"]
        limit = thresholds["task_queue_wait_p95_seconds"]
        if wait is not None and wait > limit:
            saturated = busy is not None and busy >= OWN_THRESHOLDS["busy_ratio"]
            advice = (
                f"workers were busy {busy:.0%} of the time: add workers or concurrency"
                if saturated
                else "workers were not saturated: check that enough workers consume this queue "
                "(-Q) and their prefetch settings"
            )
            found.append(
                _rec(
                    "queue_wait",
                    queue["queue"],
                    f"5% of tasks on queue {queue['queue']} waited more than {wait:.1f}s to start "
                    f"(threshold {limit:g}s); {advice}.",
                    "queue wait p95 seconds",
                    wait,
                    ">",
                    limit,
                )
            )
        peak = queue["peak_backlog"]
        backlog = thresholds["queue_length_warning"]
        if peak is not None and peak > backlog:
            found.append(
                _rec(
                    "backlog",
                    queue["queue"],
                    f"Queue {queue['queue']} peaked at {peak} waiting messages (threshold "
                    f"{backlog:g}): make sure workers consume it and can keep up at peak.",
                    "peak backlog",
                    peak,
                    ">",
                    backlog,
                )
            )
    for worker in report["workers"]:
        share = worker["availability"]
        limit = OWN_THRESHOLDS["worker_availability"]
        if share < limit:
            found.append(
                _rec(
                    "worker_availability",
                    worker["worker"],
                    f"Worker {worker['worker']} was up {share:.1%} of the time it was known "
                    f"(threshold {limit:.0%}): look for restarts, OOM kills or lost heartbeats.",
                    "availability",
                    share,
                    "<",
                    limit,
                )
            )
    totals = report["totals"]
    finished = totals["succeeded"] + totals["failed"]
    if finished >= minimum:
        retry_ratio = totals["retried"] / finished
        if retry_ratio > OWN_THRESHOLDS["retry_ratio"]:
            found.append(
                _rec(
                    "retries",
                    "all tasks",
                    f"{totals['retried']} retries for {finished} finished tasks "
                    f"({retry_ratio:.1%}, threshold {OWN_THRESHOLDS['retry_ratio']:.0%}): "
                    "retries hide failures and add load; look at what the tasks retry on.",
                    "retries per finished task",
                    round(retry_ratio, 6),
                    ">",
                    OWN_THRESHOLDS["retry_ratio"],
                )
            )
    if totals["received"] >= minimum and totals["sent"] == 0:
        found.append(
            _rec(
                "task_sent_events",
                "producers",
                f"Workers received {totals['received']} tasks and no task-sent event arrived: "
                "set task_send_sent_event = True where tasks are sent, for sent counts and "
                "queue wait times.",
                "task-sent events",
                0,
                "=",
                0,
            )
        )
    return found
