"""The Grafana dashboards and provisioning files are valid and importable by Grafana 10+.

Checks the provisioned (`__inputs`-free) form: every panel and target uses the `${datasource}`
variable, panel ids are unique, panels sit on the 24-column grid without overlapping, and the
datasource/job/queue/task/worker variables exist with queries Grafana can run.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.deploy import promql

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
VARIABLES = ("datasource", "job", "queue", "task", "worker")
PROVISIONING = promql.DEPLOY / "grafana" / "provisioning"
EXPECTED = {"celery-overview.json", "celery-tasks.json", "celery-workers.json"}

BOARDS = promql.dashboards()


def test_the_three_dashboards_are_shipped() -> None:
    assert set(BOARDS) == EXPECTED
    uids = {board["uid"] for board in BOARDS.values()}
    assert uids == {name.removesuffix(".json") for name in EXPECTED}


@pytest.mark.parametrize("file", sorted(EXPECTED))
def test_dashboard_is_in_provisioned_grafana_10_form(file: str) -> None:
    board = BOARDS[file]
    raw = (promql.DASHBOARD_DIR / file).read_text()
    assert "__inputs" not in board and "${DS_" not in raw
    assert board["schemaVersion"] >= 38
    assert board["id"] is None
    assert board["title"].startswith("Celery / ")
    assert "celery" in board["tags"]
    json.loads(raw)  # strict JSON, no comments or trailing commas


@pytest.mark.parametrize("file", sorted(EXPECTED))
def test_panels_have_unique_ids_and_use_the_datasource_variable(file: str) -> None:
    panels = list(promql.panels(BOARDS[file]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {file}"
    graphs = [panel for panel in panels if panel["type"] != "row"]
    assert len(graphs) >= 8
    for panel in graphs:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel.get("description"), f"{panel['title']} has no description"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def _overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


@pytest.mark.parametrize("file", sorted(EXPECTED))
def test_panels_fit_the_grid_without_overlapping(file: str) -> None:
    positions = [panel["gridPos"] for panel in promql.panels(BOARDS[file])]
    for pos in positions:
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, pos
    for i, a in enumerate(positions):
        for b in positions[i + 1 :]:
            assert not _overlaps(a, b), (a, b)


@pytest.mark.parametrize("file", sorted(EXPECTED))
def test_template_variables_exist_and_chain_from_job(file: str) -> None:
    variables = {var["name"]: var for var in BOARDS[file]["templating"]["list"]}
    assert set(VARIABLES) <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in VARIABLES[1:]:
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        assert var["query"].startswith("label_values(")
        assert var["includeAll"] and var["allValue"] == ".*"
        if name != "job":
            assert 'job=~"$job"' in var["query"], name


@pytest.mark.parametrize("file", sorted(EXPECTED))
def test_visible_variables_filter_something(file: str) -> None:
    board = BOARDS[file]
    exprs = " ".join(target["expr"] for target in _targets(board))
    for var in board["templating"]["list"]:
        if var["type"] == "query" and var.get("hide", 0) != 2:
            assert f"${var['name']}" in exprs, f"{file}: variable {var['name']} filters nothing"


def _targets(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [target for panel in promql.panels(board) for target in panel.get("targets", [])]


def test_every_selector_is_filtered_by_job() -> None:
    # Without a job filter a panel mixes in other exporters when several are scraped.
    selector = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^{}]*)\}")
    for board in BOARDS.values():
        for target in _targets(board):
            selectors = selector.findall(target["expr"])
            assert selectors, target["expr"]
            for metric, matchers in selectors:
                assert 'job=~"$job"' in matchers, (metric, target["expr"])


def test_the_issue_panels_are_there() -> None:
    def exprs(file: str) -> str:
        return " ".join(target["expr"] for target in _targets(BOARDS[file]))

    overview = exprs("celery-overview.json")
    for name in (
        "celery_worker_up",
        "celery_worker_tasks_active",
        "celery_queue_length",
        "celery:task_completed:rate5m",
        "celery:task_failure_ratio:rate5m",
        "celery_task_runtime_bucket",
        "celery_task_queue_wait_time_bucket",
        "celery_exporter_broker_up",
        "up{",
    ):
        assert name in overview, name
    workers = exprs("celery-workers.json")
    for name in (
        "celery_worker_up",
        "celery_worker_concurrency",
        "celery_worker_tasks_active",
        "celery_worker_loadavg",
        "time() - celery_worker_last_heartbeat_timestamp_seconds",
    ):
        assert name in workers, name
    assert 'name=~"$task"' in exprs("celery-tasks.json")


def test_datasource_provisioning_points_at_the_compose_prometheus() -> None:
    files = list((PROVISIONING / "datasources").glob("*.yml"))
    assert len(files) == 1
    config = promql.load_yaml(files[0])
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    scrape = promql.load_yaml(promql.PROMETHEUS_FILE)["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape


def test_dashboard_provisioning_loads_the_dashboards_directory() -> None:
    files = list((PROVISIONING / "dashboards").glob("*.yml"))
    assert len(files) == 1
    config = promql.load_yaml(files[0])
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    compose = promql.load_yaml(promql.DEPLOY / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
