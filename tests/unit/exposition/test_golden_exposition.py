"""A whole scrape, compared line by line with a committed golden exposition (both formats).

A fixed script drives the real parts on one fake clock: a Tracker fed scripted events (every task
state: sent, received, started, succeeded, failed with its exception, retried, rejected, revoked;
a task waiting in a queue, one prefetched, one scheduled for a later ETA; a worker that timed out
and one that said goodbye, both before the purge; task names past a small --max-task-names, so
`__overflow__` appears; a task-started the exporter never got; a message that is no event, and an
event of a custom type) and a QueuePoller fed a scripted broker (queue lengths, one queue the
broker refuses to this user, an inspect round). The page is what `/metrics` serves: the real
MetricsApp, called as a WSGI application, with the collectors app.build_collectors() gives the
exporter, so the same families, the same writer and the same Accept negotiation (OpenMetrics'
`# EOF` included).

Scope: the exporter's own collectors only. prometheus_client's process_*, python_gc_* and
python_info come from the exporter's standard registry, which reads this process and so differs
from run to run; the page here is rendered with an empty standard registry, and those families
are not in the golden files.

Normalised before the comparison: the three label values of celery_exporter_build_info (the
exporter's, Celery's and Python's versions) become `<version>`, `<celery_version>` and
`<python_version>`; the test first checks that the page carried exactly the running versions.
Nothing else needs it: every time comes from the fake clock.

When the golden files differ, the failure shows a unified diff (the first differing lines). After
a deliberate change (a new metric, a changed HELP or label), regenerate both files with

    CE_UPDATE_GOLDEN=1 pytest tests/unit/exposition/test_golden_exposition.py

and review the diff of tests/unit/exposition/golden/ before committing (docs/development.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import celery
import pytest
from celery import Celery
from prometheus_client.registry import CollectorRegistry

from celery_exporter import __version__
from celery_exporter.app import build_collectors
from celery_exporter.config import Config
from celery_exporter.exposition import catalogue
from celery_exporter.exposition.health import ExporterHealth
from celery_exporter.poll.inspection import WorkerStats
from celery_exporter.poll.poller import QueuePoller
from celery_exporter.state.tracker import Tracker
from celery_exporter.web.server import MetricsApp
from celery_exporter.web.web_config import load_web_config
from tests.support.eventscript import (
    FakeClock,
    event,
    failed,
    heartbeat,
    received,
    retried,
    sent,
    started,
    succeeded,
)
from tests.support.scripted_poll import ScriptedInspector, ScriptedProbe
from tests.support.servers import REPO_ROOT

GOLDEN = Path(__file__).parent / "golden"
UPDATE_ENV = "CE_UPDATE_GOLDEN"
UPDATE_COMMAND = f"{UPDATE_ENV}=1 pytest tests/unit/exposition/test_golden_exposition.py"
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0; charset=utf-8"
FORMATS = {  # golden file -> (Accept header, the Content-Type /metrics must answer with)
    "exposition.txt": ("text/plain", "text/plain; version=0.0.4; charset=utf-8"),
    "exposition.openmetrics.txt": (
        OPENMETRICS_ACCEPT,
        "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
    ),
}
DIFF_LINES = 60  # of the unified diff shown in a failure

T0 = 1_700_000_000.0
W1, W2, W3 = "celery@worker-1", "celery@worker-2", "celery@worker-3"
MAX_TASK_NAMES = 8  # the eight names below fit; the two burst names overflow


@dataclass
class World:
    """The parts a running exporter wires together (app.Exporter), on one fake clock."""

    clock: FakeClock
    tracker: Tracker
    poller: QueuePoller
    probe: ScriptedProbe
    inspector: ScriptedInspector
    app: MetricsApp

    def at(self, seconds: float, *messages: Any) -> None:
        """Move the clock to T0 + seconds and deliver `messages`, one message each."""
        self.clock.now = T0 + seconds
        for message in messages:
            self.tracker.record_message(message)


def build_world() -> World:
    clock = FakeClock(T0)
    config = Config(
        broker_url="redis://localhost:6379/0",
        queues=("celery", "reports", "secret"),
        max_task_names=MAX_TASK_NAMES,
    )
    probe = ScriptedProbe({"celery": 3, "reports": 1})
    inspector = ScriptedInspector(
        {
            W1: WorkerStats(W1, ("celery", "reports"), 4, 4, 12.5, 1.25, 64 * 1024 * 1024),
            W2: WorkerStats(W2, ("celery",), 2, 2, 3.0, 0.5, 32 * 1024 * 1024),
            W3: WorkerStats(W3, ("celery",), 2, 2, 1.0, 0.25, 32 * 1024 * 1024),
        }
    )
    poller = QueuePoller(
        config, Celery(set_as_current=False), clock, probe=probe, inspector=inspector
    )
    tracker = Tracker(
        config,
        clock=clock,
        worker_queues=poller.worker_queues,
        broker_evidence=poller.queue_evidence,
    )
    health = ExporterHealth(broker_up=True, reconnects=1)
    app = MetricsApp(
        # The standard registry (process_*, python_*) is out of scope: see the docstring.
        registry=CollectorRegistry(auto_describe=False),
        collectors=build_collectors(config, tracker, health, poller),
        health=health,
        web_config=load_web_config(None),
        broker_url_redacted=config.redacted_broker_url,
    )
    return World(clock, tracker, poller, probe, inspector, app)


def task(uuid: str, name: str, at: float, queue: str = "celery", worker: str = W1) -> list[Any]:
    """A task's task-sent and task-received."""
    return [sent(uuid, name, at, queue=queue), received(uuid, name, at + 0.25, hostname=worker)]


def run_script(world: World) -> None:
    w = world
    w.poller.inspect_workers()
    w.poller.poll_queues()
    for node in (W1, W2, W3):
        w.at(1, heartbeat(node, T0 + 1, active=0, processed=0, kind="worker-online"))
    # Every task state, on worker-1.
    w.at(2, *task("t-add", "tasks.add", T0 + 2))
    w.at(3, started("t-add", T0 + 2.5), succeeded("t-add", T0 + 2.75, runtime=0.25))
    w.at(4, *task("t-fail", "tasks.fail", T0 + 3), started("t-fail", T0 + 3.5))
    w.at(5, failed("t-fail", T0 + 4.5, exception="ValueError('boom')"))
    w.at(6, *task("t-retry", "tasks.retry", T0 + 5), started("t-retry", T0 + 5.5))
    w.at(6.5, retried("t-retry", T0 + 6))
    w.at(7, *task("t-reject", "tasks.reject", T0 + 6.5))
    w.at(7.5, event("task-rejected", W1, T0 + 7, uuid="t-reject", requeue=False))
    w.at(8, *task("t-revoke", "tasks.revoke", T0 + 7.5))
    w.at(8.5, event("task-revoked", W1, T0 + 8, uuid="t-revoke", terminated=False, expired=False))
    # Still waiting in its queue; taken but not started; held for a later ETA.
    w.at(9, sent("t-report", "tasks.report", T0 + 9, queue="reports"))
    w.at(10, *task("t-prefetch", "tasks.prefetch", T0 + 9.5))
    eta = datetime.fromtimestamp(T0 + 1000, timezone.utc).isoformat()
    later = task("t-later", "tasks.later", T0 + 10)
    later[0]["eta"] = later[1]["eta"] = eta
    w.at(11, *later)
    # Past --max-task-names: folded into __overflow__.
    for i, name in enumerate(("tasks.burst_1", "tasks.burst_2")):
        uuid, at = f"t-burst-{i}", T0 + 12 + i
        w.at(12 + i, *task(uuid, name, at), started(uuid, at + 0.5))
        w.at(12.75 + i, succeeded(uuid, at + 0.75, runtime=0.5))
    # Worker-2 and worker-3 each run one task; worker-2 then goes silent (it will time out) and
    # worker-3 says goodbye. Neither is purged by the end of the script.
    for node, host, runtime in ((W2, "worker-2", 1.5), (W3, "worker-3", 3.0)):
        uuid = f"t-{host}"
        w.at(15, *task(uuid, "tasks.add", T0 + 14.5, worker=node), started(uuid, T0 + 15, node))
        w.at(16, succeeded(uuid, T0 + 15 + runtime, runtime=runtime, hostname=node))
    w.at(20, heartbeat(W2, T0 + 20, active=0, processed=1))
    w.at(20, heartbeat(W3, T0 + 20, active=0, processed=1))
    w.at(30, event("worker-offline", W3, T0 + 30, processed=1, active=0, freq=2.0))
    # What the exporter cannot use: a message that is no event, and a custom event type.
    w.at(31, "not an event", event("app-custom", W1, T0 + 31))
    # Worker-1's heartbeats count six started tasks; only five task-started events came.
    for second in range(20, 100, 2):
        w.at(second, heartbeat(W1, T0 + second, active=1, processed=6))
    # The last inspect round no longer hears from the departed workers, and the broker now
    # refuses one queue to this user: the last poll fails in part (the first one succeeded).
    w.inspector.workers = {W1: w.inspector.workers[W1]}
    w.probe.refused = {"secret"}
    w.at(99)
    w.poller.inspect_workers()
    w.poller.poll_queues()
    w.at(100)
    w.tracker.expire()  # the event thread's housekeeping between messages


def scrape(accept: str, expected_type: str) -> str:
    """One scripted world, a few requests, then the page /metrics serves for `accept`."""
    world = build_world()
    run_script(world)
    for path in ("/healthz", "/", "/no-such-page"):
        wsgi_get(world.app, path)
    status, headers, body = wsgi_get(world.app, "/metrics", accept)
    assert status == "200 OK"
    assert headers["Content-Type"] == expected_type
    assert "Content-Encoding" not in headers
    return body.decode("utf-8")


def wsgi_get(app: MetricsApp, path: str, accept: str = "") -> tuple[str, dict[str, str], bytes]:
    replies: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        replies.append((status, headers))

    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "HTTP_ACCEPT": accept}
    body = b"".join(app(environ, start_response))
    status, headers = replies[0]
    return status, dict(headers), body


def normalise(page: str) -> str:
    """The page with the build info's version labels replaced by placeholders."""
    real = (
        f'version="{__version__}",celery_version="{celery.__version__}",'
        f'python_version="{platform.python_version()}"'
    )
    placeholder = (
        'version="<version>",celery_version="<celery_version>",python_version="<python_version>"'
    )
    line = f"celery_exporter_build_info{{{real}}} 1.0\n"
    assert page.count(line) == 1, "the build info line does not carry the running versions"
    return page.replace(line, f"celery_exporter_build_info{{{placeholder}}} 1.0\n")


def golden_mismatch(name: str, expected: str, actual: str) -> str | None:
    """None if equal; else a message with the first differing lines and the update command."""
    if expected == actual:
        return None
    old, new = expected.splitlines(keepends=True), actual.splitlines(keepends=True)
    first = next(
        (i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b),
        min(len(old), len(new)),
    )
    diff = list(difflib.unified_diff(old, new, f"golden/{name}", "this scrape", n=2, lineterm="\n"))
    shown = "".join(diff[:DIFF_LINES])
    more = f"... {len(diff) - DIFF_LINES} more diff lines\n" if len(diff) > DIFF_LINES else ""
    return (
        f"scrape differs from golden/{name}, first at line {first + 1} "
        f"({len(old)} golden lines, {len(new)} scraped):\n{shown}{more}"
        f"If the change is intended, regenerate the golden files and review their diff:\n"
        f"    {UPDATE_COMMAND}"
    )


def pages() -> dict[str, str]:
    return {
        name: normalise(scrape(accept, content_type))
        for name, (accept, content_type) in FORMATS.items()
    }


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_scrape_matches_the_golden_exposition(name: str) -> None:
    accept, content_type = FORMATS[name]
    page = normalise(scrape(accept, content_type))
    path = GOLDEN / name
    if os.environ.get(UPDATE_ENV) == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(page, encoding="utf-8")
    if not path.exists():
        pytest.fail(f"golden/{name} is missing; create it with:\n    {UPDATE_COMMAND}")
    problem = golden_mismatch(name, path.read_text(encoding="utf-8"), page)
    if problem:
        pytest.fail(problem, pytrace=False)


def test_the_script_reaches_every_case_the_golden_is_for() -> None:
    """The golden file is only worth as much as the script: these are the cases it must show."""
    text = (GOLDEN / "exposition.txt").read_text(encoding="utf-8")
    task_labels = 'name="tasks.{}",hostname="worker-1",queue_name="celery"'
    sent_labels = 'name="tasks.report",hostname="web-1",queue_name="reports"'
    assert f"celery_task_sent_total{{{sent_labels}}} 1.0\n" in text
    for kind, name in (
        ("received", "add"),
        ("started", "add"),
        ("succeeded", "add"),
        ("retried", "retry"),
        ("rejected", "reject"),
        ("revoked", "revoke"),
    ):
        assert f"celery_task_{kind}_total{{{task_labels.format(name)}}} 1.0\n" in text, kind
    assert (
        'celery_task_failed_total{name="tasks.fail",hostname="worker-1",exception="ValueError",'
        'queue_name="celery"} 1.0\n' in text
    )
    # The timed-out worker reads down, and its gauges 0; the departed one keeps its counter only.
    assert 'celery_worker_up{hostname="worker-2",worker="celery@worker-2"} 0.0\n' in text
    assert 'celery_worker_tasks_active{hostname="worker-2",worker="celery@worker-2"} 0.0\n' in text
    departed = 'hostname="worker-3",worker="celery@worker-3"'
    assert f"celery_worker_tasks_processed_total{{{departed}}} 1.0\n" in text
    assert f"celery_worker_up{{{departed}}}" not in text
    assert 'celery_task_succeeded_total{name="tasks.add",hostname="worker-2"' in text
    # The cap: two names folded, their events counted.
    overflow = 'name="__overflow__",hostname="worker-1",queue_name="celery"'
    assert f"celery_task_succeeded_total{{{overflow}}} 2.0\n" in text
    assert 'celery_exporter_cardinality_overflow_total{label="task_name"} ' in text
    assert 'celery_exporter_cardinality_overflow_total{label="task_name"} 0.0' not in text
    # The refused queue: the poll failed, and the queue has no length (never a false 0).
    assert "celery_exporter_queue_poll_success 0.0\n" in text
    assert 'celery_queue_length{queue_name="celery"} 3.0\n' in text
    assert 'celery_queue_length{queue_name="secret"}' not in text
    # Held, waiting and missed tasks.
    held = 'hostname="worker-1",worker="celery@worker-1"'
    assert f"celery_worker_tasks_prefetched{{{held}}} 1.0\n" in text
    assert f"celery_worker_tasks_scheduled{{{held}}} 1.0\n" in text
    assert f"celery_exporter_task_events_missed_total{{{held}}} 1.0\n" in text
    assert 'celery_queue_oldest_task_age_seconds{queue_name="reports"} 91.0\n' in text
    assert 'celery_exporter_event_errors_total{reason="not_a_dict"} 1.0\n' in text
    assert 'celery_exporter_events_total{event="other"} 1.0\n' in text
    openmetrics = (GOLDEN / "exposition.openmetrics.txt").read_text(encoding="utf-8")
    assert openmetrics.endswith("\n# EOF\n") and openmetrics.count("# EOF") == 1


def test_a_changed_help_or_label_fails_with_a_readable_diff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The comparison bites: a HELP text or a label name changed in the catalogue shows up."""
    golden = (GOLDEN / "exposition.txt").read_text(encoding="utf-8")
    accept, content_type = FORMATS["exposition.txt"]
    spec = catalogue.SPECS["worker_up"]
    for change in ({"help": "Changed."}, {"labels": ("host", "worker")}):
        monkeypatch.setitem(catalogue.SPECS, "worker_up", dataclasses.replace(spec, **change))
        page = normalise(scrape(accept, content_type))
        problem = golden_mismatch("exposition.txt", golden, page)
        assert problem is not None, change
        assert "-# HELP celery_worker_up " in problem or '-celery_worker_up{hostname="' in problem
        assert UPDATE_COMMAND in problem
    monkeypatch.undo()
    page = normalise(scrape(accept, content_type))
    assert golden_mismatch("exposition.txt", golden, page) is None


def test_the_page_is_the_same_under_other_hash_seeds() -> None:
    """The order is the exporter's own and must not depend on set or dict hashing: the page of a
    fresh interpreter under two other hash seeds is the golden file, byte for byte."""
    code = (
        "from tests.unit.exposition.test_golden_exposition import pages; "
        "import sys; sys.stdout.write(pages()['exposition.txt'])"
    )
    golden = (GOLDEN / "exposition.txt").read_text(encoding="utf-8")
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env.pop(UPDATE_ENV, None)
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        assert golden_mismatch("exposition.txt", golden, out) is None, f"PYTHONHASHSEED={seed}"
