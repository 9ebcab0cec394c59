"""`celery-exporter check` against a real stack started here: Redis, a worker with -E, the
exporter, Prometheus with the shipped rules sending to Alertmanager with the shipped config,
and a stand-in Grafana (none can be installed). All green first; then each failure is produced
for real and must be named. The last two tests stop the shared Alertmanager and exporter, so
they stay last in this file.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

from tests.support.alertmanager import SETTINGS, Alertmanager, render_config
from tests.support.exporter_process import ExporterProcess
from tests.support.prometheus import Prometheus
from tests.support.servers import (
    CeleryWorker,
    RabbitMQServer,
    RedisServer,
    WorkerFactory,
    free_port,
    wait_for,
)
from tests.support.stack import FakeGrafana, prometheus_config, run_tool, shipped_dashboards

pytestmark = [pytest.mark.integration, pytest.mark.deploy]

TOKEN = "glsa_test_token"
LINKS = ["broker", "exporter", "prometheus", "alertmanager", "grafana"]


@dataclass
class Stack:
    tmp: Path
    redis: RedisServer
    exporter: ExporterProcess
    prometheus: Prometheus
    alertmanager: Alertmanager
    grafana: FakeGrafana

    def urls(self) -> list[str]:
        return [
            "--broker-url", self.redis.url,
            "--exporter-url", self.exporter.url,
            "--prometheus-url", self.prometheus.url,
            "--alertmanager-url", f"http://127.0.0.1:{self.alertmanager.port}",
            "--grafana-url", self.grafana.url,
        ]  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("check")
    redis = RedisServer.start(tmp / "redis")
    worker = CeleryWorker(redis.url, tmp / "workers", hostname=f"loud@{socket.gethostname()}")
    exporter = ExporterProcess(redis.url, tmp / "exporter", ["--inspect-interval", "2"])
    started: list[object] = []
    try:
        worker.start()
        exporter.start()
        assert render_config(tmp, SETTINGS).returncode == 0
        alertmanager = Alertmanager(tmp / "rendered.yml", tmp)
        started.append(alertmanager)
        config = prometheus_config(
            tmp / "prometheus", [exporter.port], alertmanager_port=alertmanager.port
        )
        prometheus = Prometheus(config, tmp / "prometheus")
        started.append(prometheus)
        grafana = FakeGrafana(prometheus.url, TOKEN, shipped_dashboards())
        started.append(grafana)
        prometheus.wait_ready()
        worker.wait_ready()
        # Ready means: the target scraped up, and Prometheus has discovered its Alertmanager.
        wait_for(lambda: bool(prometheus.query('up{job="celery-exporter"} == 1')), 30.0, "a scrape")
        wait_for(lambda: _alertmanagers(prometheus), 30.0, "Prometheus to find Alertmanager")
        yield Stack(tmp, redis, exporter, prometheus, alertmanager, grafana)
    finally:
        for server in reversed(started):
            server.stop()  # type: ignore[attr-defined]
        exporter.stop()
        worker.stop()
        redis.stop()


def _alertmanagers(prometheus: Prometheus) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"{prometheus.url}/api/v1/alertmanagers", timeout=5) as response:
        return bool(json.load(response)["data"]["activeAlertmanagers"])


class Trickle:
    """Sends a task every 0.2 s while a check listens, so workers have something to report."""

    def __init__(self, broker_url: str, queue: str = "celery") -> None:
        self.app = Celery("producer", broker=broker_url, set_as_current=False)
        self.app.conf.task_send_sent_event = True
        self.queue = queue
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            self.app.send_task("workload.add", args=(1, 2), queue=self.queue)

    def __enter__(self) -> Trickle:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.app.close()


def check(*args: str, token: str = TOKEN) -> tuple[int, list[dict[str, str]]]:
    result = run_tool("check", "--output", "json", *args, env={"CE_GRAFANA_TOKEN": token})
    assert result.returncode in (0, 1), result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is (result.returncode == 0)
    return result.returncode, data["checks"]


def failed(checks: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    return {(c["link"], c["name"]): c for c in checks if c["status"] == "FAIL"}


def test_everything_green(stack: Stack) -> None:
    with Trickle(stack.redis.url):
        code, checks = check(*stack.urls())
    assert code == 0, json.dumps(checks, indent=1)
    assert {c["status"] for c in checks} == {"OK"}, json.dumps(checks, indent=1)
    # One line per check, in the order data flows.
    order = [LINKS.index(c["link"]) for c in checks]
    assert order == sorted(order) and set(order) == set(range(len(LINKS)))
    names = {(c["link"], c["name"]) for c in checks}
    for expected in [("broker", "reachable"), ("broker", "queue lengths"), ("broker", "workers"),
                     ("broker", f"task events loud@{socket.gethostname()}"),
                     ("broker", "task-sent events"), ("exporter", "broker connection"),
                     ("exporter", "events"), ("prometheus", "target"),
                     ("prometheus", "rule groups"), ("prometheus", "alertmanagers"),
                     ("alertmanager", "configuration"), ("alertmanager", "receivers"),
                     ("grafana", "data source"), ("grafana", "dashboards")]:  # fmt: skip
        assert expected in names
    receivers = next(c for c in checks if c["name"] == "receivers")["reason"]
    assert "critical -> celery-email, celery-platform-email, celery-webhook" in receivers


def test_text_output_is_one_line_per_check_and_a_summary(stack: Stack) -> None:
    result = run_tool("check", "--prometheus-url", stack.prometheus.url,
                      "--exporter-url", stack.exporter.url)  # fmt: skip
    assert result.returncode == 0, result.stdout
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("SKIP  broker")
    assert lines[-1].startswith("all checks passed: 8 ok, 0 failed, 3 skipped in ")
    assert all(line.split()[0] in {"OK", "SKIP"} for line in lines[:-1])


def test_a_worker_without_task_events_is_named_with_the_fix(stack: Stack) -> None:
    quiet = CeleryWorker(stack.redis.url, stack.tmp / "quiet", queues=("quiet",),
                         hostname=f"quiet@{socket.gethostname()}", events=False)  # fmt: skip
    quiet.args[quiet.args.index("tests.support.workload_app")] = "tests.support.quiet_app"
    exporter_view: list[dict[str, str]] = []

    def exporter_names_it() -> bool:
        nonlocal exporter_view
        _, exporter_view = check("--exporter-url", stack.exporter.url)
        return ("exporter", "task events") in failed(exporter_view)

    try:
        quiet.start().wait_ready()
        with Trickle(stack.redis.url, queue="quiet"):
            code, checks = check("--broker-url", stack.redis.url, "--events-window", "6")
            # The exporter judges over a longer time (10 s of `processed` growing).
            wait_for(exporter_names_it, 40.0, "the exporter to see the quiet worker", step=1)
    finally:
        quiet.stop()
    assert code == 1
    bad = failed(checks)
    line = bad[("broker", f"task events {quiet.hostname}")]
    assert list(bad) == [("broker", f"task events {quiet.hostname}")], checks
    assert "sent no task event" in line["reason"]
    assert "-E" in line["fix"] and "worker_send_task_events" in line["fix"]
    assert "enable_events" in line["fix"]
    assert quiet.hostname in failed(exporter_view)[("exporter", "task events")]["reason"]


def test_prometheus_without_the_rules(stack: Stack) -> None:
    config = prometheus_config(stack.tmp / "norules", [stack.exporter.port], rules=False,
                               alertmanager_port=stack.alertmanager.port)  # fmt: skip
    bare = Prometheus(config, stack.tmp / "norules")
    try:
        bare.wait_ready()
        wait_for(lambda: bool(bare.query('up{job="celery-exporter"} == 1')), 30.0, "a scrape")
        code, checks = check("--prometheus-url", bare.url)
    finally:
        bare.stop()
    assert code == 1
    bad = failed(checks)
    assert list(bad) == [("prometheus", "rule groups")]
    reason = bad[("prometheus", "rule groups")]["reason"]
    assert reason == "not loaded: celery.thresholds, celery.recording, celery.alerts"
    assert "rule_files" in bad[("prometheus", "rule groups")]["fix"]


def test_a_wrong_prometheus_url(stack: Stack) -> None:
    wrong = f"http://127.0.0.1:{free_port()}"
    code, checks = check("--prometheus-url", wrong)
    assert code == 1
    bad = failed(checks)
    assert list(bad) == [("prometheus", "ready")]
    assert "Connection refused" in bad[("prometheus", "ready")]["reason"]
    assert "--prometheus-url" in bad[("prometheus", "ready")]["fix"]


def test_grafana_credentials_from_a_file_and_what_fails(stack: Stack, tmp_path: Path) -> None:
    secret = tmp_path / "grafana-token"
    secret.write_text(TOKEN + "\n")
    code, checks = check("--grafana-url", stack.grafana.url, "--grafana-credentials-file",
                         str(secret), token="")  # fmt: skip
    assert code == 0, checks

    code, checks = check("--grafana-url", stack.grafana.url, token="wrong")
    assert code == 1
    bad = failed(checks)
    assert set(bad) == {("grafana", "data source"), ("grafana", "dashboards")}
    assert "HTTP 401" in bad[("grafana", "dashboards")]["reason"]
    assert "CE_GRAFANA_TOKEN" in bad[("grafana", "dashboards")]["fix"]

    boards = shipped_dashboards()
    moved = boards.pop("celery-tasks")
    boards["renamed"] = moved
    partial = FakeGrafana(f"http://127.0.0.1:{free_port()}", TOKEN, boards)
    try:
        code, checks = check("--grafana-url", partial.url)
    finally:
        partial.stop()
    bad = failed(checks)
    assert set(bad) == {("grafana", "data source"), ("grafana", "dashboards")}
    assert "fails its health check" in bad[("grafana", "data source")]["reason"]
    assert bad[("grafana", "dashboards")]["reason"] == "missing: celery-tasks"
    assert f"{moved['title']} (uid renamed)" in bad[("grafana", "dashboards")]["fix"]


def test_the_broker_link_on_rabbitmq(
    rabbitmq_server: RabbitMQServer, worker_factory: WorkerFactory
) -> None:
    worker = worker_factory(rabbitmq_server.url)
    with Trickle(rabbitmq_server.url):
        code, checks = check("--broker-url", rabbitmq_server.url)
    assert code == 0, checks
    assert ("broker", f"task events {worker.hostname}") in {
        (c["link"], c["name"]) for c in checks if c["status"] == "OK"
    }
    assert ("broker", "task-sent events") in {(c["link"], c["name"]) for c in checks}
    # A wrong password: in the exporter's own words (faults/classify.py), and never printed.
    wrong = rabbitmq_server.url.replace("guest:guest", "guest:s3cret-pw")
    result = run_tool("check", "--broker-url", wrong)
    assert result.returncode == 1
    assert re.search(
        r"^FAIL  broker +reachable +cannot connect to broker amqp://guest:\*\*\*@\S+: "
        "authentication failed: the broker refused the user and password in --broker-url",
        result.stdout,
        re.M,
    ), result.stdout
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "guest:***@" in result.stdout


def test_an_exporter_that_cannot_reach_its_broker(tmp_path: Path) -> None:
    exporter = ExporterProcess(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    try:
        exporter.start()
        code, checks = check("--exporter-url", exporter.url)
    finally:
        exporter.stop()
    assert code == 1
    bad = failed(checks)
    assert list(bad) == [("exporter", "broker connection"), ("exporter", "events")]
    assert bad[("exporter", "broker connection")]["reason"] == "celery_exporter_broker_up is 0"
    assert "no event has arrived" in bad[("exporter", "events")]["reason"]


def test_everything_down_ends_well_under_20_seconds() -> None:
    # Ports that accept connections and never answer (the kernel completes the handshake
    # into the listen backlog): the worst case, worse than a refused connection.
    silent = [socket.socket() for _ in range(5)]
    try:
        for sock in silent:
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
        ports = [s.getsockname()[1] for s in silent]
        started = time.monotonic()
        code, checks = check(
            "--broker-url", f"redis://127.0.0.1:{ports[0]}/0",
            "--exporter-url", f"http://127.0.0.1:{ports[1]}",
            "--prometheus-url", f"http://127.0.0.1:{ports[2]}",
            "--alertmanager-url", f"http://127.0.0.1:{ports[3]}",
            "--grafana-url", f"http://127.0.0.1:{ports[4]}",
        )  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        for sock in silent:
            sock.close()
    assert code == 1
    assert {c["link"] for c in checks if c["status"] == "FAIL"} == set(LINKS)
    # The contract of the feature, measured from outside, start-up of Python included.
    assert elapsed < 20.0, elapsed


def test_alertmanager_stopped(stack: Stack) -> None:
    stack.alertmanager.stop()
    code, checks = check("--alertmanager-url", f"http://127.0.0.1:{stack.alertmanager.port}")
    assert code == 1
    bad = failed(checks)
    assert list(bad) == [("alertmanager", "ready")]
    assert "Connection refused" in bad[("alertmanager", "ready")]["reason"]


def test_exporter_stopped(stack: Stack) -> None:
    stack.exporter.stop()
    code, checks = check("--exporter-url", stack.exporter.url)
    assert code == 1
    assert list(failed(checks)) == [("exporter", "/metrics")]
    # Prometheus notices at its next scrape (every second here).
    seen: list[dict[str, str]] = []

    def target_down() -> bool:
        nonlocal seen
        _, seen = check("--prometheus-url", stack.prometheus.url,
                        "--exporter-url", stack.exporter.url)  # fmt: skip
        return ("prometheus", "target") in failed(seen)

    wait_for(target_down, 30.0, "the target check to fail", step=0.5)
    reason = failed(seen)[("prometheus", "target")]["reason"]
    assert f"target 127.0.0.1:{stack.exporter.port} is down" in reason
