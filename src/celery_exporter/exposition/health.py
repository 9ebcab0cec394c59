"""The exporter's own health record: broker connection state, reconnects, HTTP requests.

Written by the event thread (broker_up, reconnects) and the HTTP threads (count_request), read
by ExporterCollector at scrape time. One lock guards the request counter; the two scalar fields
are single assignments, which a reader sees whole.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ExporterHealth:
    """The exporter's own state, written by the consumer and web threads, read by scrapes."""

    broker_up: bool = False
    reconnects: int = 0
    http_requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_request(self, handler: str, code: int) -> None:
        with self.lock:
            self.http_requests[(handler, str(code))] += 1
