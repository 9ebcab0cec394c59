"""The shipped Alertmanager config: valid, routes by severity and component, and inhibits.

`amtool check-config` and `amtool config routes test` run offline. The entrypoint that fills
the config template from the environment is run for real, with amtool standing in for the
Alertmanager binary. Inhibition is checked against a real Alertmanager on a free port: alerts
are posted to its API and read back with their `inhibitedBy` status.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import promql
from tests.support.alertmanager import SETTINGS, Alertmanager, binary, render_config
from tests.support.servers import wait_for

pytestmark = pytest.mark.deploy


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("amtool"), *args],
        cwd=promql.DEPLOY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_is_valid() -> None:
    result = amtool("check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "3 inhibit rules" in result.stdout
    assert "3 receivers" in result.stdout


def test_the_password_comes_from_a_file_and_nothing_secret_is_inline() -> None:
    config = promql.load_yaml(promql.ALERTMANAGER_FILE)
    assert config["global"]["smtp_auth_password_file"] == "/run/secrets/smtp_password"
    assert "smtp_auth_password" not in config["global"]
    assert config["global"]["smtp_smarthost"] == "${SMTP_HOST}:${SMTP_PORT}"
    assert config["global"]["smtp_auth_username"] == "${SMTP_USER}"


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ({"severity": "critical", "component": "queue"}, "celery-webhook,celery-email"),
        ({"severity": "critical", "component": "broker"}, "celery-webhook,celery-platform-email"),
        ({"severity": "warning", "component": "exporter"}, "celery-platform-email"),
        ({"severity": "warning", "component": "task"}, "celery-email"),
        ({"severity": "warning", "component": "worker"}, "celery-email"),
        ({"severity": "info", "component": "worker"}, "celery-email"),
    ],
)
def test_routes_by_severity_and_component(labels: dict[str, str], receivers: str) -> None:
    args = [f"{key}={value}" for key, value in labels.items()]
    result = amtool("config", "routes", "test", "--config.file=alertmanager.yml", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def test_every_shipped_alert_reaches_a_receiver_by_its_component() -> None:
    config = promql.load_yaml(promql.ALERTMANAGER_FILE)
    matchers = " ".join(m for route in config["route"]["routes"] for m in route["matchers"])
    for rule in promql.alert_rules():
        assert rule["labels"]["component"] in matchers, rule["alert"]


def test_entrypoint_fills_the_template_from_the_environment(tmp_path: Path) -> None:
    awkward = "ops|team&co\\x'y"  # sed and YAML metacharacters must come through unchanged
    result = render_config(tmp_path, {**SETTINGS, "SMTP_USER": awkward})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    rendered = promql.load_yaml(tmp_path / "rendered.yml")
    assert rendered["global"]["smtp_smarthost"] == "smtp.example.org:587"
    assert rendered["global"]["smtp_auth_username"] == awkward
    assert rendered["global"]["smtp_from"] == "alerts@example.org"
    receivers = {r["name"]: r for r in rendered["receivers"]}
    assert receivers["celery-email"]["email_configs"][0]["to"] == "team@example.org"
    assert receivers["celery-platform-email"]["email_configs"][0]["to"] == "ops@example.org"
    assert "${" not in json.dumps(rendered)


def test_entrypoint_refuses_to_start_without_a_setting(tmp_path: Path) -> None:
    settings = dict(SETTINGS)
    del settings["SMTP_HOST"]
    result = render_config(tmp_path, settings)
    assert result.returncode != 0
    assert "SMTP_HOST" in result.stderr
    assert not (tmp_path / "rendered.yml").exists()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    assert render_config(tmp_path, SETTINGS).returncode == 0
    server = Alertmanager(tmp_path / "rendered.yml", tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _alert(**labels: str) -> dict[str, Any]:
    return {"labels": {"job": "celery-exporter", **labels}, "annotations": {}}


def test_inhibition_mutes_what_a_cause_explains(alertmanager: Alertmanager) -> None:
    queue = {"instance": "celery-exporter:9808", "queue_name": "celery"}
    alertmanager.post(
        [
            _alert(alertname="CeleryQueueBacklogHigh", severity="critical", component="queue",
                   **queue),
            _alert(alertname="CeleryQueueBacklogHigh", severity="warning", component="queue",
                   **queue),
            # Same alert on another queue: not explained by the critical one.
            _alert(alertname="CeleryQueueBacklogHigh", severity="warning", component="queue",
                   instance="celery-exporter:9808", queue_name="bulk"),
            _alert(alertname="CeleryBrokerUnreachable", severity="critical", component="broker",
                   job="celery-exporter-b", instance="b:9808"),
            _alert(alertname="CeleryTaskFailureRatioHigh", severity="warning", component="task",
                   job="celery-exporter-b", name="app.add", queue_name="celery"),
            _alert(alertname="CeleryWorkerDown", severity="warning", component="worker",
                   job="celery-exporter-b", worker="celery@pod-1", hostname="pod-1"),
            _alert(alertname="CeleryExporterDown", severity="critical", component="exporter",
                   job="celery-exporter-b", instance="b:9808"),
        ]
    )  # fmt: skip

    def key(alert: dict[str, Any]) -> tuple[str, str, str, str]:
        labels = alert["labels"]
        return (labels["alertname"], labels["severity"], labels["job"],
                labels.get("queue_name", ""))  # fmt: skip

    expected_muted = {
        ("CeleryQueueBacklogHigh", "warning", "celery-exporter", "celery"),
        ("CeleryTaskFailureRatioHigh", "warning", "celery-exporter-b", "celery"),
        ("CeleryWorkerDown", "warning", "celery-exporter-b", ""),
    }

    def muted() -> set[tuple[str, str, str, str]]:
        return {key(a) for a in alertmanager.alerts() if a["status"]["inhibitedBy"]}

    # The inhibitor learns source alerts asynchronously; poll until it has caught up.
    wait_for(lambda: muted() == expected_muted, 10.0, f"inhibition; muted now {muted()}")
    states = {key(a): a["status"]["state"] for a in alertmanager.alerts()}
    assert len(states) == 7
    assert states[("CeleryQueueBacklogHigh", "warning", "celery-exporter", "bulk")] == "active"
    assert states[("CeleryQueueBacklogHigh", "critical", "celery-exporter", "celery")] == "active"
    assert states[("CeleryExporterDown", "critical", "celery-exporter-b", "")] == "active"
