"""Worker inspection: one `active_queues` + `stats` broadcast round, parsed per worker, and
the `active_queues` request addressed to newly appeared workers only.

Run by the poller on its own interval with a timeout, never on the scrape path. What the
workers answer feeds the queue-consumer gauges, the per-worker pool and resource gauges, and
the tracker's queue_name resolution for tasks without task-sent events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import kombu.exceptions
from celery import Celery

from .queue_probe import ProbeError, describe_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerStats:
    """What one worker told the last inspect round."""

    node: str
    queues: tuple[str, ...] = ()
    concurrency: int | None = None
    processes: int | None = None
    user_cpu_seconds: float | None = None
    system_cpu_seconds: float | None = None
    max_rss_bytes: int | None = None


class Inspector(Protocol):
    def round(self) -> dict[str, WorkerStats]:
        """Every replying worker's stats; ProbeError when the broker cannot be asked."""


def parse_replies(
    active_queues: Mapping[str, Any] | None, stats: Mapping[str, Any] | None
) -> dict[str, WorkerStats]:
    """Inspect replies -> WorkerStats per node; malformed parts are left out, not raised."""
    active_queues, stats = active_queues or {}, stats or {}
    workers: dict[str, WorkerStats] = {}
    for node in sorted({*active_queues, *stats}):
        replies = active_queues.get(node)
        queues = tuple(
            dict.fromkeys(
                q["name"] for q in (replies if isinstance(replies, list) else [])
                if isinstance(q, dict) and isinstance(q.get("name"), str)
            )
        )  # fmt: skip
        stat = _mapping(stats.get(node))
        pool, rusage = _mapping(stat.get("pool")), _mapping(stat.get("rusage"))
        concurrency = _number(pool.get("max-concurrency"), int)
        processes = pool.get("processes")
        maxrss = _number(rusage.get("maxrss"), int)
        workers[node] = WorkerStats(
            node=node,
            queues=queues,
            concurrency=concurrency,
            processes=len(processes) if isinstance(processes, list) else concurrency,
            user_cpu_seconds=_number(rusage.get("utime"), float),
            system_cpu_seconds=_number(rusage.get("stime"), float),
            # getrusage reports ru_maxrss in KiB on Linux, where workers run.
            max_rss_bytes=maxrss * 1024 if maxrss is not None else None,
        )
    return workers


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any, kind: Callable[[Any], Any]) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return kind(value)


class CeleryInspector:
    """Inspect requests on a fresh, time-bounded connection each: the broadcast round, and the
    targeted `active_queues` asked of newly appeared workers (poll/arrivals.py)."""

    def __init__(
        self, app: Celery, timeout: float, connect_timeout: float, ask_timeout: float = 1.0
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.ask_timeout = ask_timeout

    def round(self) -> dict[str, WorkerStats]:
        def request(inspect: Any) -> dict[str, WorkerStats]:
            return parse_replies(inspect.active_queues(), inspect.stats())

        return self._inspect(request, None, self.timeout)

    def ask(self, nodes: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """`active_queues` of these workers only; returns once all answered or on timeout."""

        def request(inspect: Any) -> dict[str, WorkerStats]:
            return parse_replies(inspect.active_queues(), None)

        workers = self._inspect(request, list(nodes), self.ask_timeout)
        return {node: stats.queues for node, stats in workers.items()}

    def _inspect(
        self,
        request: Callable[[Any], dict[str, WorkerStats]],
        destination: list[str] | None,
        timeout: float,
    ) -> dict[str, WorkerStats]:
        conn = self.app.connection_for_read(connect_timeout=self.connect_timeout, heartbeat=0)
        errors = (
            *conn.connection_errors, *conn.channel_errors,
            kombu.exceptions.OperationalError, OSError,
        )  # fmt: skip
        try:
            conn.connect()
            # With a destination, celery waits only until that many replies have come.
            inspect = self.app.control.inspect(
                destination=destination, timeout=timeout, connection=conn
            )
            return request(inspect)
        except errors as exc:
            raise ProbeError(describe_error(exc)) from exc
        finally:
            try:
                conn.release()
            except errors as exc:
                log.debug("closing the inspect connection: %s", describe_error(exc))
