"""Recommendations: each fires on its figure crossing its threshold, and names both."""

from __future__ import annotations

from typing import Any

from celery_exporter.tools.recommend import OWN_THRESHOLDS, THRESHOLD_DEFAULTS, recommendations


def task(name: str, succeeded: int, failed: int = 0, p95: float | None = 0.1) -> dict[str, Any]:
    return {
        "task": name,
        "succeeded": succeeded,
        "failed": failed,
        "retried": 0,
        "failure_ratio": failed / (succeeded + failed) if succeeded + failed else None,
        "exceptions": [{"exception": "KeyError", "count": failed}] if failed else [],
        "runtime_average_seconds": p95,
        "runtime_p95_seconds": p95,
    }


def base(**changes: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "totals": {"sent": 100, "received": 100, "succeeded": 100, "failed": 0, "retried": 0,
                   "rejected": 0, "revoked": 0},
        "tasks": [task("ok", 100)],
        "queues": [{"queue": "q", "completed": 100, "peak_backlog": 3,
                    "queue_wait_p95_seconds": 1.0}],
        "workers": [{"worker": "w@h", "availability": 1.0, "seconds_known": 60}],
        "busy_ratio": 0.5,
    }  # fmt: skip
    report.update(changes)
    return report


def kinds(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["kind"]: r for r in recommendations(report, dict(THRESHOLD_DEFAULTS))}


def test_a_healthy_range_gets_no_recommendation() -> None:
    assert kinds(base()) == {}


def test_failures_need_enough_runs_and_name_the_main_exception() -> None:
    assert kinds(base(tasks=[task("flaky", 5, 4)])) == {}  # 9 runs: too few to judge
    rec = kinds(base(tasks=[task("flaky", 80, 20)]))["task_failures"]
    assert rec["figure"] == {"name": "failure ratio", "value": 0.2}
    assert rec["threshold"] == {"comparison": ">", "value": 0.1}
    assert "20 of the 20 failures raised KeyError" in rec["message"]


def test_slow_tasks_and_worker_availability() -> None:
    found = kinds(
        base(
            tasks=[task("slow", 50, p95=9.0)],
            workers=[{"worker": "w@h", "availability": 0.9, "seconds_known": 60}],
        )
    )
    assert found["slow_task"]["figure"]["value"] == 9.0
    assert found["slow_task"]["threshold"]["value"] == 5.0
    assert found["worker_availability"]["threshold"] == {
        "comparison": "<", "value": OWN_THRESHOLDS["worker_availability"]}  # fmt: skip


def test_queue_wait_advice_depends_on_how_busy_workers_were() -> None:
    queues = [{"queue": "q", "completed": 100, "peak_backlog": 3, "queue_wait_p95_seconds": 300}]
    busy = kinds(base(queues=queues, busy_ratio=0.95))["queue_wait"]
    assert "add workers or concurrency" in busy["message"]
    idle = kinds(base(queues=queues, busy_ratio=0.2))["queue_wait"]
    assert "not saturated" in idle["message"]
    assert idle["figure"]["value"] == 300 and idle["threshold"]["value"] == 120


def test_missing_task_sent_events() -> None:
    totals = {**base()["totals"], "sent": 0}
    rec = kinds(base(totals=totals))["task_sent_events"]
    assert "task_send_sent_event" in rec["message"]
