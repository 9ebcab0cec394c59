"""Label values of task events: validated, capped, and remembered per raw value.

A task event names its node, task and queue as raw strings. Each must be checked (label_text),
the node name cut to its host (host_of) and admitted by its cardinality cap (task_rows.LabelCap).
The answer for a raw value is remembered, so that the next event with the same value costs one
dict lookup. Only admitted values are remembered: an overflowed one asks its cap every time, so
that every such event is still counted in exporter_cardinality_overflow_total. Memory: at
most REMEMBERED raw values per field, forgotten all at once past that (autoscaled node names churn).
"""

from __future__ import annotations

from typing import Any, TypeVar

from ..config import Config
from .event_fields import OVERFLOW, host_of, label_text
from .task_rows import LabelCap

GENERIC_HOSTNAME = "generic"
REMEMBERED = 4096  # raw values remembered with their label value, per field
V = TypeVar("V")


class EventLabels:
    def __init__(self, config: Config) -> None:
        self._config = config
        self.names = LabelCap(config.max_task_names)
        self.hosts = LabelCap(config.max_workers)
        self.producer_hosts = LabelCap(config.max_workers)
        # Raw value -> its label value(s). Public: state/task_events.py looks them up inline on the
        # hot path. Cleared in place, never replaced, so a reference to one stays valid.
        self.worker_nodes: dict[str, tuple[str, str]] = {}  # -> (node name, hostname)
        self.producer_memo: dict[str, str] = {}  # producer node name -> hostname
        self.name_memo: dict[str, str] = {}
        self.queue_memo: dict[str, str] = {}

    def worker_node(self, raw: Any) -> tuple[str, str]:
        """A worker's node name and its hostname label (BadEvent if it is no label)."""
        known = self.worker_nodes.get(raw) if type(raw) is str else None
        if known is not None:
            return known
        nodename = label_text(raw, "hostname")
        if self._config.generic_hostname_worker_task_metric:
            host = GENERIC_HOSTNAME
        else:
            host = self.hosts.admit(host_of(nodename))
            if host == OVERFLOW:
                return nodename, host
        return _remember(self.worker_nodes, raw, (nodename, host))

    def producer_host(self, raw: Any) -> str:
        """A producer's hostname label (task-sent's)."""
        host = self.producer_memo.get(raw) if type(raw) is str else None
        if host is not None:
            return host
        nodename = label_text(raw, "hostname")
        if self._config.generic_hostname_task_sent_metric:
            return GENERIC_HOSTNAME
        host = self.producer_hosts.admit(host_of(nodename))
        return host if host == OVERFLOW else _remember(self.producer_memo, raw, host)

    def name(self, raw: Any) -> str:
        name = self.name_memo.get(raw) if type(raw) is str else None
        if name is not None:
            return name
        name = self.names.admit(label_text(raw, "name"))
        return name if name == OVERFLOW else _remember(self.name_memo, raw, name)

    def queue(self, raw: Any) -> str:
        queue = self.queue_memo.get(raw) if type(raw) is str else None
        if queue is not None:
            return queue
        return _remember(self.queue_memo, raw, label_text(raw, "queue"))

    def release_hosts(self, hosts: set[str]) -> None:
        """Hosts no live worker has any more leave the cap."""
        for host in hosts:
            self.hosts.release(host)
        self.worker_nodes.clear()  # a released label may be refused later: ask the cap again

    def overflowed(self) -> dict[str, int]:
        return {
            "task_name": self.names.overflowed,
            "hostname": self.hosts.overflowed + self.producer_hosts.overflowed,
        }


def _remember(memo: dict[str, V], raw: str, value: V) -> V:
    if len(memo) >= REMEMBERED:
        memo.clear()
    memo[raw] = value
    return value
