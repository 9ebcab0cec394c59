"""Shared pieces of the operator-command tests: Prometheus configs, the command as a process,
a stand-in Grafana, and reading a PNG's pixels.

The real servers come from servers.py, exporter_process.py and alertmanager.py beside this
module, and the deploy tests' Prometheus; only what those lack is here.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import zlib
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.support import promql
from tests.support.servers import REPO_ROOT, free_port


def prometheus_config(
    directory: Path,
    exporter_ports: Sequence[int],
    *,
    rules: bool = True,
    alertmanager_port: int | None = None,
) -> Path:
    """The shipped prometheus.yml (and, if `rules`, the shipped rules unchanged), scraping the
    test exporters every second and sending alerts to the test Alertmanager, if any."""
    directory.mkdir(parents=True, exist_ok=True)
    config = promql.load_yaml(promql.PROMETHEUS_FILE)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == promql.EXPORTER_JOB]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}" for port in exporter_ports]}]
    config["scrape_configs"] = [job]
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    if alertmanager_port is None:
        config.pop("alerting")
    else:
        targets = [f"127.0.0.1:{alertmanager_port}"]
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": targets}]}]}
    if rules:
        (directory / "alert_rules.yml").write_text(promql.RULES_FILE.read_text())
    else:
        config.pop("rule_files")
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_tool(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`celery-exporter ARGS...` as a separate process, as an operator runs it."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "celery_exporter", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO_ROOT,
        timeout=timeout,
        check=False,
    )


class FakeGrafana:
    """Answers the Grafana HTTP API endpoints `check` uses, as Grafana's documentation shows:

    GET /api/health -> {"commit", "database": "ok", "version"} (no auth needed);
    GET /api/datasources/uid/:uid/health -> 200 {"status": "OK", "message"} after querying the
      Prometheus it fronts (400 {"status": "ERROR", "message"} when that fails), 404 unknown uid;
    GET /api/dashboards/uid/:uid -> 200 {"dashboard", "meta"} or 404 {"message": "Dashboard not
      found"}; GET /api/search?type=dash-db&query= -> [{"uid", "title", "type", ...}].
    Everything but /api/health needs `Authorization: Bearer <token>` (401 otherwise).
    """

    def __init__(self, prometheus_url: str, token: str, dashboards: dict[str, dict[str, Any]]):
        self.prometheus_url = prometheus_url
        self.token = token
        self.dashboards = dashboards  # uid -> dashboard JSON, as provisioned
        self.datasource_uid = "prometheus"
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, body = fake.answer(self.path, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, raw_path: str, authorization: str) -> tuple[int, Any]:
        parts = urllib.parse.urlsplit(raw_path)
        path = parts.path
        if path == "/api/health":
            return 200, {"commit": "test", "database": "ok", "version": "11.6.0"}
        if authorization != f"Bearer {self.token}":
            return 401, {"message": "Unauthorized"}
        if path.startswith("/api/datasources/uid/") and path.endswith("/health"):
            uid = path.split("/")[4]
            if uid != self.datasource_uid:
                return 404, {"message": "Data source not found"}
            try:
                url = f"{self.prometheus_url}/api/v1/query?query=1%2B1"
                with urllib.request.urlopen(url, timeout=2):
                    pass
            except OSError as exc:
                return 400, {"status": "ERROR", "message": f"Post {self.prometheus_url}: {exc}"}
            return 200, {"status": "OK", "message": "Successfully queried the Prometheus API."}
        if path.startswith("/api/dashboards/uid/"):
            uid = path.rsplit("/", 1)[1]
            if uid not in self.dashboards:
                return 404, {"message": "Dashboard not found"}
            meta = {"provisioned": True, "folderUid": "celery", "slug": uid}
            return 200, {"dashboard": self.dashboards[uid], "meta": meta}
        if path == "/api/search":
            query = urllib.parse.parse_qs(parts.query).get("query", [""])[0].lower()
            return 200, [
                {"uid": uid, "title": d.get("title", ""), "type": "dash-db", "url": f"/d/{uid}"}
                for uid, d in self.dashboards.items()
                if query in d.get("title", "").lower()
            ]
        return 404, {"message": "Not found"}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def shipped_dashboards() -> dict[str, dict[str, Any]]:
    return {board["uid"]: board for board in promql.dashboards().values()}


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit non-interlaced PNG (what Chromium
    writes), decoded with zlib alone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks += body
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(chunks)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line) if channels == 3 else bytes(
            b for j in range(width) for b in line[j * 4 : j * 4 + 3]
        ))  # fmt: skip
        previous = line
    return width, height, rows
