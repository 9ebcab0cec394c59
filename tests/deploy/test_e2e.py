"""End to end: real Redis, workers, exporter and Prometheus with the shipped rules loaded.

Two workers run a mixed workload (successes, failures, retries, a slow task, routed work, and
a backlog on a queue nobody consumes). The real exporter is scraped every second by a real
Prometheus running a test copy of deploy/prometheus.yml (pointed at the test exporter) and of
deploy/alert_rules.yml (every `for:` shortened to SHORT_FOR). Then, through the HTTP API:

- every dashboard query (variables set to All), every template variable, every recording rule
  and every side of every alert expression must return data; dashboard legends must find
  their labels;
- one worker is SIGKILLed and CeleryWorkerDown must fire for it, and only for it;
- the alerts the workload provokes fire with the expected labels, and the others stay quiet.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import promql
from tests.support.e2e_workload import (
    BACKLOG_QUEUE,
    EXPORTER_ARGS,
    run_workload,
)
from tests.support.exporter_process import ExporterProcess
from tests.support.prometheus import Prometheus, QueryError, write_test_config
from tests.support.servers import WorkerFactory, wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

WORKLOAD_SECONDS = 10.0


@dataclass
class Stack:
    prometheus: Prometheus
    exporter: ExporterProcess
    survivor: str  # node name of the worker left running
    killed: str  # node name of the worker SIGKILLed after the workload


@pytest.fixture
def stack(redis_url: str, worker_factory: WorkerFactory, tmp_path: Path) -> Iterator[Stack]:
    exporter = ExporterProcess(redis_url, tmp_path / "exporter", EXPORTER_ARGS)
    prometheus: Prometheus | None = None
    try:
        exporter.start()
        prometheus = Prometheus(write_test_config(tmp_path, exporter.port), tmp_path)
        # Start both workers before waiting for either: their start-ups overlap.
        survivor = worker_factory(redis_url, queues=["celery", "routed"], concurrency=2, wait=False)
        doomed = worker_factory(redis_url, queues=["celery"], concurrency=1, wait=False)
        prometheus.wait_ready()
        survivor.wait_ready()
        doomed.wait_ready()
        run_workload(redis_url, WORKLOAD_SECONDS)
        doomed.kill()
        yield Stack(prometheus, exporter, survivor.hostname, doomed.hostname)
    finally:
        if prometheus is not None:
            prometheus.stop()
        exporter.stop()


@dataclass(frozen=True)
class Check:
    where: str
    expr: str
    labels: tuple[str, ...] = ()  # every returned series must carry these labels


def checks() -> list[Check]:
    found = []
    for file, board in promql.dashboards().items():
        for panel in promql.panels(board):
            for target in panel.get("targets", []):
                legend = tuple(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
                where = f"{file} panel {panel['title']!r} {target['refId']}"
                found.append(Check(where, promql.substitute(target["expr"]), legend))
    for query, label in promql.variable_queries():
        found.append(Check(query.where, promql.substitute(query.expr), (label,)))
    for rule in promql.rules():
        if "record" in rule:
            found.append(Check(f"recording rule {rule['record']}", rule["expr"]))
            found.append(Check(f"recorded series {rule['record']}", rule["record"]))
        else:
            for i, operand in enumerate(promql.operands(rule["expr"])):
                where = f"alert {rule['alert']} ({rule['labels']['severity']}) operand {i}"
                found.append(Check(where, operand))
    for query in promql.rule_queries():
        if "annotation" in query.where:
            found.append(Check(query.where, query.expr))
    return found


def failures(prometheus: Prometheus, pending: list[Check]) -> dict[Check, str]:
    failed = {}
    for check in pending:
        try:
            series = prometheus.query(check.expr)
        except QueryError as exc:
            failed[check] = f"error {exc}"
            continue
        if not series:
            failed[check] = "no data"
            continue
        missing = {label for s in series for label in check.labels if label not in s["metric"]}
        if missing:
            failed[check] = f"series without legend labels {sorted(missing)}"
    return failed


def firing(prometheus: Prometheus) -> set[tuple[str, str, str]]:
    """(alertname, severity, the label that identifies the target) of each firing alert."""
    found = set()
    for alert in prometheus.alerts():
        if alert["state"] != "firing":
            continue
        labels = alert["labels"]
        target = next(
            (labels[key] for key in ("worker", "queue_name", "instance") if key in labels),
            labels.get("job", ""),
        )
        if labels["alertname"] == "CeleryTaskFailureRatioHigh":
            target = labels["name"]
        found.add((labels["alertname"], labels["severity"], target))
    return found


def test_every_query_has_data_and_alerts_fire_when_they_should(stack: Stack) -> None:
    prometheus = stack.prometheus
    all_checks = checks()
    assert len(all_checks) > 100

    # Rates need two scrapes and the recording rules one evaluation after the data: poll.
    failed = failures(prometheus, all_checks)
    deadline = time.monotonic() + 30
    while failed and time.monotonic() < deadline:
        time.sleep(1)
        failed = failures(prometheus, list(failed))
    report = "\n".join(f"  {check.where}: {why}\n    {check.expr}" for check, why in failed.items())
    assert not failed, f"{len(failed)} of {len(all_checks)} queries failed:\n{report}"

    expected = {
        ("CeleryWorkerDown", "warning", stack.killed),
        ("CeleryTaskFailureRatioHigh", "warning", "workload.fail"),
        ("CeleryQueueGrowingNoConsumers", "critical", BACKLOG_QUEUE),
        ("CeleryQueueBacklogHigh", "warning", BACKLOG_QUEUE),
        ("CeleryTaskExpired", "warning", "celery"),
    }
    seen: set[tuple[str, str, str]] = set()

    def all_expected_firing() -> bool:
        nonlocal seen
        seen = firing(prometheus)
        return expected <= seen

    try:
        wait_for(all_expected_firing, 40.0, "the expected alerts", step=0.5)
    except Exception as exc:
        raise AssertionError(
            f"missing {expected - seen}; firing {seen}\n{stack.exporter.log[-2000:]}"
        ) from exc
    # The workload gives no reason for any other alert, and the survivor is not down.
    assert seen == expected, f"unexpected alerts firing: {seen - expected}"
    up = {s["metric"]["worker"]: s["value"][1] for s in prometheus.query("celery_worker_up")}
    assert up == {stack.survivor: "1", stack.killed: "0"}
