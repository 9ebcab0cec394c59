"""Every metric the shipped rules and dashboards query is one the exporter exposes.

Names are pulled out of every PromQL expression (recording and alerting rules, queries inside
alert annotations, dashboard targets and template variables) and checked against the catalogue
in exposition/catalogue.py with the default prefix, plus Prometheus' own `up` and `ALERTS` and
the recording rules' own names. This is what stops "metric names may need adjusting for your
exporter version".
"""

from __future__ import annotations

import re

import pytest

from celery_exporter.exposition.catalogue import CATALOGUE, DEFAULT_PREFIX
from tests.support import promql
from tests.support.promql import PROMETHEUS_OWN, exposed_names


def all_queries() -> list[promql.Query]:
    variables = [query for query, _ in promql.variable_queries()]
    return promql.rule_queries() + promql.dashboard_queries() + variables


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (le) (rate(celery_task_runtime_bucket{job=~"$job"}[$__rate_interval]))',
            {"celery_task_runtime_bucket"},
        ),
        (
            "a:b:c > on () group_left () x_total and bool_thing offset 5m",
            {"a:b:c", "x_total", "bool_thing"},
        ),
        ('absent(up{job="celery-exporter"})', {"up"}),
        (
            "histogram_quantile(0.95, sum without (le, instance) (rate(h_bucket[5m])))",
            {"h_bucket"},
        ),
        ('time() - m{w=~"a b"} or vector(0) * 1e3', {"m"}),
        ("count(m == 0) / ignoring (mode) group_left n", {"m", "n"}),
    ],
)
def test_metric_names_are_found_and_nothing_else(expr: str, names: set[str]) -> None:
    assert promql.metric_names(expr) == names


def test_every_queried_metric_is_exposed_by_the_exporter() -> None:
    known = exposed_names() | PROMETHEUS_OWN | promql.recording_names()
    unknown = {}
    for query in all_queries():
        missing = promql.metric_names(query.expr) - known
        if missing:
            unknown[query.where] = sorted(missing)
    assert not unknown, f"metrics the exporter does not expose: {unknown}"


def test_the_check_sees_every_file() -> None:
    queries = all_queries()
    assert sum(q.where.startswith("rule ") for q in queries) >= 25
    assert {q.where.split()[0] for q in queries if not q.where.startswith("rule ")} == {
        "celery-overview.json",
        "celery-tasks.json",
        "celery-workers.json",
    }
    used = set().union(*(promql.metric_names(q.expr) for q in queries))
    # The dashboards show every worker-health family the issue asks for.
    for name in (
        "celery_worker_concurrency",
        "celery_worker_loadavg",
        "celery_worker_last_heartbeat_timestamp_seconds",
        "celery_worker_up",
        "celery_exporter_broker_up",
    ):
        assert name in used


def runbook_names() -> set[str]:
    """Metric names in the runbook's PromQL blocks: the queries operators paste."""
    blocks = re.findall(r"```promql\n(.*?)```", promql.RUNBOOK_FILE.read_text(), flags=re.S)
    return {name for block in blocks for line in block.splitlines() for name in
            promql.metric_names(line)}  # fmt: skip


def test_recording_rules_used_are_defined_and_defined_ones_are_used() -> None:
    defined = promql.recording_names()
    # Used by an alert, a dashboard, or the runbook's triage queries.
    used = set().union(*(promql.metric_names(q.expr) for q in all_queries()), runbook_names())
    recorded_names = {name for name in used if ":" in name}
    assert recorded_names <= defined
    assert defined <= used, f"recording rules nothing uses: {sorted(defined - used)}"


def test_label_matchers_use_labels_the_metric_has() -> None:
    labels_of = {}
    for spec in CATALOGUE:
        name = spec.exposed_name(DEFAULT_PREFIX)
        labels = {*spec.labels, "job", "instance"}
        if spec.kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                labels_of[f"{name}{suffix}"] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            labels_of[name] = labels
    selector = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^{}]*)\}")
    wrong = []
    for query in all_queries():
        for metric, matchers in selector.findall(query.expr):
            if metric not in labels_of:
                continue
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
                if label not in labels_of[metric]:
                    wrong.append(f"{query.where}: {metric} has no label {label}")
    assert not wrong, wrong
