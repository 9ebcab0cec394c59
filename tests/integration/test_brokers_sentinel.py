"""Redis Sentinel on real servers: a master, a replica and three sentinels, all with
passwords; events and queue lengths through `sentinel://` with `master_name` and
`sentinel_kwargs`, then a failover under load (the master stopped).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from tests.support.broker_checks import (
    ADD,
    FAST,
    PASSWORD,
    SENTINEL_PASSWORD,
    app_for,
    assert_secret_absent,
    counts_and_queue_lengths,
    flags,
    labels,
    worker_env,
)
from tests.support.brokers import MASTER_NAME, Sentinels
from tests.support.exporter_process import ExporterFactory, ExporterProcess, Samples
from tests.support.producer import send
from tests.support.servers import CeleryWorker, WorkerFactory, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[Sentinels]:
    setup = Sentinels.start(tmp_path / "sentinel", PASSWORD, SENTINEL_PASSWORD)
    try:
        yield setup
    finally:
        setup.stop()


def monotonic_samples(samples: Samples) -> Samples:
    return {
        key: value
        for key, value in samples.items()
        if key[0].startswith("celery_") and key[0].endswith(("_total", "_count", "_bucket"))
    }


def decreased(before: Samples, after: Samples) -> list[str]:
    """Counter samples lower after, or missing after. Strict for every worker too: one whose
    consumer restarts with the broker says goodbye (worker-offline) and hello again, and a
    departed worker keeps its counters (docs/metrics.md, Worker liveness): none may even blink."""
    return [
        f"{name}{dict(labels_)}: {value} -> {after.get((name, labels_))}"
        for (name, labels_), value in before.items()
        if after.get((name, labels_), -1.0) < value
    ]


def said_goodbye(log: str) -> frozenset[str]:
    return frozenset(re.findall(r"worker (\S+) went offline", log))


def gauge_absent_without_goodbye(samples: Samples, worker: str, log: str) -> list[str]:
    """The one tolerance left, for gauges: a worker's gauges go with its goodbye (so a clean
    shutdown pages nobody), and come back with its hello. Absent without a goodbye is wrong."""
    key = frozenset({"hostname": worker.split("@", 1)[1], "worker": worker}.items())
    return [
        name
        for name in ("celery_worker_up", "celery_worker_tasks_active")
        if (name, key) not in samples and worker not in said_goodbye(log)
    ]


def watch_failover(
    exporter: ExporterProcess, sentinels: Sentinels, worker: str, previous: Samples
) -> Samples:
    """Stop the master and scrape through the failover until the exporter is back on the new
    master: no counter sample may fall or go missing, at any scrape."""
    old_master, seen_down = sentinels.master_port(), False
    sentinels.master.stop()
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, f"no failover seen\n{exporter.log}"
        samples = exporter.scrape()
        current = monotonic_samples(samples)
        assert not decreased(previous, current)
        assert not gauge_absent_without_goodbye(samples, worker, exporter.log)
        previous = current
        up = samples[("celery_exporter_broker_up", frozenset())]
        seen_down = seen_down or up == 0
        if seen_down and up == 1 and sentinels.master_port() != old_master:
            return previous
        time.sleep(0.1)


def goodbye_keeps_counters(exporter: ExporterProcess, worker: CeleryWorker) -> None:
    """A goodbye the scrapes of a failover may miss (it lasts milliseconds there), made for
    certain: a warm shutdown. The worker's counters stay, no lower; its gauges go."""
    key = frozenset(
        {"hostname": worker.hostname.split("@", 1)[1], "worker": worker.hostname}.items()
    )
    line = f"worker {worker.hostname} went offline"
    before = monotonic_samples(exporter.scrape())
    goodbyes = exporter.log.count(line)
    worker.stop()
    wait_for(lambda: exporter.log.count(line) > goodbyes, 15, "the worker's goodbye")
    samples = exporter.scrape()
    assert not decreased(before, monotonic_samples(samples))
    assert ("celery_worker_tasks_processed_total", key) in samples
    assert ("celery_exporter_task_events_missed_total", key) in samples
    assert ("celery_worker_up", key) not in samples


class Load:
    """Sends tasks from a thread until stopped, ignoring the failures of a broker outage."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.sent = self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                self.app.send_task(ADD, args=(1, 1), queue="celery", retry=False)
                self.sent += 1
            except Exception:  # the master is gone for a while: that is the point
                self.failed += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_redis_sentinel_events_queue_lengths_and_a_failover_under_load(
    sentinels: Sentinels, worker_factory: WorkerFactory, exporter_factory: ExporterFactory
) -> None:
    url, options = sentinels.url, sentinels.transport_options
    assert options["master_name"] == MASTER_NAME
    worker = worker_factory(
        url, env=worker_env(options=options), extra_args=("--heartbeat-interval", "1")
    )
    exporter = exporter_factory(
        url,
        *FAST,
        "--broker-timeout",
        "1",
        "--queues",
        "idle",
        *flags("--broker-transport-option", options),
    )
    host = worker.hostname.split("@", 1)[1]
    counts_and_queue_lengths(url, exporter, worker.hostname, app_for(url, options=options))

    with Load(app_for(url, options=options)) as load:
        wait_for(lambda: load.sent > 20, 20, "the load to run")
        previous = monotonic_samples(exporter.scrape())
        worker_key = frozenset({"hostname": host, "worker": worker.hostname}.items())
        for counter in ("celery_worker_tasks_processed", "celery_exporter_task_events_missed"):
            assert (f"{counter}_total", worker_key) in previous, counter  # held to strictness
        previous = watch_failover(exporter, sentinels, worker.hostname, previous)
        sent_during = load.sent
        wait_for(lambda: load.sent > sent_during + 20, 30, "the load to reach the new master")
    assert sentinels.master_port() == sentinels.replica.port

    # The worker reconnects on its own schedule; its heartbeats say when it is back.
    beats = exporter.value("celery_exporter_events_total", event="worker-heartbeat") or 0
    exporter.wait_value(
        "celery_exporter_events_total",
        {"event": "worker-heartbeat"},
        lambda v: (v or 0) > beats + 2,
        timeout=60,
    )
    assert exporter.value("celery_worker_up", hostname=host, worker=worker.hostname) == 1
    # A task name only used after the failover: its counts must be exact.
    after_app = app_for(url, options=options)
    send(after_app, "workload.sleep", "celery", times=10, args=(0,))
    sleep_labels = labels("workload.sleep", host)
    exporter.wait_value("celery_task_succeeded_total", sleep_labels, lambda v: v == 10, timeout=60)
    samples = exporter.scrape()
    for kind in ("received", "started", "succeeded"):
        assert samples[(f"celery_task_{kind}_total", frozenset(sleep_labels.items()))] == 10
    sent_labels = labels("workload.sleep", host.split(".")[0])
    sent = [
        value
        for (name, labels_), value in samples.items()
        if name == "celery_task_sent_total" and dict(labels_)["name"] == "workload.sleep"
    ]
    assert sum(sent) == 10, sent_labels
    assert not decreased(previous, monotonic_samples(samples))
    # The poller follows the new master too: the replica had the three idle messages.
    exporter.wait_value("celery_queue_length", {"queue_name": "idle"}, lambda v: v == 3)

    goodbye_keeps_counters(exporter, worker)
    assert_secret_absent(exporter, PASSWORD, SENTINEL_PASSWORD)
