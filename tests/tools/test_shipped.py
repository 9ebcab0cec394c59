"""The names `check` looks for are the names the files in deploy/ define."""

from __future__ import annotations

from celery_exporter.tools import shipped
from tests.support import promql


def test_rule_groups_match_alert_rules_yml() -> None:
    assert tuple(g["name"] for g in promql.rule_groups()) == shipped.RULE_GROUPS


def test_dashboard_uids_match_the_dashboards() -> None:
    uids = sorted(board["uid"] for board in promql.dashboards().values())
    assert tuple(uids) == tuple(sorted(shipped.DASHBOARD_UIDS))


def test_datasource_job_and_severities_match() -> None:
    provisioning = promql.DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    (source,) = promql.load_yaml(provisioning)["datasources"]
    assert source["uid"] == shipped.DATASOURCE_UID
    jobs = [j["job_name"] for j in promql.load_yaml(promql.PROMETHEUS_FILE)["scrape_configs"]]
    assert shipped.EXPORTER_JOB in jobs
    severities = {rule["labels"]["severity"] for rule in promql.alert_rules()}
    assert severities == set(shipped.SEVERITIES)
