"""A real Alertmanager on a free loopback port, with the shipped config rendered for the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support import promql
from tests.support.servers import free_port, terminate_pid, wait_for

ENTRYPOINT = promql.DEPLOY / "alertmanager" / "entrypoint.sh"


SETTINGS = {
    "SMTP_HOST": "smtp.example.org",
    "SMTP_PORT": "587",
    "SMTP_USER": "alerts@example.org",
    "SMTP_FROM": "alerts@example.org",
    "ALERT_EMAIL_TO": "team@example.org",
    "PLATFORM_EMAIL_TO": "ops@example.org",
}


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        # A missing tool fails: scripts/test.sh installs it, and a skip would hide that.
        pytest.fail(f"{name} is not installed (Debian package prometheus-alertmanager)")
    return path


def render_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The entrypoint execs its "Alertmanager" with --config.file=OUT; amtool checks OUT instead.
    stub = tmp_path / "alertmanager"
    stub.write_text(f'#!/bin/sh\nexec {binary("amtool")} check-config "${{1#--config.file=}}"\n')
    stub.chmod(0o755)
    full_env = {
        "PATH": os.environ["PATH"],
        "AM_CONFIG_TEMPLATE": str(promql.ALERTMANAGER_FILE),
        "AM_CONFIG_OUT": str(tmp_path / "rendered.yml"),
        "AM_BINARY": str(stub),
        **env,
    }
    return subprocess.run(
        ["sh", str(ENTRYPOINT)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Alertmanager:
    """A real Alertmanager on a free loopback port, clustering off, state in a temp dir."""

    def __init__(self, config: Path, data: Path) -> None:
        self.port = free_port()
        self.log = data / "alertmanager.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary("prometheus-alertmanager"),
                    f"--config.file={config}",
                    f"--storage.path={data}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self.ready, 20.0, f"alertmanager on {self.port}\n{self.log.read_text()}")

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"alertmanager exited:\n{self.log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                return True
        except OSError:
            return False

    def post(self, alerts: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def alerts(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v2/alerts"
        with urllib.request.urlopen(url, timeout=5) as response:
            result: list[dict[str, Any]] = json.load(response)
            return result

    def stop(self) -> None:
        terminate_pid(self.process.pid)
        self.process.wait(5)
