"""`celery-exporter report` against a real Prometheus scraping real exporters during a known
workload, shared by every test here (module scope, ~40 s to build).

The workload runs in two phases with both exporters of an HA pair restarted in between, so the
exact totals need counter resets handled (and a restart whose new counts exceed the old, found
from process_start_time_seconds), series born inside the range, and the pair deduplicated.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
from celery import Celery

from tests.support.exporter_process import ExporterProcess
from tests.support.prometheus import Prometheus
from tests.support.servers import REPO_ROOT, CeleryWorker, RedisServer, wait_for
from tests.support.stack import png_pixels, prometheus_config, run_tool

pytestmark = [pytest.mark.integration, pytest.mark.deploy]

SCHEMA = REPO_ROOT / "docs" / "report.schema.json"
BACKLOG_QUEUE = "nobody"
# (adds, fails, retry_once) per phase: successes = adds + retries, each retry_once retries once.
PHASES = ((12, 6, 3), (20, 5, 2))
SUCCEEDED = sum(a + r for a, _, r in PHASES)  # 37; phase 2's 22 exceed phase 1's 15
FAILED = sum(f for _, f, _ in PHASES)  # 11
RETRIED = sum(r for _, _, r in PHASES)  # 5
BACKLOG = 120


@dataclass
class Workload:
    prometheus: Prometheus
    start: float
    end: float
    exporters: list[ExporterProcess]


def _send(app: Celery, name: str, times: int, queue: str = "celery") -> None:
    args = (1, 2) if name == "workload.add" else ()
    with app.producer_or_acquire() as publisher:
        for _ in range(times):
            app.send_task(name, args=args, queue=queue, producer=publisher)


def _scraped(prometheus: Prometheus, ports: list[int], expected: dict[str, int]) -> bool:
    """Prometheus holds, for every exporter, the expected value of each counter."""
    for name, value in expected.items():
        got = {
            s["metric"]["instance"]: float(s["value"][1])
            for s in prometheus.query(f"sum by (instance) ({name})")
        }
        if any(got.get(f"127.0.0.1:{p}") != value for p in ports):
            return False
    return True


def _restart(exporter: ExporterProcess, prometheus: Prometheus, worker: str) -> None:
    exporter.stop()
    exporter.start()
    # Subscribed again once a heartbeat came through; scraped again once Prometheus has it.
    exporter.wait_value("celery_worker_up", {"hostname": worker.split("@")[1], "worker": worker},
                        lambda v: v == 1)  # fmt: skip
    instance = f"127.0.0.1:{exporter.port}"
    wait_for(
        lambda: (
            bool(prometheus.query(f'celery_worker_up{{instance="{instance}"}} == 1'))
            and not prometheus.query(f'celery_task_succeeded_total{{instance="{instance}"}} > 0')
        ),
        20.0,
        "Prometheus to scrape the restarted exporter",
        step=0.2,
    )


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    tmp = tmp_path_factory.mktemp("report")
    redis = RedisServer.start(tmp / "redis")
    worker = CeleryWorker(
        redis.url, tmp / "workers", concurrency=2, hostname=f"w1@{socket.gethostname()}"
    )
    flags = ["--queues", f"celery,{BACKLOG_QUEUE}", "--queue-poll-interval", "0.5",
             "--inspect-interval", "2", "--inspect-timeout", "1"]  # fmt: skip
    exporters = [ExporterProcess(redis.url, tmp / "exporters", flags) for _ in range(2)]
    prometheus: Prometheus | None = None
    app = Celery("producer", broker=redis.url, set_as_current=False)
    app.conf.task_send_sent_event = True
    try:
        worker.start()
        for exporter in exporters:
            exporter.start()
        start = time.time() - 1
        ports = [e.port for e in exporters]
        prometheus = Prometheus(prometheus_config(tmp / "prometheus", ports), tmp / "prometheus")
        prometheus.wait_ready()
        worker.wait_ready()
        expected = {"celery_task_succeeded_total": 0, "celery_task_failed_total": 0,
                    "celery_task_retried_total": 0}  # fmt: skip
        for phase, (adds, fails, retries) in enumerate(PHASES):
            if phase:
                for exporter in exporters:
                    _restart(exporter, prometheus, worker.hostname)
                expected = dict.fromkeys(expected, 0)
            _send(app, "workload.add", adds)
            _send(app, "workload.fail", fails)
            _send(app, "workload.retry_once", retries)
            if phase == 0:
                _send(app, "workload.add", BACKLOG, queue=BACKLOG_QUEUE)
            expected["celery_task_succeeded_total"] += adds + retries
            expected["celery_task_failed_total"] += fails
            expected["celery_task_retried_total"] += retries
            try:
                wait_for(functools.partial(_scraped, prometheus, ports, dict(expected)), 60.0,
                         f"phase {phase} in Prometheus", step=0.5)  # fmt: skip
            except Exception as exc:
                seen = {n: prometheus.query(f"sum by (instance) ({n})") for n in expected}
                raise AssertionError(f"{exc}: expected {expected}, Prometheus has {seen}") from None
        time.sleep(1.5)  # one more scrape after the last change, so charts end flat (not a wait)
        yield Workload(prometheus, start, time.time(), exporters)
    finally:
        app.close()
        if prometheus is not None:
            prometheus.stop()
        for exporter in exporters:
            exporter.stop()
        worker.stop()
        redis.stop()


def report(workload: Workload, *args: str) -> str:
    result = run_tool(
        "report", "--prometheus-url", workload.prometheus.url,
        "--start", f"{workload.start:.3f}", "--end", f"{workload.end:.3f}", *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not result.stderr
    return result.stdout


def test_json_totals_are_exact_and_the_json_validates(workload: Workload) -> None:
    data = json.loads(report(workload, "--format", "json"))
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    assert data["has_data"] is True
    totals = data["totals"]
    assert (totals["succeeded"], totals["failed"], totals["retried"]) == (
        SUCCEEDED, FAILED, RETRIED)  # fmt: skip
    tasks = {t["task"]: t for t in data["tasks"]}
    assert tasks["workload.fail"]["failed"] == FAILED
    assert tasks["workload.fail"]["exceptions"] == [{"exception": "ValueError", "count": FAILED}]
    assert tasks["workload.retry_once"]["retried"] == RETRIED
    assert data["failure_ratio"] == pytest.approx(FAILED / (SUCCEEDED + FAILED), abs=1e-6)
    queues = {q["queue"]: q for q in data["queues"]}
    assert queues[BACKLOG_QUEUE]["peak_backlog"] == BACKLOG
    assert data["top_failing_tasks"][0]["task"] == "workload.fail"
    assert data["runtime_seconds"]["average"] is not None
    assert data["throughput"]["peak_per_second"] > 0
    kinds = {(r["kind"], r["subject"]): r for r in data["recommendations"]}
    failing = kinds[("task_failures", "workload.fail")]
    assert failing["figure"]["value"] == 1.0
    assert failing["threshold"] == {"comparison": ">", "value": 0.1}
    assert "ValueError" in failing["message"]
    assert kinds[("backlog", BACKLOG_QUEUE)]["figure"]["value"] == BACKLOG
    assert ("retries", "all tasks") in kinds  # 5 retries for 48 finished: above 10%


def test_text_markdown_and_html_show_the_same_exact_totals(
    workload: Workload, tmp_path: Path
) -> None:
    text = report(workload, "--format", "text")
    markdown = report(workload, "--format", "markdown")
    page = report(workload, "--format", "html")
    (tmp_path / "report.txt").write_text(text)  # kept for a person to read
    (tmp_path / "report.md").write_text(markdown)
    for kind, value in (("succeeded", SUCCEEDED), ("failed", FAILED), ("retried", RETRIED)):
        assert re.search(rf"^{kind}\s+{value}$", text, re.M), text
        assert f"| {kind} | {value} |" in markdown, markdown
        assert f"<td>{kind}</td><td>{value}</td>" in page
    assert markdown.startswith("# Celery task report")
    assert "failure ratio" in text and "threshold 10%" in text


def test_filters_select_tasks_and_queues(workload: Workload) -> None:
    only_fail = json.loads(report(workload, "--format", "json", "--task", "workload.fail"))
    assert only_fail["totals"]["failed"] == FAILED
    assert only_fail["totals"]["succeeded"] == 0
    backlog = json.loads(report(workload, "--format", "json", "--queue", BACKLOG_QUEUE))
    assert backlog["totals"]["succeeded"] == 0
    assert [q["queue"] for q in backlog["queues"]] == [BACKLOG_QUEUE]
    nothing = json.loads(report(workload, "--format", "json", "--job", "no-such-job"))
    assert nothing["has_data"] is False
    assert "totals" not in nothing
    jsonschema.validate(nothing, json.loads(SCHEMA.read_text()))


def test_a_range_without_data_says_so(workload: Workload) -> None:
    before = ("--start", f"{workload.start - 7200:.0f}", "--end", f"{workload.start - 3600:.0f}")
    result = run_tool("report", "--prometheus-url", workload.prometheus.url, *before)
    assert result.returncode == 0, result.stderr
    assert "No data" in result.stdout
    assert "succeeded" not in result.stdout


def test_html_is_self_contained_and_chromium_draws_the_charts(
    workload: Workload, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    report(workload, "--format", "html", "--output", str(out))
    page = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched
    assert "<script" not in page and "@import" not in page
    for chart in ("throughput", "failures", "backlog", "runtime"):
        assert f'id="chart-{chart}"' in page

    chromium = shutil.which("chromium")
    if chromium is None:
        # A missing browser fails: CI installs it, and a skip would hide that.
        pytest.fail("chromium is not installed (Debian package chromium)")
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--hide-scrollbars",
         "--window-size=1024,1300", f"--screenshot={screenshot}", out.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    shutil.copy(screenshot, REPO_ROOT / ".pytest_cache" / "report-screenshot.png")
    width, _, rows = png_pixels(screenshot)

    def columns(colour: str) -> set[int]:
        """x positions of pixels of exactly `colour` (the core of a 2.5 px line is solid)."""
        target = bytes.fromhex(colour.lstrip("#"))
        found = set()
        for row in rows:
            at = row.find(target)
            while at != -1:
                if at % 3 == 0:
                    found.add(at // 3)
                at = row.find(target, at + 1)
        return found

    # Legend squares alone give <= 20 columns of a colour (checked by blanking the paths);
    # a drawn line covers more columns of the plot (runtime only where tasks finished).
    for name, colour in (("succeeded", "#2e7d32"), ("failed", "#c62828"),
                         ("retried", "#ef6c00"), ("average runtime", "#1565c0"),
                         ("p95 runtime", "#6a1b9a"), ("nobody backlog", "#ad1457")):  # fmt: skip
        drawn = columns(colour)
        assert len(drawn) > 30, f"{name} line not drawn: {len(drawn)} columns of {width}"
