"""`check`, first link: the broker answers, queue lengths can be read, workers heartbeat, and
they send task events.

A broker error is put in the daemon's own words (faults/classify.py) and read with the daemon's own
queue probe, so `check` and the exporter's log say the same line for the same fault: a wrong
password, a missing vhost, a user who may not read a queue (with what to grant).

Listens to the event stream for a short window (asking workers for a heartbeat at once, as
Celery's own monitors do) and judges what arrived:
- a worker whose heartbeat `processed` count grew while it sent no task event has task events
  off (the most common reason an exporter shows workers but no tasks);
- workers that received tasks while no producer sent a task-sent event mean the producers run
  without task_send_sent_event, so sent counts and queue wait times stay empty.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ...config import Config, redact_url
from ...faults.classify import CONNECTION_KINDS, PERMISSION, Fault, FaultDescriber
from ...faults.outages import fault_line
from .results import Result, fail, ok, skip

LINK = "broker"
EVENTS_FIX = (
    "start the worker with -E, or set worker_send_task_events = True in its Celery config, "
    "or turn events on now with `celery -A <app> control enable_events`"
)
CONNECT_FIX = "check the broker URL (host, port, vhost or db, password) and that the broker runs"
GRANT_FIX = "grant this user what the line names; the exporter picks it up without a restart"
QUEUES = ("celery",)  # Celery's default queue, when no --queues are given
# Who meets a fault, in the words of the daemon's threads (poll/poller.py, stream/consumer.py).
POLL, EVENTS = "queue poll", "events"
SENT_FIX = (
    "set task_send_sent_event = True in the Celery config of the processes that send tasks "
    "(needed for celery_task_sent_total and queue wait times)"
)


def _connection(url: str, timeout: float) -> Any:
    from kombu.connection import Connection

    options: dict[str, Any] = {}
    if url.split(":", 1)[0] in {"redis", "rediss", "sentinel"}:
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    return Connection(url, connect_timeout=timeout, transport_options=options)


def check_broker(
    url: str, timeout: float, window: float, queues: Sequence[str] = QUEUES
) -> list[Result]:
    shown = redact_url(url)
    describe = FaultDescriber(url)
    conn = _connection(url, timeout)
    started = time.monotonic()
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
    except Exception as exc:  # kombu raises the transport's own error types; all mean the same
        return [_failed("reachable", describe(exc), "connection", shown)]
    finally:
        conn.release()
    results = [ok(LINK, "reachable", f"{shown} answered in {time.monotonic() - started:.2f}s")]
    results.append(_queue_lengths(url, timeout, queues, describe, shown))
    try:
        events = _listen(url, timeout, window)
    except Exception as exc:  # same: any transport error while listening
        results.append(_failed("event stream", describe(exc), EVENTS, shown))
        return results
    return results + judge(events, window)


def _failed(name: str, fault: Fault, source: str, shown: str) -> Result:
    """The daemon's own line for `fault` (without its "retrying" tail), and what to do."""
    if fault.kind in CONNECTION_KINDS:
        fix = CONNECT_FIX
    elif fault.kind == PERMISSION:
        fix = GRANT_FIX
    elif name == "event stream":
        fix = "check that this broker user may declare queues and bind to the celeryev exchange"
    else:
        fix = CONNECT_FIX
    return fail(LINK, name, fault_line(fault, source, shown), fix)


def _queue_lengths(
    url: str, timeout: float, queues: Sequence[str], describe: FaultDescriber, shown: str
) -> Result:
    """Read `queues` once with the exporter's own probe: what the daemon's poll would see."""
    from ...poll.queue_probe import ProbeError
    from ...poll.transports import make_probe

    app = _app(url, timeout)
    probe = make_probe(app, Config(broker_url=url, broker_timeout=timeout))
    try:
        reading = probe.read(queues)
        error = reading.error
    except ProbeError as exc:
        error = exc.__cause__ or exc  # the broker's error, unwrapped, as the poller reports it
    finally:
        probe.close()
        app.close()
    if error is not None:
        return _failed("queue lengths", describe(error), POLL, shown)
    if not probe.supports_length:
        return skip(LINK, "queue lengths", f"the {probe.driver} transport cannot report them")
    read = ", ".join(f"{queue} {reading.lengths.get(queue, 'unreadable')}" for queue in queues)
    return ok(LINK, "queue lengths", read)


def _app(url: str, timeout: float) -> Any:
    from celery import Celery

    app = Celery("celery-exporter-check", broker=url, set_as_current=False)
    app.conf.broker_transport_options = _connection(url, timeout).transport_options
    app.conf.broker_connection_timeout = timeout
    return app


def _listen(url: str, timeout: float, window: float) -> list[dict[str, Any]]:
    """Every event seen during `window` seconds, after asking workers for a heartbeat."""
    app = _app(url, timeout)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + window
    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": events.append})
        receiver.connect_max_retries = 1

        def stop_at_deadline() -> None:
            receiver.should_stop = time.monotonic() >= deadline

        receiver.on_iteration = stop_at_deadline
        # TimeoutError: nothing at all arrived for `window` seconds; judged below.
        with contextlib.suppress(TimeoutError):
            receiver.capture(limit=None, timeout=window, wakeup=True)
    return events


def judge(events: list[dict[str, Any]], window: float) -> list[Result]:
    """The verdicts on workers, their task events and producers' task-sent events."""
    processed: dict[str, list[int]] = defaultdict(list)
    task_events: dict[str, int] = defaultdict(int)
    sent = received = 0
    for event in events:
        kind = str(event.get("type", ""))
        node = str(event.get("hostname", ""))
        if kind in {"worker-heartbeat", "worker-online"}:
            processed.setdefault(node, [])
            if isinstance(event.get("processed"), int):
                processed[node].append(event["processed"])
        elif kind == "task-sent":
            sent += 1
        elif kind.startswith("task-"):
            task_events[node] += 1
            received += kind == "task-received"
    if not processed:
        return [
            fail(
                LINK,
                "workers",
                f"no worker sent a heartbeat within {window:g}s",
                "start workers on this broker (same URL, vhost or db); "
                "do not run them with --without-heartbeat",
            )
        ]
    results = [ok(LINK, "workers", f"{len(processed)} answered: {', '.join(sorted(processed))}")]
    for node in sorted(processed):
        counts = processed[node]
        grew = max(counts) - min(counts) if counts else 0
        if task_events[node]:
            results.append(
                ok(LINK, f"task events {node}", f"{task_events[node]} task events in {window:g}s")
            )
        elif grew:
            results.append(
                fail(
                    LINK,
                    f"task events {node}",
                    f"processed {grew} tasks in {window:g}s and sent no task event",
                    EVENTS_FIX,
                )
            )
        else:
            results.append(
                skip(
                    LINK,
                    f"task events {node}",
                    f"idle for {window:g}s, so cannot tell (see the exporter's "
                    "celery_worker_task_events_enabled)",
                )
            )
    if sent:
        results.append(ok(LINK, "task-sent events", f"{sent} task-sent events in {window:g}s"))
    elif received:
        results.append(
            fail(
                LINK,
                "task-sent events",
                f"workers received {received} tasks and no producer sent a task-sent event",
                SENT_FIX,
            )
        )
    else:
        results.append(
            skip(LINK, "task-sent events", f"no task was sent in {window:g}s, so cannot tell")
        )
    return results
