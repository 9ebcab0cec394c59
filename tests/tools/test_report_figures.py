"""Each figure `celery-exporter report` prints, checked against a workload whose shape is known.

Real parts: Redis, one prefork worker (concurrency 2), the exporter, Prometheus scraping at 1 s.
The truth comes from the worker itself: its log gives every succeeded task's runtime ("succeeded
in Xs") and, for workload.timed, its queue wait (the task returns now - sent_at). The worker is
stopped for a known span with timed tasks queued, so availability and the long waits are known.

Tolerances (each stated where it is used):
- quantiles: a histogram quantile is right when it falls in the bucket holding the true value
  (bounds inclusive); runs whose runtime the log does not give (failed, retried, rejected) are
  counted in the rank but may sit anywhere below it, so each bucket they could shift it to is
  accepted.
- availability: +-2 scrapes over the span the worker was known (1 s scrape: one scrape of slack
  at each edge of the outage).
- busy ratio: each task's busy interval is seen by 1 s samples, so it can be over- or
  under-counted by up to one sample: +-(tasks / (concurrency * samples)).
"""

from __future__ import annotations

import bisect
import json
import math
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from celery import Celery

from celery_exporter.exposition.catalogue import (
    DEFAULT_QUEUE_WAIT_BUCKETS,
    DEFAULT_RUNTIME_BUCKETS,
)
from tests.support.exporter_process import ExporterProcess
from tests.support.prometheus import Prometheus
from tests.support.servers import CeleryWorker, RedisServer, wait_for
from tests.support.stack import prometheus_config, run_tool

pytestmark = [pytest.mark.integration, pytest.mark.deploy]

CONCURRENCY = 2
TIMED_QUEUE = "timed"
SLOW_SECONDS = 2.0  # runtime bucket (1, 2.5]: far from either bound
SLOW, FAST_TIMED = 4, 4  # timed tasks before the outage (slow) and queued during it (fast)
ADDS, FAILS, RETRIES, REJECTS, REVOKES = 20, 4, 2, 3, 2
OUTAGE_SECONDS = 5.0  # the worker is stopped this long after the queued tasks are sent
SUCCEEDED = SLOW + FAST_TIMED + ADDS + RETRIES
Report = dict[str, Any]
Truth = list[tuple[str, float, str]]  # (task name, runtime seconds, return value)
LOG_LINE = re.compile(r"Task (\S+)\[[0-9a-f-]+\] succeeded in ([0-9.e-]+)s: (\S+)")


@dataclass
class Run:
    prometheus: Prometheus
    worker: CeleryWorker
    start: float
    end: float
    down_seconds: float  # from the worker's SIGTERM to the exporter showing it up again


def _succeeded(prometheus: Prometheus) -> float:
    got = prometheus.query("sum(celery_task_succeeded_total)")
    return float(got[0]["value"][1]) if got else 0.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("figures")
    redis = RedisServer.start(tmp / "redis")
    worker = CeleryWorker(
        redis.url, tmp / "workers", queues=("celery", TIMED_QUEUE), concurrency=CONCURRENCY,
        hostname=f"fig@{socket.gethostname()}",
        env={"CE_TEST_PREFETCH_MULTIPLIER": "1"},  # waits come from the pool, not a prefetch
    )  # fmt: skip
    flags = ["--queues", f"celery,{TIMED_QUEUE}", "--queue-poll-interval", "0.5",
             "--inspect-interval", "1", "--inspect-timeout", "1"]  # fmt: skip
    exporter = ExporterProcess(redis.url, tmp / "exporter", flags)
    prometheus: Prometheus | None = None
    app = Celery("producer", broker=redis.url, set_as_current=False)
    app.conf.task_send_sent_event = True
    up = {"hostname": worker.hostname.split("@")[1], "worker": worker.hostname}
    try:
        worker.start()
        exporter.start()
        start = time.time() - 1
        prom = Prometheus(
            prometheus_config(tmp / "prometheus", [exporter.port]), tmp / "prometheus"
        )
        prometheus = prom
        prom.wait_ready()
        worker.wait_ready()
        exporter.wait_value("celery_worker_up", up, lambda v: v == 1)
        # Revoked before they are sent: the worker discards each on receipt (task-revoked).
        revoked = [str(uuid.uuid4()) for _ in range(REVOKES)]
        replies = app.control.revoke(revoked, reply=True, timeout=5)
        assert replies, "the worker did not acknowledge the revoke"
        with app.producer_or_acquire() as p:
            for _ in range(SLOW):
                app.send_task("workload.timed", args=(time.time(), SLOW_SECONDS),
                              queue=TIMED_QUEUE, producer=p)  # fmt: skip
            for name, times in (
                ("workload.add", ADDS),
                ("workload.fail", FAILS),
                ("workload.retry_once", RETRIES),
                ("workload.reject", REJECTS),
            ):
                for _ in range(times):
                    args = (1, 2) if name == "workload.add" else ()
                    app.send_task(name, args=args, producer=p)
            for task_id in revoked:
                app.send_task("workload.add", args=(1, 2), task_id=task_id, producer=p)
        wait_for(lambda: _succeeded(prom) == SLOW + ADDS + RETRIES, 40.0,
                 "phase 1 in Prometheus", step=0.5)  # fmt: skip
        went_down = time.time()
        worker.stop()
        with app.producer_or_acquire() as p:
            for _ in range(FAST_TIMED):
                app.send_task("workload.timed", args=(time.time(), 0.0), queue=TIMED_QUEUE,
                              producer=p)  # fmt: skip
        time.sleep(OUTAGE_SECONDS)  # the outage itself: part of the workload's shape
        worker.start()
        exporter.wait_value("celery_worker_up", up, lambda v: v == 1, timeout=30)
        down = time.time() - went_down
        wait_for(lambda: _succeeded(prom) == SUCCEEDED, 30.0,
                 "phase 2 in Prometheus", step=0.5)  # fmt: skip
        time.sleep(1.5)  # one more scrape after the last change (not a wait for a condition)
        yield Run(prom, worker, start, time.time(), down)
    finally:
        app.close()
        if prometheus is not None:
            prometheus.stop()
        exporter.stop()
        worker.stop()
        redis.stop()


def _report(run: Run, fmt: str) -> str:
    result = run_tool("report", "--prometheus-url", run.prometheus.url, "--format", fmt,
                      "--start", f"{run.start:.3f}", "--end", f"{run.end:.3f}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def data(run: Run) -> Report:
    report: Report = json.loads(_report(run, "json"))
    return report


@pytest.fixture(scope="module")
def truth(run: Run) -> Truth:
    """(task name, runtime seconds, return value) of every task the worker logged as succeeded."""
    found = [(m[1], float(m[2]), m[3]) for m in LOG_LINE.finditer(run.worker.log())]
    assert len(found) == SUCCEEDED, run.worker.log()[-3000:]
    return found


def _buckets_around(values: list[float], q: float, unknown: int, bounds: tuple[float, ...]
                    ) -> list[tuple[float, float]]:  # fmt: skip
    """The buckets (lower, upper) that may hold the true q-quantile of `values` plus `unknown`
    observations of unknown size: of len(values) + unknown, the quantile is the one at rank
    ceil(q * total), which is the value of `values` at that rank minus 0..unknown."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * (len(ordered) + unknown)))
    out = []
    for r in range(max(1, rank - unknown), min(len(ordered), rank) + 1):
        i = bisect.bisect_left(bounds, ordered[r - 1])
        out.append((bounds[i - 1] if i else 0.0, bounds[i]))
    return out


def _in_one(value: float | None, buckets: list[tuple[float, float]]) -> bool:
    return value is not None and any(lo <= value <= hi for lo, hi in buckets)


def test_runtime_quantiles_fall_in_the_true_bucket(data: Report, truth: Truth) -> None:
    runtimes = [seconds for _, seconds, _ in truth]
    # Failed, retried (first run) and rejected runs are observed too but not logged with a time.
    unknown = FAILS + RETRIES + REJECTS
    for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        allowed = _buckets_around(runtimes, q, unknown, DEFAULT_RUNTIME_BUCKETS)
        got = data["runtime_seconds"][key]
        assert _in_one(got, allowed), f"runtime {key} {got} not in {allowed}"
    tasks = {t["task"]: t for t in data["tasks"]}
    for name in ("workload.timed", "workload.add"):
        mine = [seconds for n, seconds, _ in truth if n == name]
        allowed = _buckets_around(mine, 0.95, 0, DEFAULT_RUNTIME_BUCKETS)
        got = tasks[name]["runtime_p95_seconds"]
        assert _in_one(got, allowed), f"{name} runtime p95 {got} not in {allowed}"


def test_queue_wait_p95_falls_in_the_true_bucket(data: Report, truth: Truth) -> None:
    waits = [float(value) for name, _, value in truth if name == "workload.timed"]
    assert max(waits) > OUTAGE_SECONDS  # the queued tasks waited out the outage
    allowed = _buckets_around(waits, 0.95, 0, DEFAULT_QUEUE_WAIT_BUCKETS)
    queues = {q["queue"]: q for q in data["queues"]}
    got = queues[TIMED_QUEUE]["queue_wait_p95_seconds"]
    assert _in_one(got, allowed), f"queue wait p95 {got} not in {allowed} (waits {waits})"


def test_worker_availability_within_two_scrapes(run: Run, data: Report) -> None:
    (worker,) = data["workers"]
    assert worker["worker"] == run.worker.hostname
    known = worker["seconds_known"]
    expected = 1 - run.down_seconds / known
    tolerance = 2 / known  # +-2 scrapes at 1 s over the span the worker was known
    assert worker["availability"] == pytest.approx(expected, abs=tolerance), (worker, run)


def test_busy_ratio_within_one_sample_per_task(run: Run, data: Report, truth: Truth) -> None:
    busy_seconds = sum(seconds for _, seconds, _ in truth)
    # The ratio is defined where Prometheus has the pool size (from inspect), a sample a second.
    samples = run.prometheus.query(
        f"count_over_time(celery_worker_concurrency[{math.ceil(run.end - run.start)}s])", run.end
    )
    seconds = float(samples[0]["value"][1])
    expected = busy_seconds / (CONCURRENCY * seconds)
    tolerance = len(truth) / (CONCURRENCY * seconds)  # each task off by at most one sample
    assert data["busy_ratio"] == pytest.approx(expected, abs=tolerance), (expected, seconds)


def test_slowest_failing_and_counts_by_name(data: Report) -> None:
    assert data["slowest_tasks"][0]["task"] == "workload.timed"
    # A Reject raised by an acks_late task is acknowledged as a failure: Celery sends task-failed
    # as well as task-rejected, so workload.reject is second among the failing tasks.
    failing = [(t["task"], t["failed"]) for t in data["top_failing_tasks"]]
    assert failing == [("workload.fail", FAILS), ("workload.reject", REJECTS)]
    totals = data["totals"]
    assert totals["succeeded"] == SUCCEEDED
    assert (totals["failed"], totals["retried"]) == (FAILS + REJECTS, RETRIES)
    assert (totals["rejected"], totals["revoked"]) == (REJECTS, REVOKES)


def test_the_text_prints_the_same_figures(run: Run, data: Report) -> None:
    text = _report(run, "text")
    for kind in ("succeeded", "failed", "retried", "rejected", "revoked"):
        assert re.search(rf"^{kind}\s+{data['totals'][kind]}$", text, re.M), text
    runtime = data["runtime_seconds"]
    line = re.search(r"^runtime average / p50 / p95 / p99 \(s\)\s+(.+)$", text, re.M)
    assert line, text
    printed = [float(v) for v in line[1].split(" / ")]
    wanted = [runtime[k] for k in ("average", "p50", "p95", "p99")]
    assert printed == pytest.approx(wanted, rel=5e-3), (printed, wanted)  # 3 significant digits
    busy = re.search(r"^workers busy \(share of pool\)\s+([0-9.]+)%$", text, re.M)
    assert busy and float(busy[1]) == pytest.approx(100 * data["busy_ratio"], abs=0.05)
    avail = re.search(rf"^{re.escape(run.worker.hostname)}\s+([0-9.]+)%$", text, re.M)
    assert avail and float(avail[1]) == pytest.approx(
        100 * data["workers"][0]["availability"], abs=0.05)  # fmt: skip
    slowest = text.split("Slowest tasks\n")[1].splitlines()
    assert slowest[2].split()[0] == "workload.timed", slowest
    failing = text.split("Top failing tasks\n")[1].splitlines()
    assert failing[2].split()[0] == "workload.fail", failing
