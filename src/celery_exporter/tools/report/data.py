"""The report's figures, computed from Prometheus alone (schema: docs/report.schema.json).

Counts are exact integers from raw samples (tools/counters.py, read by tools/report/fetch.py).
Everything is returned as one JSON-ready dict, which the renderers and recommendations read.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..counters import LabelKey, bucket_counts, exact, quantile, total_by
from ..prometheus import PrometheusClient, SampleStream
from ..recommend import THRESHOLD_DEFAULTS, recommendations
from ..timerange import iso
from .fetch import Fetcher, Filters, Points

SCHEMA_ID = "celery-exporter-report/1"
COUNTERS = ("sent", "received", "succeeded", "failed", "retried", "rejected", "revoked")
TOP = 5


def build_report(
    client: PrometheusClient,
    start: float,
    end: float,
    filters: Filters,
    prefix: str = "celery_",
    now: float | None = None,
) -> dict[str, Any]:
    fetch = Fetcher(client, start, end, prefix, filters)
    counts = {kind: fetch.counts(f"task_{kind}_total") for kind in COUNTERS}
    backlog = fetch.backlog()
    report: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "generated_at": iso(time.time() if now is None else now),
        "prometheus_url": client.url,
        "range": {
            "start": iso(start),
            "end": iso(end),
            "seconds": round(end - start, 3),
            "step_seconds": fetch.step,
        },
        "filters": {
            "job": list(filters.job),
            "queue": list(filters.queue),
            "task": list(filters.task),
        },
        # Worker series alone are no data: they carry no queue or task label to filter on.
        "has_data": any(counts.values()) or bool(backlog),
    }
    if not report["has_data"]:
        return report
    totals = {kind: exact(sum(counts[kind].values())) for kind in COUNTERS}
    finished = totals["succeeded"] + totals["failed"]
    report["totals"] = totals
    report["failure_ratio"] = _ratio(totals["failed"], finished)
    report["runtime_seconds"] = _runtime(fetch)
    report["charts"] = fetch.charts(backlog)
    report["throughput"] = _throughput(report["charts"]["throughput"], finished, end - start)
    report["tasks"] = _tasks(fetch, counts)
    report["queues"] = _queues(fetch, counts, backlog)
    report["workers"] = _workers(fetch)
    report["busy_ratio"] = _busy(fetch)
    report["top_failing_tasks"] = sorted(
        (t for t in report["tasks"] if t["failed"]), key=lambda t: (-t["failed"], t["task"])
    )[:TOP]
    report["slowest_tasks"] = sorted(
        (t for t in report["tasks"] if t["runtime_p95_seconds"] is not None),
        key=lambda t: (-t["runtime_p95_seconds"], t["task"]),
    )[:TOP]
    thresholds = _thresholds(fetch)
    report["thresholds"] = thresholds
    report["recommendations"] = recommendations(report, thresholds)
    return report


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 6)


def _runtime(fetch: Fetcher) -> dict[str, float | None]:
    buckets = bucket_counts(fetch.counts("task_runtime_bucket")).get((), {})
    total = sum(fetch.counts("task_runtime_sum").values())
    count = sum(fetch.counts("task_runtime_count").values())
    return {
        "average": _round(total / count) if count else None,
        "p50": _round(quantile(0.5, buckets)),
        "p95": _round(quantile(0.95, buckets)),
        "p99": _round(quantile(0.99, buckets)),
    }


def _throughput(series: dict[str, Points], finished: int, seconds: float) -> dict[str, Any]:
    """Average over the range (exact count / seconds) and the busiest bin of the charts."""
    completed: dict[float, float] = {}
    for points in series.values():
        for t, v in points:
            completed[t] = completed.get(t, 0.0) + v
    peak_at, peak = max(completed.items(), key=lambda item: (item[1], -item[0]), default=(0.0, 0.0))
    return {
        "average_per_second": round(finished / seconds, 6),
        "peak_per_second": round(peak, 6) if completed else None,
        "peak_at": iso(peak_at) if completed else None,
    }


def _tasks(fetch: Fetcher, counts: dict[str, dict[LabelKey, float]]) -> list[dict[str, Any]]:
    """Per task name: counts, failure ratio, main exceptions, runtime average and p95."""
    by_name = {kind: total_by(counts[kind], "name") for kind in COUNTERS}
    exceptions = total_by(counts["failed"], "name", "exception")
    buckets = bucket_counts(fetch.counts("task_runtime_bucket"), "name")
    sums = total_by(fetch.counts("task_runtime_sum"), "name")
    runs = total_by(fetch.counts("task_runtime_count"), "name")
    names = sorted(
        {
            name
            for kind in ("succeeded", "failed", "retried", "received")
            for (name,) in by_name[kind]
        }
    )
    tasks = []
    for name in names:
        succeeded = exact(by_name["succeeded"].get((name,), 0))
        failed = exact(by_name["failed"].get((name,), 0))
        top = sorted(
            ((exact(n), exc) for (task, exc), n in exceptions.items() if task == name and n),
            key=lambda item: (-item[0], item[1]),
        )
        count = runs.get((name,), 0.0)
        tasks.append(
            {
                "task": name,
                "succeeded": succeeded,
                "failed": failed,
                "retried": exact(by_name["retried"].get((name,), 0)),
                "failure_ratio": _ratio(failed, succeeded + failed),
                "exceptions": [{"exception": e, "count": n} for n, e in top[:3]],
                "runtime_average_seconds": _round(sums.get((name,), 0.0) / count)
                if count
                else None,
                "runtime_p95_seconds": _round(quantile(0.95, buckets.get((name,), {}))),
            }
        )
    return tasks


def _queues(
    fetch: Fetcher, counts: dict[str, dict[LabelKey, float]], backlog: list[SampleStream]
) -> list[dict[str, Any]]:
    """Per queue: completed tasks, peak backlog (exact, from every sample) and queue-wait p95."""
    completed = total_by({**counts["succeeded"]}, "queue_name")
    for key, value in total_by(counts["failed"], "queue_name").items():
        completed[key] = completed.get(key, 0.0) + value
    waits = bucket_counts(fetch.counts("task_queue_wait_time_bucket"), "queue_name")
    span = math.ceil(fetch.end - fetch.start)
    peaks = {
        s["metric"].get("queue_name", ""): s["values"][0][1]
        for s in fetch.client.instant(
            f"max by (queue_name) (max_over_time({fetch.prefix}queue_length"
            f"{fetch.filters.selector(task=False)}[{span}s]))",
            fetch.end,
        )
    }
    names = sorted(
        {q for (q,) in completed}
        | set(peaks)
        | {q for (q,) in waits}
        | {s["metric"].get("queue_name", "") for s in backlog}
    )
    return [
        {
            "queue": name,
            "completed": exact(completed.get((name,), 0)),
            "peak_backlog": exact(peaks[name]) if name in peaks else None,
            "queue_wait_p95_seconds": _round(quantile(0.95, waits.get((name,), {}))),
        }
        for name in names
    ]


def _workers(fetch: Fetcher) -> list[dict[str, Any]]:
    """Per worker: the share of the steps from its first to its last sample at which it was up.

    A step without a sample inside that span counts as down: the exporter drops a worker's
    gauges when it says goodbye (worker-offline), so a worker stopped cleanly and started again
    leaves a gap, not zeros. Before its first and after its last sample it was not known.
    """
    up = fetch.range(f"max without (instance, pod) ({fetch.prefix}worker_up{fetch.job})")
    out = []
    for s in sorted(up, key=lambda s: s["metric"].get("worker", "")):
        points = [(t, v) for t, v in s["values"] if not math.isnan(v)]
        if points:
            steps = round((points[-1][0] - points[0][0]) / fetch.step) + 1
            out.append(
                {
                    "worker": s["metric"].get("worker", s["metric"].get("hostname", "")),
                    "availability": round(sum(v >= 1 for _, v in points) / steps, 6),
                    "seconds_known": round(steps * fetch.step, 3),
                }
            )
    return out


def _busy(fetch: Fetcher) -> float | None:
    """Average share of pool processes busy with a task, over the range."""
    job = fetch.job
    series = fetch.range(
        f"sum(max without (instance, pod) ({fetch.prefix}worker_tasks_active{job})) / "
        f"sum(max without (instance, pod) ({fetch.prefix}worker_concurrency{job}))"
    )
    values = [v for _, v in (series[0]["values"] if series else []) if math.isfinite(v)]
    return round(sum(values) / len(values), 6) if values else None


def _thresholds(fetch: Fetcher) -> dict[str, float]:
    """The shipped rules' thresholds as Prometheus has them now, else their shipped defaults."""
    found = dict(THRESHOLD_DEFAULTS)
    for name in THRESHOLD_DEFAULTS:
        series = fetch.client.instant(f"celery:alert_threshold:{name}", fetch.end)
        if series and math.isfinite(series[0]["values"][0][1]):
            found[name] = series[0]["values"][0][1]
    return found
