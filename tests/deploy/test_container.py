"""The Dockerfile and deploy/docker-compose.yml, checked as text.

The Dockerfile is read instruction by instruction; its HEALTHCHECK one-liner is run for real
against a local HTTP server answering 200 and then 503. tests/container builds and runs the
image itself. The compose stack's third-party images cannot be had here, so the compose file
is only read, for the services, mounts and wiring the stack needs: every mounted file exists,
and the names and ports in prometheus.yml, alertmanager.yml and the Grafana datasource match
the compose services.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import promql

DOCKERFILE = promql.REPO / "Dockerfile"
COMPOSE_FILE = promql.DEPLOY / "docker-compose.yml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_image_is_slim_python_by_default_and_installs_the_repo_source_compiled() -> None:
    steps = instructions()
    # The bases are build arguments (tests/container builds on debootstrap'd Debians): by
    # default the official slim image for the final stage, and the full image of the same
    # Python (a C compiler, headers) for the build stage, which compiles the tracker.
    bases = [rest for keyword, rest in steps if keyword == "FROM"]
    assert bases == ["${BUILD_IMAGE} AS build", "${BASE_IMAGE}"]
    args = [rest for keyword, rest in steps if keyword == "ARG"]
    assert "BASE_IMAGE=python:${PYTHON_VERSION}-slim" in args
    assert "BUILD_IMAGE=python:${PYTHON_VERSION}" in args
    assert any(arg.startswith("PYTHON_VERSION=3.") for arg in args)
    first_from = next(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    assert {keyword for keyword, _ in steps[:first_from]} == {"ARG"}
    runs = " ".join(rest for keyword, rest in steps if keyword == "RUN")
    assert re.search(r"CE_MYPYC=1 \S+/pip wheel .*--no-build-isolation.* \.(\s|$)", runs)
    assert re.search(r"/opt/celery-exporter/bin/pip install .*--no-deps .*/wheels/\*\.whl", runs)
    copies = [rest for keyword, rest in steps if keyword == "COPY"]
    assert "src ./src" in copies
    assert any("setup.py" in copy for copy in copies)


def test_every_pip_install_takes_the_hash_pinned_locks() -> None:
    """The dependencies come from requirements/*.txt with --require-hashes: nothing resolves
    the newest release at build time (a `pip install .` or a bare name would)."""
    runs = [rest for keyword, rest in instructions() if keyword == "RUN"]
    installs = [
        command.strip()
        for run in runs
        for command in run.split("&&")
        if re.search(r"\bpip (install|wheel)\b", command)
    ]
    assert installs
    for command in installs:
        locked = re.fullmatch(
            r"\S+/pip install -q --require-hashes -r requirements/(runtime|build)\.txt", command
        )
        assert locked or " --no-deps " in f"{command} ", command
    locks = {
        match for command in installs for match in re.findall(r"requirements/\w+\.txt", command)
    }
    assert locks == {"requirements/runtime.txt", "requirements/build.txt"}
    # mypy writes the C code: one exact version in the build lock, not whatever is newest.
    build_lock = (promql.REPO / "requirements" / "build.txt").read_text()
    assert re.search(r"^mypy==\d+\.\d+\.\d+ \\$", build_lock, re.MULTILINE)


def test_final_stage_runs_as_non_root_exposes_9808_and_starts_the_exporter() -> None:
    stage = final_stage()
    users = [rest for keyword, rest in stage if keyword == "USER"]
    assert users, "no USER in the final stage"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert ("EXPOSE", "9808") in stage
    assert ("ENTRYPOINT", '["celery-exporter"]') in stage
    assert not any(keyword == "RUN" and "curl" in rest for keyword, rest in stage)


def healthcheck_command() -> list[str]:
    (rest,) = [rest for keyword, rest in final_stage() if keyword == "HEALTHCHECK"]
    assert "--interval=" in rest and "--timeout=" in rest
    _, _, exec_form = rest.partition("CMD ")
    command: list[str] = json.loads(exec_form)
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]
    return command


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        _Health.status = 200


def _run_healthcheck(port: int) -> int:
    command = healthcheck_command()
    env = {**os.environ, "CE_PORT": str(port)}
    result = subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    if result.returncode:  # the health log gets one line naming the error, no traceback
        assert result.stderr.decode().startswith("unhealthy: ")
        assert len(result.stderr.decode().splitlines()) == 1, result.stderr
    return result.returncode


def test_healthcheck_passes_on_200_and_fails_otherwise(
    health_server: http.server.HTTPServer,
) -> None:
    port = health_server.server_address[1]
    assert _run_healthcheck(port) == 0
    _Health.status = 503
    assert _run_healthcheck(port) == 1
    health_server.shutdown()
    health_server.server_close()
    assert _run_healthcheck(port) == 1  # connection refused


def test_dockerignore_keeps_only_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (promql.REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for keyword, rest in instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            copied.update(rest.split()[:-1])
    assert copied <= allowed, copied - allowed
    for path in copied:
        assert (promql.REPO / path).exists(), path


def compose() -> dict[str, Any]:
    config: dict[str, Any] = promql.load_yaml(COMPOSE_FILE)
    return config


def test_compose_runs_the_whole_stack() -> None:
    services = compose()["services"]
    assert {
        "redis", "celery-exporter", "worker", "producer", "prometheus", "alertmanager",
        "grafana", "alert-webhook",
    } <= set(services)  # fmt: skip
    exporter = services["celery-exporter"]
    assert exporter["build"]["context"] == ".."
    assert exporter["build"]["dockerfile"] == "Dockerfile"
    assert exporter["environment"]["CE_BROKER_URL"] == "redis://redis:6379/0"
    assert "9808:9808" in exporter["ports"]
    worker = services["worker"]
    assert worker["entrypoint"] == ["celery"]
    assert worker["command"][:4] == ["-A", "demo.app", "worker", "-E"]
    assert worker["environment"]["DEMO_BROKER_URL"] == "redis://redis:6379/0"
    assert services["producer"]["command"] == ["-m", "demo.producer"]


def test_compose_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (promql.DEPLOY / source).exists(), f"{name}: {source} missing"
    assert (promql.REPO / "demo" / "app.py").exists()
    assert (promql.REPO / "demo" / "producer.py").exists()


def test_compose_wiring_matches_the_configs() -> None:
    services = compose()["services"]
    prometheus = promql.load_yaml(promql.PROMETHEUS_FILE)
    (scrape,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == promql.EXPORTER_JOB]
    host, port = scrape["static_configs"][0]["targets"][0].split(":")
    assert host in services and f"{port}:{port}" in services[host]["ports"]
    am_host, am_port = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][
        0
    ].split(":")
    assert am_host in services and f"{am_port}:{am_port}" in services[am_host]["ports"]
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "./alert_rules.yml:/etc/prometheus/alert_rules.yml:ro" in mounts

    alertmanager = promql.load_yaml(promql.ALERTMANAGER_FILE)
    receivers = {receiver["name"]: receiver for receiver in alertmanager["receivers"]}
    webhook = receivers["celery-webhook"]["webhook_configs"][0]["url"]
    assert webhook.startswith("http://alert-webhook:5001/")
    am = services["alertmanager"]
    assert am["entrypoint"] == ["/bin/sh", "/etc/alertmanager/entrypoint.sh"]
    for variable in ("SMTP_HOST", "SMTP_PORT", "SMTP_USER", "SMTP_FROM", "ALERT_EMAIL_TO"):
        assert variable in am["environment"]
    assert "SMTP_PASSWORD" not in json.dumps(am["environment"])
    assert am["secrets"] == ["smtp_password"]
    assert alertmanager["global"]["smtp_auth_password_file"] == "/run/secrets/smtp_password"

    datasource = promql.load_yaml(
        promql.DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]


def test_compose_interpolation_has_defaults() -> None:
    # `docker compose up` must start with no .env file: every ${VAR} has a :-default.
    text = COMPOSE_FILE.read_text()
    bare = [v for v in re.findall(r"\$\{([^}]*)\}", text) if ":-" not in v]
    assert not bare, bare


def test_shipped_yaml_parses() -> None:
    for path in promql.DEPLOY.rglob("*.yml"):
        assert promql.load_yaml(path) is not None, path
