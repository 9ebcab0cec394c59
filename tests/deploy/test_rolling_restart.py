"""A rolling restart of a worker Deployment pages nobody.

Real Redis, real workers, the real exporter, and a real Prometheus evaluating the shipped
deploy/alert_rules.yml itself (the file, by path: whatever its expressions become, they are
what is tested). Each worker is replaced the way a Deployment does it: the new pod starts and
reads up, then the old one gets SIGTERM, a warm shutdown that sends worker-offline. Through the
restart the test asks Prometheus for its alerts again and again, and afterwards for every
`ALERTS` sample of the window: CeleryWorkerDown must never have been pending, let alone firing.
Then one worker is SIGKILLed, which sends no goodbye: the same watch must see the alert go
pending for it, so the quiet before cannot be a blind watch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import promql
from tests.support.exporter_process import ExporterProcess
from tests.support.prometheus import Prometheus, write_test_config
from tests.support.servers import CeleryWorker, WorkerFactory, wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

REPLICAS = 2
WORKER_TIMEOUT = 3  # seconds: a worker that left without a goodbye reads 0 this soon
ALERT = "CeleryWorkerDown"


class AlertWatch:
    """Polls Prometheus' /api/v1/alerts on a thread; keeps every CeleryWorkerDown it saw."""

    def __init__(self, prometheus: Prometheus) -> None:
        self.prometheus = prometheus
        self.seen: set[tuple[str, str]] = set()  # (worker, state)
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AlertWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for alert in self.prometheus.alerts():
                if alert["labels"]["alertname"] == ALERT:
                    self.seen.add((alert["labels"].get("worker", "?"), alert["state"]))
            self.polls += 1
            self._stop.wait(0.25)


def prometheus_config(directory: Path, exporter_port: int) -> Path:
    """The e2e test's Prometheus config (1 s scrapes and evaluations), with the shipped rules
    file loaded from where it lives instead of a copy: `for:` and all, unchanged."""
    path = write_test_config(directory, exporter_port)
    config = promql.load_yaml(path)
    config["rule_files"] = [str(promql.RULES_FILE)]
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def exporter(redis_url: str, tmp_path: Path) -> Iterator[ExporterProcess]:
    process = ExporterProcess(
        redis_url,
        tmp_path / "exporter",
        ["--worker-timeout", str(WORKER_TIMEOUT), "--retry-interval", "0.2"],
    )
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture
def prometheus(exporter: ExporterProcess, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(prometheus_config(tmp_path, exporter.port), tmp_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def wait_up(exporter: ExporterProcess, worker: CeleryWorker) -> None:
    labels = {"hostname": worker.hostname.partition("@")[2], "worker": worker.hostname}
    exporter.wait_value("celery_worker_up", labels, lambda v: v == 1, timeout=30)


def test_a_rolling_restart_never_makes_worker_down_pending(
    redis_url: str,
    worker_factory: WorkerFactory,
    exporter: ExporterProcess,
    prometheus: Prometheus,
) -> None:
    workers = [worker_factory(redis_url, wait=False) for _ in range(REPLICAS)]
    for worker in workers:
        worker.wait_ready()
        wait_up(exporter, worker)

    def prometheus_sees_all_up() -> bool:
        series = prometheus.query("celery_worker_up == 1")
        return {s["metric"]["worker"] for s in series} >= {w.hostname for w in workers}

    wait_for(prometheus_sees_all_up, 30, "Prometheus to scrape every worker up", step=0.5)
    # The rules file is the shipped one, loaded and evaluated.
    rule_names = {r["name"] for g in prometheus._get("/api/v1/rules")["groups"] for r in g["rules"]}
    assert ALERT in rule_names

    started = time.time()
    replaced: list[str] = []
    with AlertWatch(prometheus) as watch:
        for old in list(workers):
            new = worker_factory(redis_url, wait=False)  # maxSurge 1, maxUnavailable 0
            new.wait_ready()
            wait_up(exporter, new)
            old.stop()  # SIGTERM: warm shutdown, worker-offline; waits until it exited
            replaced.append(old.hostname)
            workers.remove(old)
            workers.append(new)
        # Past the worker timeout: an old worker that read 0 would have been scraped by now,
        # and its series evaluated, several times over.
        time.sleep(WORKER_TIMEOUT + 3)
    window = f"{int(time.time() - started) + 2}s"
    alerts_over_window = prometheus.query(
        f'count_over_time(ALERTS{{alertname="{ALERT}"}}[{window}])'
    )
    old_up = prometheus.query(
        f'min_over_time(celery_worker_up{{worker=~"{"|".join(replaced)}"}}[{window}])'
    )
    print(
        f"\nrolling restart of {REPLICAS} workers: {watch.polls} polls of /api/v1/alerts, "
        f"{ALERT} states seen: {sorted(watch.seen)}; its ALERTS series in the window: "
        f"{alerts_over_window}"
    )
    assert watch.polls >= 10
    assert watch.seen == set()
    assert alerts_over_window == []
    # The old workers were scraped while they ran and only ever read 1, then vanished.
    assert {s["metric"]["worker"]: s["value"][1] for s in old_up} == dict.fromkeys(replaced, "1")

    # The control: a worker that dies without a goodbye does make the same watch see it.
    crashed = workers[0]
    with AlertWatch(prometheus) as watch:
        crashed.kill()

        def pending_for_crashed() -> bool:
            return (crashed.hostname, "pending") in watch.seen

        wait_for(pending_for_crashed, WORKER_TIMEOUT + 20, f"{ALERT} pending for the crash")
    assert {worker for worker, _ in watch.seen} == {crashed.hostname}
