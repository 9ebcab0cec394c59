"""Format-neutral metric families, and the collector base class that yields them.

The exporter's own collectors fill Family records at scrape time. The same records become
prometheus_client families (to_metric) for registries and tests, and are written straight to
text by exposition/render.py for /metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

Buckets = Sequence[tuple[str, float]]  # (le, cumulative count)


@dataclass(slots=True)
class Family:
    """One metric family's samples. `name` is without `_total`; kind is counter, gauge or
    histogram. add_metric() mirrors prometheus_client's families, so collectors read alike."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[Sequence[str], float]] = field(default_factory=list)
    histograms: list[tuple[Sequence[str], Buckets, float]] = field(default_factory=list)

    def add_metric(self, labels: Sequence[str], value: Any, sum_value: float | None = None) -> None:
        if self.kind == "histogram":
            self.histograms.append((labels, value, sum_value or 0.0))
        else:
            self.samples.append((labels, float(value)))

    def to_metric(self) -> Metric:
        """The equivalent prometheus_client family."""
        labels = list(self.labels)
        family: Any
        if self.kind == "histogram":
            family = HistogramMetricFamily(self.name, self.help, labels=labels)
            for values, buckets, total in self.histograms:
                family.add_metric(list(values), list(buckets), total)
            return family  # type: ignore[no-any-return]
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = cls(self.name, self.help, labels=labels)
        for values, value in self.samples:
            family.add_metric(list(values), value)
        return family  # type: ignore[no-any-return]


class FamilyCollector(Collector):
    """A collector whose families() yields Family: registries get prometheus_client families,
    /metrics gets them rendered by render()."""

    def families(self) -> Iterator[Family]:
        raise NotImplementedError

    def describe(self) -> Iterable[Metric]:
        return []  # registration does no work

    def collect(self) -> Iterator[Metric]:
        return (series.to_metric() for series in self.families())
