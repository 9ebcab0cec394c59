"""Composition root: build the parts from a Config, start the threads, stop them in order.

Threads: the event consumer (the only writer of the tracker), the broker poller, and the HTTP
server. The main thread waits for SIGTERM/SIGINT and then shuts down: HTTP first (no scrape
sees a half-stopped exporter), then the consumer and the poller.
"""

from __future__ import annotations

import logging
import signal
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from celery import Celery
from prometheus_client import disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from .config import Config, ConfigError
from .exposition.beat_collector import BeatCollector
from .exposition.catalogue import FamilyFactory
from .exposition.exporter_collector import ExporterCollector
from .exposition.families import FamilyCollector
from .exposition.health import ExporterHealth
from .exposition.poll_collector import PollCollector
from .exposition.tracker_collector import TrackerCollector
from .poll.arrivals import WorkerArrivals
from .poll.poller import QueuePoller
from .schedule.beat_entries import BeatEntry, beat_entries
from .schedule.user_app import load_app
from .state.tracker import Tracker
from .stream.consumer import EventConsumer
from .web.server import MetricsApp, build_server
from .web.web_config import WebConfig, load_web_config

log = logging.getLogger(__name__)

# While the event thread drains at full speed, a scrape thread waits up to a whole switch
# interval (5 ms by default) each time it wants the GIL back. 0.5 ms halved scrape p99 while
# draining (123 -> 65 ms) at no measurable cost to ingest (bench/README.md).
GIL_SWITCH_INTERVAL = 0.0005

# Seconds shutdown waits for the consumer and poller threads after SIGTERM: the whole stop
# stays well under 2 s (tests/container measures it).
SHUTDOWN_GRACE = 0.5
HTTP_POLL_INTERVAL = 0.1

SSL_CERT_REQS = {
    "CERT_NONE": ssl.CERT_NONE,
    "CERT_OPTIONAL": ssl.CERT_OPTIONAL,
    "CERT_REQUIRED": ssl.CERT_REQUIRED,
}


class StartupError(Exception):
    """The exporter cannot start (e.g. the port is in use); one line for the operator."""


def build_celery_app(config: Config) -> Celery:
    app = Celery("celery-exporter", set_as_current=False)
    ssl_options: dict[str, Any] = dict(config.broker_ssl_options)
    for key in ("cert_reqs", "ssl_cert_reqs"):
        if isinstance(ssl_options.get(key), str):
            ssl_options[key] = SSL_CERT_REQS.get(ssl_options[key].upper(), ssl_options[key])
    app.conf.update(
        broker_url=config.broker_url,
        broker_transport_options=config.broker_transport_options,
        broker_use_ssl=ssl_options or None,
        broker_connection_timeout=config.broker_timeout,
        broker_connection_retry_on_startup=False,
        worker_hijack_root_logger=False,
    )
    if config.accept_content:
        app.conf.accept_content = list(config.accept_content)
    try:
        # Load the transport now, so a missing client library is a one-line start-up error
        # rather than a traceback in the event thread.
        app.connection_for_read().transport  # noqa: B018
    except (ImportError, KeyError, ValueError) as exc:
        raise ConfigError(f"--broker-url: transport not usable: {exc}") from None
    return app


def build_collectors(
    config: Config,
    tracker: Tracker,
    health: ExporterHealth,
    poller: QueuePoller,
    beat_entries: Sequence[BeatEntry] = (),
) -> list[FamilyCollector]:
    """The exporter's own collectors, in the order /metrics renders them. Shared with the
    golden exposition test (tests/unit/exposition), which must scrape what a real one does.
    The periodic-task collector is there only with --app (beat_entries)."""
    factory = FamilyFactory(config.metric_prefix, config.static_labels, config.disabled_metrics)
    collectors: list[FamilyCollector] = [
        TrackerCollector(tracker, factory, config.runtime_buckets, config.queue_wait_buckets),
        ExporterCollector(health, factory),
        PollCollector(poller, factory),
    ]
    if beat_entries:
        collectors.append(BeatCollector(tracker, beat_entries, factory, time.time, time.time()))
    return collectors


def load_beat_schedule(config: Config) -> tuple[BeatEntry, ...]:
    """The --app's beat_schedule entries (none without --app); ConfigError for a bad --app.
    Loaded once, here, before any thread starts: the user's code never runs on the event path."""
    if config.app is None:
        return ()
    entries = beat_entries(load_app(config.app), config.app, config.max_task_names)
    log.info(
        "watching %d beat_schedule entries of %s: %s",
        len(entries),
        config.app,
        ", ".join(f"{e.entry} ({e.task}, {e.description})" for e in entries),
    )
    return entries


class Exporter:
    """The running exporter; `run()` blocks until stop() or a signal."""

    def __init__(self, config: Config, web_config: WebConfig | None = None) -> None:
        self.config = config
        self.beat_entries = load_beat_schedule(config)  # first: a bad --app starts nothing
        self.stop_event = threading.Event()
        disable_created_metrics()  # halves the exposition of our own counters; users asked
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.celery_app = build_celery_app(config)
        self.health = ExporterHealth()
        # New workers are asked for their queues by the poller, on the tracker's word.
        arrivals = WorkerArrivals(time.time, config.max_workers)
        self.poller = QueuePoller(config, self.celery_app, clock=time.time, arrivals=arrivals)
        self.tracker = Tracker(
            config,
            clock=time.time,
            worker_queues=self.poller.worker_queues,
            arrivals=arrivals if self.poller.arrival_asker is not None else None,
            broker_evidence=self.poller.queue_evidence,
            beat_tasks=dict.fromkeys(entry.task for entry in self.beat_entries),
        )
        self.collectors = build_collectors(
            config, self.tracker, self.health, self.poller, self.beat_entries
        )
        if web_config is None:
            web_config = load_web_config(config.web_config_file)
        app = MetricsApp(
            self.registry,
            self.collectors,
            self.health,
            web_config,
            config.redacted_broker_url,
            config.web_health_without_auth,
        )
        try:
            self.server = build_server(config.host, config.port, app, web_config)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
            ) from None
        self.consumer = EventConsumer(
            self.celery_app,
            self.tracker,
            self.health,
            config.retry_interval,
            outages=self.poller.outages,  # one log line per outage, whichever thread sees it
        )
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        for name, target in (
            # serve_forever notices shutdown() only between polls: 0.5 s by default.
            ("http", lambda: self.server.serve_forever(poll_interval=HTTP_POLL_INTERVAL)),
            ("events", lambda: self.consumer.run(self.stop_event)),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.poller.start()
        scheme = "https" if self.server.socket.__class__.__name__ == "SSLSocket" else "http"
        log.info(
            "serving metrics on %s://%s:%d/metrics", scheme, self.config.host, self.config.port
        )

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        self.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.stop_event.wait()
        self.shutdown()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self.stop_event.set()

    def shutdown(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
        # One deadline for all threads, not one each: a poll inside an inspect broadcast
        # (--inspect-timeout) or a drain_events wait must not hold up a rollout, and the
        # threads are daemons with nothing to flush once HTTP is closed.
        deadline = time.monotonic() + SHUTDOWN_GRACE
        self.poller.stop(timeout=SHUTDOWN_GRACE)
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        log.info("stopped")
