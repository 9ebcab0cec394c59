"""Custom collector of the exporter's own metrics: build info, broker up, reconnects, HTTP.

Reads the health record (health.py) at scrape time, under its lock for the request counter only.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

import celery

from .. import __version__
from ..state.task_rows import Labels
from .catalogue import FamilyFactory
from .families import Family, FamilyCollector
from .health import ExporterHealth


class ExporterCollector(FamilyCollector):
    """Build info, broker connection state, reconnects and HTTP requests."""

    def __init__(self, health: ExporterHealth, factory: FamilyFactory) -> None:
        self._health = health
        self._factory = factory
        self._build = (__version__, celery.__version__, platform.python_version())

    def families(self) -> Iterator[Family]:
        f, health = self._factory, self._health
        with health.lock:
            requests = dict(health.http_requests)
        values: list[tuple[str, Labels, float]] = [
            ("exporter_build_info", self._build, 1.0),
            ("exporter_broker_up", (), 1.0 if health.broker_up else 0.0),
            ("exporter_broker_reconnects", (), float(health.reconnects)),
        ]
        values += [("exporter_http_requests", key, float(n)) for key, n in requests.items()]
        # Present from the first scrape, before any request was counted, so that rules on it
        # see the family rather than nothing.
        families: dict[str, Family] = {
            name: f.new(name) for name in ("exporter_http_requests",) if f.enabled(name)
        }
        for name, labels, value in values:
            if not f.enabled(name):
                continue
            family = families.get(name) or families.setdefault(name, f.new(name))
            family.add_metric(f.labels(labels), value)
        yield from families.values()
