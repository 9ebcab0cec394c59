"""Drills for issue 20 sections 5 and 6: a stopped `celery beat`, and prefetch hoarding.

A real Redis, real prefork workers and a real `celery beat` (tests.support.workload_app), the
real exporter and a real Prometheus evaluating a test copy of the shipped rules (1 s scrapes and
evaluations, every `for:` SHORT_FOR; the beat margin threshold lowered to MARGIN seconds).

- Beat: with beat sending `tick` every PERIOD seconds, CeleryBeatEntryOverdue stays quiet for
  QUIET_SECONDS; after beat is stopped by its PID it goes pending within
  PERIOD + MARGIN + SLACK seconds, and not before MARGIN.
- Hoarding: an acks_late worker with concurrency 1 and a prefetch multiplier above N reserves
  all N slow tasks: the broker list reads 0 while celery:queue_work:sum reads N.

Each prints what it measured.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.exporter_process import ExporterProcess
from tests.support.producer import producer, send
from tests.support.prometheus import SHORT_FOR, Prometheus, write_test_config
from tests.support.servers import REPO_ROOT, ServerError, WorkerFactory, terminate_pid, wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

APP = "tests.support.workload_app:app"
PERIOD = 2.0  # CE_TEST_BEAT_SECONDS: the `tick` entry's interval
MARGIN = 3.0  # celery:alert_threshold:beat_entry_overdue_seconds in the test copy
QUIET_SECONDS = 10.0
# From stopping beat to pending: the last tick came up to PERIOD before the stop, the gauge
# crosses MARGIN after PERIOD + MARGIN; then a scrape and one alert evaluation (1 s each;
# pending needs one true evaluation, `for:` delays only firing) and slack for a busy machine.
SLACK = 6.0

HOARDED = 6  # slow tasks sent to the hoarding worker
PREFETCH = 10  # its prefetch multiplier (concurrency 1): above HOARDED, so it reserves all
TASK_SECONDS = 12.0


def set_threshold(rules: Path, name: str, value: float) -> None:
    """The default (unlabelled) celery:alert_threshold:<name> of the test copy set to value."""
    document = yaml.safe_load(rules.read_text())
    (rule,) = [
        r
        for g in document["groups"]
        for r in g["rules"]
        if r.get("record") == f"celery:alert_threshold:{name}" and not r.get("labels")
    ]
    rule["expr"] = f"vector({value})"
    rules.write_text(yaml.safe_dump(document))


def start_prometheus(directory: Path, exporter: ExporterProcess) -> Prometheus:
    config = write_test_config(directory, exporter.port)
    set_threshold(config.parent / "alert_rules.yml", "beat_entry_overdue_seconds", MARGIN)
    prometheus = Prometheus(config, config.parent)
    prometheus.wait_ready()
    return prometheus


def active(prometheus: Prometheus, alertname: str) -> list[dict[str, Any]]:
    """Labels of the alert's pending or firing instances."""
    return [
        alert["labels"]
        for alert in prometheus.alerts()
        if alert["labels"]["alertname"] == alertname and alert["state"] in ("pending", "firing")
    ]


def scalar(prometheus: Prometheus, expr: str) -> float | None:
    """The value of a one-series query, None while it has no series."""
    result = prometheus.query(expr)
    assert len(result) <= 1, f"{expr}: {result}"
    return float(result[0]["value"][1]) if result else None


class Beat:
    """A real `celery beat` on workload_app, its schedule file in a temporary directory."""

    def __init__(self, broker_url: str, directory: Path, env: dict[str, str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.logfile = directory / "beat.log"
        self.args = [
            sys.executable, "-m", "celery", "-A", "tests.support.workload_app", "beat",
            "--schedule", str(directory / "schedule"),
            "--loglevel", "INFO", "--max-interval", "1",
        ]  # fmt: skip
        self.env = {**env, "CE_TEST_BROKER_URL": broker_url}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Beat:
        with self.logfile.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=REPO_ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        return self

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            terminate_pid(self.process.pid)
            self.process.wait(10)


@pytest.fixture
def beat_factory(tmp_path: Path) -> Iterator[Callable[[str, dict[str, str]], Beat]]:
    started: list[Beat] = []

    def start(broker_url: str, env: dict[str, str]) -> Beat:
        beat = Beat(broker_url, tmp_path / f"beat{len(started)}", env)
        started.append(beat)
        return beat.start()

    try:
        yield start
    finally:
        for beat in started:
            beat.stop()


def test_a_stopped_beat_raises_celery_beat_entry_overdue_and_a_running_one_does_not(
    redis_url: str,
    tmp_path: Path,
    worker_factory: WorkerFactory,
    beat_factory: Callable[[str, dict[str, str]], Beat],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The exporter reads the schedule from the same app, so it sees the same 2 s entry.
    monkeypatch.setenv("CE_TEST_BEAT_SECONDS", str(PERIOD))
    env = dict(os.environ)
    worker_factory(redis_url, queues=["celery"], concurrency=1)
    exporter = ExporterProcess(
        redis_url, tmp_path / "exporter", ("-A", APP, "--inspect-interval", "0")
    )
    prometheus: Prometheus | None = None
    try:
        exporter.start()
        beat = beat_factory(redis_url, env)
        prometheus = prom = start_prometheus(tmp_path / "prometheus", exporter)
        # Beat's first tick: the exporter has seen the task, so the gauge is keyed on a run.
        exporter.wait_value(
            "celery_beat_entry_last_run_timestamp_seconds",
            {"entry": "tick", "name": "workload.add"},
            lambda v: v is not None and v > 0,
            timeout=20,
        )
        deadline = time.monotonic() + QUIET_SECONDS
        worst = 0.0
        while time.monotonic() < deadline:
            assert active(prometheus, "CeleryBeatEntryOverdue") == [], (
                f"CeleryBeatEntryOverdue while beat runs\n{beat.log()[-2000:]}"
            )
            seen = scalar(prometheus, 'celery_beat_entry_overdue_seconds{entry="tick"}')
            worst = max(worst, seen or 0.0)
            time.sleep(0.5)
        ticks = beat.log().count("Sending due task tick")
        assert ticks >= QUIET_SECONDS / PERIOD - 2, f"beat sent {ticks} ticks:\n{beat.log()}"

        beat.stop()
        stopped = time.monotonic()
        bound = PERIOD + MARGIN + SLACK

        def pending() -> bool:
            return any(a.get("entry") == "tick" for a in active(prom, "CeleryBeatEntryOverdue"))

        wait_for(pending, bound, "CeleryBeatEntryOverdue for tick", step=0.2)
        seconds = time.monotonic() - stopped
        # The gauge only crosses the margin once the next run is MARGIN late.
        assert seconds >= MARGIN
        (alert,) = [a for a in active(prometheus, "CeleryBeatEntryOverdue") if a["entry"] == "tick"]
        assert alert["name"] == "workload.add"
        print(
            f"\nbeat: quiet {QUIET_SECONDS:.0f} s with beat running ({ticks} ticks, overdue gauge"
            f" max {worst:.1f} s); CeleryBeatEntryOverdue pending {seconds:.1f} s after beat was"
            f" stopped (period {PERIOD:.0f} s + margin {MARGIN:.0f} s + slack {SLACK:.0f} s ="
            f" bound {bound:.0f} s; for: {SHORT_FOR} in the test copy)"
        )
    finally:
        if prometheus is not None:
            prometheus.stop()
        exporter.stop()


def test_prefetch_hoarding_reads_zero_in_the_list_and_n_in_the_work_signal(
    redis_url: str, unique_name: str, tmp_path: Path, worker_factory: WorkerFactory
) -> None:
    queue = f"hoard-{unique_name}"
    worker_factory(
        redis_url,
        queues=[queue],
        concurrency=1,
        env={"CE_TEST_ACKS_LATE": "1", "CE_TEST_PREFETCH_MULTIPLIER": str(PREFETCH)},
    )
    exporter = ExporterProcess(
        redis_url,
        tmp_path / "exporter",
        ("-Q", queue, "--queue-poll-interval", "1", "--inspect-interval", "1"),
    )
    prometheus: Prometheus | None = None
    try:
        exporter.start()
        prometheus = prom = start_prometheus(tmp_path / "prometheus", exporter)
        sent = time.monotonic()
        send(producer(redis_url), "workload.sleep", queue, times=HOARDED, args=(TASK_SECONDS,))
        readings: dict[str, float | None] = {}

        def hoarded() -> bool:
            readings["length"] = scalar(prom, f'celery_queue_length{{queue_name="{queue}"}}')
            readings["work"] = scalar(prom, f'celery:queue_work:sum{{queue_name="{queue}"}}')
            return readings["length"] == 0 and readings["work"] == HOARDED

        # Well inside the first task's run: all N are still held (1 running, N-1 prefetched).
        try:
            wait_for(hoarded, TASK_SECONDS - 2, f"list 0 and work {HOARDED}", step=0.3)
        except ServerError:
            raise AssertionError(f"not hoarded as expected, last read {readings}") from None
        seconds = time.monotonic() - sent
        ratio = scalar(prometheus, f'celery:queue_work_per_process:ratio{{queue_name="{queue}"}}')
        print(
            f"\nhoarding: {HOARDED} tasks of {TASK_SECONDS:.0f} s to an acks_late worker"
            f" (concurrency 1, prefetch multiplier {PREFETCH}): celery_queue_length"
            f" {readings['length']:.0f}, celery:queue_work:sum {readings['work']:.0f},"
            f" per process {ratio}, {seconds:.1f} s after the send"
        )
    finally:
        if prometheus is not None:
            prometheus.stop()
        exporter.stop()
