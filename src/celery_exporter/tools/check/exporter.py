"""`check`, second link: the exporter serves /metrics, is connected, and events reach it."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

from prometheus_client.parser import text_string_to_metric_families

from ..http import HttpError, get_response, join
from .results import Result, fail, ok

LINK = "exporter"
# Workers heartbeat every 2 s; an exporter that heard nothing for this long hears nothing.
EVENT_SILENCE = 30.0

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str, timeout: float) -> tuple[Samples, float]:
    """The exporter's samples by name, and its own clock (the Date header) at the scrape."""
    text, headers = get_response(join(url, "/metrics"), timeout)
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    try:
        # The exporter stamps events with its own clock: judge their age by it, not ours.
        server_now = parsedate_to_datetime(headers["Date"]).timestamp()
    except (KeyError, TypeError, ValueError):
        server_now = time.time()
    return samples, server_now


def check_exporter(url: str, timeout: float, prefix: str) -> list[Result]:
    try:
        samples, now = scrape(url, timeout)
    except (HttpError, ValueError) as exc:
        return [
            fail(
                LINK,
                "/metrics",
                str(exc).splitlines()[0],
                "start celery-exporter, or correct --exporter-url (scheme, host, port)",
            )
        ]
    results = [ok(LINK, "/metrics", f"{sum(len(v) for v in samples.values())} samples")]

    broker_up = samples.get(f"{prefix}exporter_broker_up")
    if not broker_up:
        results.append(
            fail(
                LINK,
                "broker connection",
                f"no {prefix}exporter_broker_up sample: not celery-exporter, or another prefix",
                "point --exporter-url at celery-exporter and pass its --metric-prefix",
            )
        )
        return results
    if broker_up[0][1] != 1:
        results.append(
            fail(
                LINK,
                "broker connection",
                f"{prefix}exporter_broker_up is {broker_up[0][1]:g}",
                "check the exporter's --broker-url and its log: it cannot reach the broker",
            )
        )
    else:
        results.append(ok(LINK, "broker connection", f"{prefix}exporter_broker_up is 1"))

    last = samples.get(f"{prefix}exporter_last_event_timestamp_seconds", [])
    last_at = max((value for _, value in last), default=0.0)
    if last_at <= 0:
        results.append(
            fail(
                LINK,
                "events",
                "no event has arrived since the exporter started",
                "start workers on the broker the exporter reads (they heartbeat every 2 s)",
            )
        )
    elif now - last_at > EVENT_SILENCE:
        results.append(
            fail(
                LINK,
                "events",
                f"the last event arrived {now - last_at:.0f}s ago (more than {EVENT_SILENCE:g}s)",
                "check that workers run on the broker the exporter reads, and the exporter's log",
            )
        )
    else:
        # The Date header has whole seconds: an event this second can read up to 1 s "ahead".
        results.append(ok(LINK, "events", f"last event {max(0.0, now - last_at):.0f}s ago"))

    silent = sorted(
        labels.get("worker", "?")
        for labels, value in samples.get(f"{prefix}worker_task_events_enabled", [])
        if value == 0
    )
    if silent:
        results.append(
            fail(
                LINK,
                "task events",
                f"workers processing tasks without task events: {', '.join(silent)}",
                "start them with -E, or set worker_send_task_events = True, or run "
                "`celery -A <app> control enable_events`",
            )
        )
    else:
        results.append(ok(LINK, "task events", "no worker processes tasks without task events"))
    return results
