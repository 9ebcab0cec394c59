"""Custom collector for the poll threads' results: queue, per-queue worker and poll-health metrics.

`families()` reads `QueuePoller.view()` (in-memory values, one short lock) and builds families;
it never talks to the broker, so a scrape stays fast and succeeds while the broker is down.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ..poll.poller import PollView, QueuePoller
from ..state.event_fields import host_of
from .catalogue import FamilyFactory
from .families import Family, FamilyCollector

CPU_MODES = (("user", "user_cpu_seconds"), ("system", "system_cpu_seconds"))


class PollCollector(FamilyCollector):
    """Queue lengths, unacked messages, consumers, worker pool stats and poll health."""

    def __init__(self, poller: QueuePoller, factory: FamilyFactory) -> None:
        self._poller = poller
        self._factory = factory

    def families(self) -> Iterator[Family]:
        view = self._poller.view()
        yield from self._per_queue("queue_length", view.queues, view.lengths)
        yield from self._per_queue("queue_unacked_messages", view.queues, view.unacked)
        yield from self._per_queue("active_consumer_count", view.queues, view.consumers)
        yield from self._per_queue("active_worker_count", view.queues, view.workers_per_queue)
        yield from self._per_queue("active_process_count", view.queues, view.processes_per_queue)
        yield from self._workers(view)
        yield from self._health(view)

    def _per_queue(
        self, name: str, queues: tuple[str, ...], values: Mapping[str, int] | None
    ) -> Iterator[Family]:
        f = self._factory
        if values is None or not f.enabled(name):
            return
        family = f.new(name)
        for queue in queues:
            value = values.get(queue)
            if value is not None:
                family.add_metric(f.labels((queue,)), value)
        yield family

    def _workers(self, view: PollView) -> Iterator[Family]:
        f = self._factory
        names = (
            "worker_concurrency",
            "worker_cpu_seconds",
            "worker_max_rss_bytes",
            "worker_queue_info",
        )
        families = {name: f.new(name) for name in names if f.enabled(name)}
        if not families or not view.workers:
            return
        for stats in view.workers:
            labels = (host_of(stats.node), stats.node)
            if "worker_concurrency" in families and stats.concurrency is not None:
                families["worker_concurrency"].add_metric(f.labels(labels), stats.concurrency)
            if "worker_cpu_seconds" in families:
                for mode, attr in CPU_MODES:
                    seconds = getattr(stats, attr)
                    if seconds is not None:
                        families["worker_cpu_seconds"].add_metric(
                            f.labels((*labels, mode)), seconds
                        )
            if "worker_max_rss_bytes" in families and stats.max_rss_bytes is not None:
                families["worker_max_rss_bytes"].add_metric(f.labels(labels), stats.max_rss_bytes)
            if "worker_queue_info" in families:
                for queue in stats.queues:
                    families["worker_queue_info"].add_metric(f.labels((*labels, queue)), 1)
        yield from families.values()

    def _health(self, view: PollView) -> Iterator[Family]:
        values: list[tuple[str, float | None]] = [
            ("exporter_queue_length_supported", 1.0 if view.length_supported else 0.0),
        ]
        if view.length_supported:
            values += [
                ("exporter_queue_poll_success", _flag(view.poll_success)),
                ("exporter_queue_poll_duration_seconds", view.poll_duration),
                ("exporter_queue_poll_last_success_timestamp_seconds", view.poll_last_success),
            ]
        values += [
            ("exporter_inspect_success", _flag(view.inspect_success)),
            ("exporter_inspect_last_success_timestamp_seconds", view.inspect_last_success),
        ]
        f = self._factory
        for name, value in values:
            if value is not None and f.enabled(name):
                family = f.new(name)
                family.add_metric(f.labels(()), value)
                yield family


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)
