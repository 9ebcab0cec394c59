"""A real Prometheus on a free loopback port, and a test copy of the shipped config and rules.

The copy scrapes the test exporters every second, evaluates every second, has no Alertmanager
(Prometheus still computes alert states) and every `for:` shortened to SHORT_FOR, so a drill
sees an alert go pending within seconds of its condition.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support import promql
from tests.support.servers import free_port, terminate_pid, wait_for

SHORT_FOR = "2s"


QueryResult = list[dict[str, Any]]


class Prometheus:
    """A real Prometheus on a free loopback port, its TSDB in a temp dir, stopped by PID."""

    def __init__(self, config: Path, data: Path) -> None:
        self.port = free_port()
        self.log = data / "prometheus.log"
        self.url = f"http://127.0.0.1:{self.port}"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={data / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        wait_for(self._ready, 30.0, f"prometheus on {self.port}", step=0.2)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body["status"] != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> QueryResult:
        """Evaluate `expr` now, or at Unix time `at`."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self._get("/api/v1/query", **params)
        result: QueryResult = data["result"] if data["resultType"] == "vector" else [data]
        return result

    def alerts(self) -> QueryResult:
        alerts: QueryResult = self._get("/api/v1/alerts")["alerts"]
        return alerts

    def stop(self) -> None:
        terminate_pid(self.process.pid)
        self.process.wait(5)


class QueryError(RuntimeError):
    """Prometheus rejected or failed a query."""


def write_test_config(directory: Path, *exporter_ports: int) -> Path:
    """The shipped config and rules, scraping the test exporters every second, `for:` short."""
    directory.mkdir(parents=True, exist_ok=True)
    config = promql.load_yaml(promql.PROMETHEUS_FILE)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == promql.EXPORTER_JOB]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}" for port in exporter_ports]}]
    config["scrape_configs"] = [job]
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config.pop("alerting")  # no Alertmanager here; Prometheus still computes alert states
    groups = promql.rule_groups()
    for group in groups:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
    (directory / "alert_rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path
