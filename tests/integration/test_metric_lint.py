"""`promtool check metrics` on a real scrape, and on the committed golden exposition.

A real Redis, a real prefork worker running tasks of every outcome (succeeded, failed, retried,
rejected, revoked) and the real exporter with inspect on, so the scrape has every family the
exporter emits on Redis, prometheus_client's process_* and python_* among them. The text format
is what promtool reads; the OpenMetrics page is checked against the golden file instead
(tests/unit/exposition/test_golden_exposition.py).

One documented exception, not hidden: the drop-in gauges celery_active_consumer_count,
celery_active_worker_count and celery_active_process_count keep the names of
danihodovic/celery-exporter (shared/compat.md; `compat=True` in exposition/catalogue.py) so its
dashboards and alerts keep working, and promtool's lint says a gauge should not end in `_count`.
Renaming them would break every user's queries, so the test expects exactly that one lint line
for each of them and nothing else (promtool then exits 3, its code for lint problems), and then
checks that the page without those three families lints clean with exit 0. A new lint problem,
or one of these names gone or renamed, fails the test.
"""

from __future__ import annotations

import functools
import operator
import shutil
import socket
import subprocess

import pytest

from celery_exporter.exposition.catalogue import CATALOGUE, DEFAULT_PREFIX
from tests.support.exporter_process import ExporterFactory
from tests.support.producer import producer, send
from tests.support.servers import REPO_ROOT, WorkerFactory

pytestmark = pytest.mark.integration
HOST = socket.gethostname()
GOLDEN_TEXT = REPO_ROOT / "tests" / "unit" / "exposition" / "golden" / "exposition.txt"

# The drop-in gauges whose names end in _count: the one exception to promtool's lint.
DROP_IN_COUNT_GAUGES = tuple(
    sorted(
        spec.exposed_name(DEFAULT_PREFIX)
        for spec in CATALOGUE
        if spec.compat and spec.kind == "gauge" and spec.name.endswith("_count")
    )
)
COUNT_SUFFIX_LINT = '{} non-histogram and non-summary metrics should not have "_count" suffix'
PROMTOOL_LINT_EXIT = 3  # promtool check metrics: the page parsed, but has lint problems


def promtool_check_metrics(page: str) -> tuple[int, list[str]]:
    """promtool's exit code and its output lines, for `page` on stdin."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not on PATH (Debian package prometheus)")
    result = subprocess.run(
        [binary, "check", "metrics"], input=page, capture_output=True, text=True, check=False
    )
    return result.returncode, (result.stdout + result.stderr).splitlines()


def without_families(page: str, names: tuple[str, ...]) -> str:
    """The text page with the families `names` (gauges: HELP, TYPE and samples) left out."""

    def family_of(line: str) -> str:
        if line.startswith(("# HELP ", "# TYPE ")):
            return line.split(" ")[2]
        return line.split("{", 1)[0].split(" ", 1)[0]

    return "".join(line for line in page.splitlines(True) if family_of(line) not in names)


def assert_only_the_documented_exception(page: str) -> None:
    for name in DROP_IN_COUNT_GAUGES:  # the exception must be real in this page
        assert f"# TYPE {name} gauge\n" in page, name
    code, lines = promtool_check_metrics(page)
    assert sorted(lines) == [COUNT_SUFFIX_LINT.format(n) for n in DROP_IN_COUNT_GAUGES], lines
    assert code == PROMTOOL_LINT_EXIT, (code, lines)
    code, lines = promtool_check_metrics(without_families(page, DROP_IN_COUNT_GAUGES))
    assert (code, lines) == (0, [])


def test_the_exception_is_the_three_drop_in_count_gauges() -> None:
    assert DROP_IN_COUNT_GAUGES == (
        "celery_active_consumer_count",
        "celery_active_process_count",
        "celery_active_worker_count",
    )


def test_promtool_lints_a_real_scrape_clean_but_for_the_drop_in_names(
    redis_url: str, worker_factory: WorkerFactory, exporter_factory: ExporterFactory
) -> None:
    exporter = exporter_factory(redis_url, "--inspect-interval", "1")
    worker = worker_factory(redis_url, concurrency=2)
    app = producer(redis_url)
    send(app, "workload.add", "celery", times=3, args=(1, 2))
    send(app, "workload.fail", "celery", times=2)
    send(app, "workload.retry_once", "celery")
    send(app, "workload.reject", "celery")
    # Held for its countdown, revoked meanwhile: the worker announces task-revoked either when
    # it gets the task (if the revoke came first) or when the countdown ends.
    revoked = app.send_task("workload.add", args=(1, 1), queue="celery", countdown=2)
    app.control.revoke(revoked.id)
    for event, count in (
        ("task-succeeded", 4),  # three adds, and retry_once's second run
        # Celery 5.7 reports a Reject(requeue=False) as failed too (task-failed, then
        # task-rejected; celery/worker/request.py on_failure), so the reject counts here.
        ("task-failed", 3),
        ("task-retried", 1),
        ("task-rejected", 1),
        ("task-revoked", 1),
    ):
        exporter.wait_value(
            "celery_exporter_events_total",
            {"event": event},
            functools.partial(operator.eq, count),
            timeout=45,
        )
    worker_labels = {"hostname": HOST, "worker": worker.hostname}
    exporter.wait_value("celery_worker_concurrency", worker_labels, lambda v: v == 2)
    assert worker.is_running()

    status, body = exporter.get("/metrics")  # no Accept header: the text format
    assert status == 200
    page = body.decode()
    assert "# EOF" not in page
    for sample in (  # the check saw real series of every kind
        'celery_task_rejected_total{name="workload.reject",',
        'celery_task_revoked_total{name="workload.add",',
        'celery_task_failed_total{name="workload.fail",',
        "celery_task_runtime_bucket{",
        "celery_worker_cpu_seconds_total{",
        "process_cpu_seconds_total ",
        "python_gc_objects_collected_total{",
    ):
        assert sample in page, sample
    assert_only_the_documented_exception(page)


def test_promtool_lints_the_golden_exposition_clean_but_for_the_drop_in_names() -> None:
    """The golden page has families a short real run may not (a refused queue, an overflow):
    they lint the same way."""
    assert_only_the_documented_exception(GOLDEN_TEXT.read_text(encoding="utf-8"))
