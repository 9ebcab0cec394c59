"""The shipped Prometheus config and rules load in promtool, and their unit tests pass and bite.

promtool runs offline: `check config`, `check rules` and `test rules`. Beside running the rule
unit tests, these tests check that every alert has both a firing and a quiet case, and that the
unit tests fail when a threshold is changed, so passing them means something.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.support import promql

pytestmark = pytest.mark.deploy

ANNOTATIONS = {"summary", "description", "runbook_url", "dashboard_url"}
SEVERITIES = {"critical", "warning", "info"}
COMPONENTS = {"task", "queue", "worker", "broker", "exporter"}


def promtool(*args: str, cwd: Path = promql.DEPLOY) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed (Debian package prometheus)")
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def rule_count() -> int:
    return sum(1 for _ in promql.rules())


def test_prometheus_config_is_valid_and_loads_the_rules() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert f"SUCCESS: {rule_count()} rules found" in result.stdout


def test_prometheus_config_scrapes_the_exporter_and_sends_to_alertmanager() -> None:
    config = promql.load_yaml(promql.PROMETHEUS_FILE)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = jobs[promql.EXPORTER_JOB]["static_configs"][0]["targets"]
    assert targets == ["celery-exporter:9808"]
    assert config["rule_files"] == ["alert_rules.yml"]
    managers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert managers == ["alertmanager:9093"]


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", "alert_rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {rule_count()} rules found" in result.stdout
    assert rule_count() >= 25


def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alert_rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "FAILED" not in result.stdout + result.stderr
    alerts = {rule["alert"] for rule in promql.alert_rules()}
    assert len(_unit_test_cases()) >= 2 * len(alerts)


def test_rule_unit_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    rules = promql.RULES_FILE.read_text()
    moved = rules.replace(
        "record: celery:alert_threshold:queue_length_warning\n        expr: vector(100)",
        "record: celery:alert_threshold:queue_length_warning\n        expr: vector(1000)",
    )
    assert moved != rules
    (tmp_path / "alert_rules.yml").write_text(moved)
    shutil.copy(promql.RULES_TEST_FILE, tmp_path)
    result = promtool("test", "rules", "alert_rules_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "CeleryQueueBacklogHigh" in result.stdout + result.stderr


def test_alerts_follow_the_mixin_conventions() -> None:
    alerts = promql.alert_rules()
    assert alerts
    for rule in alerts:
        name = rule["alert"]
        assert name.startswith("Celery"), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["labels"]["component"] in COMPONENTS, name
        assert set(rule["annotations"]) == ANNOTATIONS, name
        assert rule["annotations"]["runbook_url"] == f"{promql.RUNBOOK_URL}#{name.lower()}"
        assert rule["annotations"]["dashboard_url"].startswith("http://localhost:3000/d/celery-")
        # The description must name what is wrong: an offending label or the value.
        assert re.search(r"\$labels\.\w+|\$value", rule["annotations"]["description"]), name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name


def test_the_required_alerts_exist_with_their_expressions() -> None:
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in promql.alert_rules()}
    one = "max without (instance, pod)"
    assert exprs["CeleryWorkerDown"] == f"{one} (celery_worker_up) == 0"
    assert (
        exprs["CeleryWorkerTaskEventsDisabled"] == f"{one} (celery_worker_task_events_enabled) == 0"
    )
    assert exprs["CeleryBrokerUnreachable"] == f"{one} (celery_exporter_broker_up) == 0"
    assert exprs["CeleryQueuePollFailing"] == f"{one} (celery_exporter_queue_poll_success) == 0"
    assert exprs["CeleryExporterDown"] == 'up{job="celery-exporter"} == 0'
    assert exprs["CeleryExporterAbsent"] == 'absent(up{job="celery-exporter"})'
    for name in (
        "CeleryTaskFailureRatioHigh",
        "CeleryQueueBacklogHigh",
        "CeleryQueueGrowingNoConsumers",
        "CeleryTaskRuntimeHigh",
        "CeleryTaskQueueWaitHigh",
        "CeleryNoWorkersOnline",
    ):
        assert name in exprs
    worker_down = next(r for r in promql.alert_rules() if r["alert"] == "CeleryWorkerDown")
    assert worker_down["for"] == "15m"


def _seconds(duration: str) -> int:
    value, unit = int(duration[:-1]), duration[-1]
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


# Alerts about one scrape target: they aggregate nothing, and a replica that is down is news.
PER_TARGET = {"CeleryExporterDown", "CeleryExporterAbsent"}


def test_rules_deduplicate_ha_replicas_before_aggregating() -> None:
    checked = 0
    for rule in promql.rules():
        if rule.get("alert") in PER_TARGET:
            continue
        assert not promql.undeduplicated(rule["expr"]), rule.get("alert") or rule["record"]
        checked += "celery_" in rule["expr"]
    assert checked >= 12


@pytest.mark.parametrize(
    ("expr", "raw"),
    [
        ("sum(rate(celery_a_total[5m]))", ["celery_a_total"]),
        ("sum without (hostname) (max without (instance, pod) (rate(celery_a_total[5m])))", []),
        ('max without (instance, pod) (celery_b{job=~"$job"}) > 0', []),
        ("max without (instance) (celery_b)", ["celery_b"]),  # pod would survive
        ("max without (instance, pod, version) (celery_c) * 0 or celery_d", ["celery_d"]),
        ('up{job="x"} == 0 unless on (job, celery_e) celery:recorded:rate5m', ["up"]),
    ],
)
def test_undeduplicated_finds_raw_reads(expr: str, raw: list[str]) -> None:
    assert promql.undeduplicated(expr) == raw


def test_ha_cases_run_two_instances_with_one_restarted() -> None:
    ha = [case for case in _unit_test_cases() if case["name"].startswith("HA pair")]
    assert len(ha) >= 5
    for case in ha:
        instances = {
            re.search(r'instance="([^"]+)"', series["series"]).group(1)  # type: ignore[union-attr]
            for series in case["input_series"]
        }
        assert len(instances) == 2, case["name"]
    restarted = [c for c in ha if any("stale" in s["values"] for s in c["input_series"])]
    assert len(restarted) >= 4


def test_worker_down_can_fire_with_the_exporter_defaults() -> None:
    # The series must read 0 (after --worker-timeout) for the whole `for:` and a few scrape and
    # evaluation intervals more before --purge-offline-worker-metrics removes it.
    from celery_exporter.cli import command

    defaults = {param.name: param.default for param in command.params}
    rule = next(r for r in promql.alert_rules() if r["alert"] == "CeleryWorkerDown")
    slack = 5 * 60
    timeout = defaults["worker_timeout"]
    purge = defaults["purge_offline_worker_metrics"]
    assert isinstance(timeout, float) and isinstance(purge, float)
    assert timeout + _seconds(rule["for"]) + slack < purge


def test_ratio_and_percentile_alerts_are_guarded_by_a_minimum_rate() -> None:
    for rule in promql.alert_rules():
        if rule["alert"] in ("CeleryTaskFailureRatioHigh", "CeleryTaskRuntimeHigh"):
            assert "celery:alert_threshold:task_min_rate" in rule["expr"], rule["alert"]
        if rule["alert"] == "CeleryTaskQueueWaitHigh":
            assert "celery:alert_threshold:task_min_rate" in rule["expr"]


def test_thresholds_live_in_one_group_at_the_top() -> None:
    groups = promql.rule_groups()
    assert groups[0]["name"] == "celery.thresholds"
    thresholds = {rule["record"] for rule in groups[0]["rules"]}
    assert all(name.startswith("celery:alert_threshold:") for name in thresholds)
    for rule in groups[0]["rules"]:
        assert re.fullmatch(r"vector\([\d.]+\)", rule["expr"]), rule
    # Every threshold is used (by an alert, or by a recording rule an alert reads, as the
    # per-task threshold lookup of CeleryTaskHung), and no alert hides a literal threshold
    # other than 0.
    alert_text = " ".join(rule["expr"] for rule in promql.alert_rules())
    alert_text += " ".join(
        rule["expr"]
        for rule in promql.rules()
        if "record" in rule and rule["record"] in alert_text and rule not in groups[0]["rules"]
    )
    for name in thresholds:
        assert name in alert_text, name
    for rule in promql.alert_rules():
        literals = re.findall(r"(?:>|<|==|!=)\s*(-?[\d.]+)\b", rule["expr"])
        assert set(literals) <= {"0"}, (rule["alert"], literals)


def test_recording_rules_follow_the_naming_rule() -> None:
    for group in promql.rule_groups():
        for rule in group["rules"]:
            if "record" in rule:
                assert re.fullmatch(r"celery:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule
    assert "celery:task_failure_ratio:rate5m" in promql.recording_names()


def _unit_test_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = promql.load_yaml(promql.RULES_TEST_FILE)["tests"]
    return cases


def test_every_alert_has_a_firing_case_with_exact_labels_and_annotations() -> None:
    fired: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for case in _unit_test_cases():
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts", []):
                labels = alert["exp_labels"]
                assert labels["alertname"] == check["alertname"]
                fired[(labels["alertname"], labels["severity"])].append(alert)
    for rule in promql.alert_rules():
        key = (rule["alert"], rule["labels"]["severity"])
        assert fired[key], f"no unit test where {key} fires"
        for alert in fired[key]:
            assert set(alert["exp_annotations"]) == ANNOTATIONS, key
            assert alert["exp_labels"]["component"] == rule["labels"]["component"], key


def test_every_alert_has_a_quiet_case() -> None:
    quiet = {
        check["alertname"]
        for case in _unit_test_cases()
        for check in case.get("alert_rule_test", [])
        if not check.get("exp_alerts")
    }
    missing = {rule["alert"] for rule in promql.alert_rules()} - quiet
    assert not missing, f"alerts with no unit test where they stay quiet: {sorted(missing)}"
