"""The real exporter as a subprocess (`python -m celery_exporter`), and reading its /metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class ExporterProcess:
    def __init__(self, broker_url: str, log_dir: Path, args: Sequence[str] = ()) -> None:
        self.broker_url = broker_url
        self.port = free_port()
        self.args = list(args)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"exporter-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery_exporter",
            "--broker-url",
            self.broker_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]

    def start(self, wait: bool = True) -> ExporterProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO
            )
        if wait:
            wait_for(self._healthy, 20, f"exporter on {self.port}\n{self.log}")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"exporter exited {self.proc.returncode}:\n{self.log}")
        try:
            return self.get("/healthz")[0] == 200
        except OSError:
            return False

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def scrape(self) -> Samples:
        status, body = self.get("/metrics")
        assert status == 200, body
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }

    def value(self, name: str, /, **labels: str) -> float | None:
        return self.scrape().get((name, frozenset(labels.items())))

    def wait_value(
        self,
        name: str,
        labels: dict[str, str],
        predicate: Callable[[float | None], bool],
        timeout: float = 20.0,
    ) -> float | None:
        """Poll /metrics until predicate(value) holds; return the value."""
        deadline = time.monotonic() + timeout
        value = self.value(name, **labels)
        while not predicate(value):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} = {value} after {timeout}s\n{self.log}")
            time.sleep(0.1)
            value = self.value(name, **labels)
        return value

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


ExporterFactory = Callable[..., ExporterProcess]
