"""The real exporter against real brokers and real prefork workers, read over HTTP."""

from __future__ import annotations

import functools
import operator
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.support.broker_checks import RETRYING, assert_back_in_one_line, assert_one_outage_line
from tests.support.exporter_process import ExporterFactory
from tests.support.producer import producer, send
from tests.support.servers import RedisServer, WorkerFactory, free_port, wait_for

pytestmark = pytest.mark.integration
HOST = socket.gethostname()


def test_task_outcomes_are_counted_exactly(
    broker_url: str,
    worker_factory: WorkerFactory,
    exporter_factory: ExporterFactory,
    unique_name: str,
) -> None:
    main_queue, routed_queue = f"main-{unique_name}", f"routed-{unique_name}"
    exporter = exporter_factory(broker_url, "--inspect-interval", "0")
    worker = worker_factory(broker_url, queues=(main_queue, routed_queue), concurrency=2)
    worker_labels = {"hostname": HOST, "worker": worker.hostname}
    exporter.wait_value("celery_worker_up", worker_labels, lambda v: v == 1)

    def labels(name: str, queue: str = main_queue) -> dict[str, str]:
        return {"name": name, "hostname": HOST, "queue_name": queue}

    app = producer(broker_url)
    # Celery publishes a task before it sends the task-sent event, so on a loaded
    # machine a worker's task-received can reach the exporter first; the first task of a name
    # is then labelled from what was known (docs/metrics.md, queue_name). Warm up every name
    # once, then measure the steady state as differences from a scrape taken after the warm-up.
    warm_up = [("workload.add", main_queue), ("workload.fail", main_queue)]
    warm_up += [("workload.retry_once", main_queue), ("workload.routed", routed_queue)]
    for name, queue in warm_up:
        send(app, name, queue, args=(2, 3) if name == "workload.add" else ())
    finished = {"task-succeeded": 3, "task-failed": 1}
    for event, expected in finished.items():
        exporter.wait_value(
            "celery_exporter_events_total",
            {"event": event},
            functools.partial(operator.eq, expected),
            timeout=30,
        )
    before = exporter.scrape()

    send(app, "workload.add", main_queue, times=5, args=(2, 3))
    send(app, "workload.fail", main_queue, times=2)
    send(app, "workload.retry_once", main_queue)
    send(app, "workload.routed", routed_queue)

    def delta(name: str, /, **label_set: str) -> float:
        key = (name, frozenset(label_set.items()))
        return exporter.scrape().get(key, 0.0) - before.get(key, 0.0)

    done = [
        ("celery_task_succeeded_total", labels("workload.add"), 5),
        ("celery_task_succeeded_total", labels("workload.retry_once"), 1),
        ("celery_task_succeeded_total", labels("workload.routed", routed_queue), 1),
        ("celery_task_failed_total", {**labels("workload.fail"), "exception": "ValueError"}, 2),
    ]
    for name, label_set, expected in done:
        wait_for(
            lambda: delta(name, **label_set) == expected,  # noqa: B023 (used at once)
            30,
            f"{name}{label_set} to grow by {expected}",
        )

    samples = exporter.scrape()

    def value(name: str, /, **label_set: str) -> float | None:
        return samples.get((name, frozenset(label_set.items())))

    def grew(name: str, /, **label_set: str) -> float:
        key = (name, frozenset(label_set.items()))
        return samples.get(key, 0.0) - before.get(key, 0.0)

    add = labels("workload.add")
    for kind in ("sent", "received", "started", "succeeded"):
        assert grew(f"celery_task_{kind}_total", **add) == 5, kind
    assert (
        value("celery_task_failed_total", **labels("workload.add"), exception="ValueError") is None
    )
    assert grew("celery_task_runtime_count", **add) == 5
    assert grew("celery_task_queue_wait_time_count", **add) == 5
    retry = labels("workload.retry_once")
    assert grew("celery_task_retried_total", **retry) == 1
    assert grew("celery_task_started_total", **retry) == 2
    assert grew("celery_task_sent_total", **retry) == 2  # the retry is sent again
    assert grew("celery_task_failed_runtime_seconds_count", **labels("workload.fail")) == 2
    assert value("celery_task_succeeded_total", **labels("workload.routed")) is None
    assert grew("celery_exporter_events_total", event="task-succeeded") == 7
    assert grew("celery_exporter_events_total", event="task-failed") == 2
    assert value("celery_worker_task_events_enabled", **worker_labels) == 1
    assert not [k for k in samples if k[0] == "celery_exporter_event_errors_total"]


def test_queue_name_comes_from_the_workers_queue_without_sent_events(
    broker_url: str,
    worker_factory: WorkerFactory,
    exporter_factory: ExporterFactory,
    unique_name: str,
) -> None:
    queue = f"only-{unique_name}"
    exporter = exporter_factory(broker_url, "--inspect-interval", "0.5")
    worker_factory(broker_url, queues=(queue,))
    exporter.wait_value("celery_active_worker_count", {"queue_name": queue}, lambda v: v == 1)
    send(producer(broker_url, sent_events=False), "workload.add", queue, times=3, args=(1, 1))
    succeeded = {"name": "workload.add", "hostname": HOST, "queue_name": queue}
    exporter.wait_value("celery_task_succeeded_total", succeeded, lambda v: v == 3, timeout=30)
    samples = exporter.scrape()
    assert not [k for k in samples if ("queue_name", "celery") in k[1]]
    assert ("celery_task_sent_total", frozenset(succeeded.items())) not in samples


def test_sigkilled_worker_reads_down_and_its_neighbour_stays_up(
    redis_url: str, worker_factory: WorkerFactory, exporter_factory: ExporterFactory
) -> None:
    exporter = exporter_factory(redis_url, "--worker-timeout", "3", "--inspect-interval", "0")
    doomed = worker_factory(redis_url, hostname=f"doomed@{HOST}")
    neighbour = worker_factory(redis_url, hostname=f"neighbour@{HOST}")
    doomed_labels = {"hostname": HOST, "worker": doomed.hostname}
    neighbour_labels = {"hostname": HOST, "worker": neighbour.hostname}
    for label_set in (doomed_labels, neighbour_labels):
        exporter.wait_value("celery_worker_up", label_set, lambda v: v == 1)
    doomed.kill()  # SIGKILL: no worker-offline event
    exporter.wait_value("celery_worker_up", doomed_labels, lambda v: v == 0, timeout=15)
    assert exporter.value("celery_worker_up", **neighbour_labels) == 1
    assert exporter.value("celery_worker_tasks_active", **doomed_labels) == 0


def test_broker_password_never_appears_in_logs_pages_or_metrics(
    tmp_path: Path, exporter_factory: ExporterFactory
) -> None:
    server = RedisServer.start(tmp_path / "redis-auth")
    try:
        client = redis.Redis(port=server.port)
        client.config_set("requirepass", "Sup3rS3cret")
        client.close()
        good = exporter_factory(f"redis://:Sup3rS3cret@127.0.0.1:{server.port}/0")
        good.wait_value("celery_exporter_broker_up", {}, lambda v: v == 1)
        wrong = exporter_factory(f"redis://:WrongPassw0rd@127.0.0.1:{server.port}/0")
        # broker_up reads 0 before the first attempt too: wait for the failure itself.
        wait_for(lambda: "cannot connect to broker" in wrong.log, 30, "the auth failure")
        assert wrong.value("celery_exporter_broker_up") == 0
        for exporter, secret in ((good, "Sup3rS3cret"), (wrong, "WrongPassw0rd")):
            pages = [exporter.get(path)[1] for path in ("/", "/metrics", "/readyz", "/health")]
            assert secret.encode() not in b"".join(pages)
            assert b":***@" in pages[0]
            exporter.stop()
            assert secret not in exporter.log
        assert "cannot connect to broker" in wrong.log
    finally:
        server.stop()


def test_broker_down_at_start_is_not_fatal_and_is_reported_once(
    tmp_path: Path, exporter_factory: ExporterFactory
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    exporter = exporter_factory(url, *RETRYING)
    assert exporter.get("/readyz")[0] == 503
    assert exporter.get("/healthz")[0] == 200
    # Events, queue poll and inspect all retry; one line says why, naming the broker.
    assert_one_outage_line(
        exporter,
        [f"cannot connect to broker {url}: connection refused: no broker listens at that host"],
        [],
    )
    server = RedisServer.start(tmp_path / "late-redis", port=port)
    try:
        assert_back_in_one_line(exporter, url)
        assert exporter.get("/readyz")[0] == 200
        assert exporter.log.count("connected to broker") == 1
    finally:
        server.stop()


def test_port_in_use_is_one_line_and_a_non_zero_exit(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "celery_exporter",
                "--broker-url",
                redis_url,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            capture_output=True,
            check=False,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"celery-exporter: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in result.stderr
