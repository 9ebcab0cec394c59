"""The report's Prometheus queries over one range, and the charts built from them.

Raw samples are read once per metric (`name{...}[range + lookback]` at the range's end) and
counted exactly by tools/counters.py. The charts of counters and histograms (throughput,
failures, runtime) are those same exact counts put in bins of `step` seconds, so they add up to
the totals and show the first tasks of a series born inside the range, which rate() would miss.
The backlog chart is a range query in the shipped rules' style, replicas deduplicated first:
`sum by (queue_name) (max without (instance, pod) (...))`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..counters import LabelKey, binned, deduplicated, quantile, restart_times
from ..prometheus import PrometheusClient, SampleStream

LOOKBACK = 300.0  # seconds before the range searched for each series' last earlier sample
# Raw samples are read in pieces of this many seconds, so a long range stays under Prometheus's
# --query.max-samples (50 M by default) and each answer stays a few MB.
CHUNK = 6 * 3600.0
MAX_POINTS = 240  # chart points per series
Points = list[list[float]]  # [[unix seconds, value], ...]


@dataclass(frozen=True)
class Filters:
    job: tuple[str, ...] = ()
    queue: tuple[str, ...] = ()
    task: tuple[str, ...] = ()

    def selector(self, *, queue: bool = True, task: bool = True) -> str:
        """A label selector such as {job=~"a|b",queue_name=~"q"}; regex-escaped values."""
        parts = []
        for label, values, used in (
            ("job", self.job, True),
            ("queue_name", self.queue, queue),
            ("name", self.task, task),
        ):
            if used and values:
                alternatives = "|".join(_regex_escape(v) for v in values)
                parts.append(f'{label}=~"{alternatives}"')
        return "{" + ",".join(parts) + "}"


def _regex_escape(value: str) -> str:
    escaped = "".join(f"\\\\{c}" if c in r".^$*+?()[]{}|\\" else c for c in value)
    return escaped.replace('"', '\\"')


class Fetcher:
    def __init__(
        self, client: PrometheusClient, start: float, end: float, prefix: str, filters: Filters
    ) -> None:
        self.client = client
        self.start, self.end = start, end
        self.prefix = prefix
        self.filters = filters
        self.step = float(max(1, math.ceil((end - start) / MAX_POINTS)))
        self.bins = max(1, math.ceil((end - start) / self.step))
        self.job = filters.selector(queue=False, task=False)
        self._raw: dict[str, list[SampleStream]] = {}
        self.restarts = restart_times(self.raw("process_start_time_seconds", prefixed=False))

    def raw(self, metric: str, prefixed: bool = True) -> list[SampleStream]:
        """Every sample of `metric` (filtered) from LOOKBACK before the range to its end."""
        if metric not in self._raw:
            name = f"{self.prefix}{metric}" if prefixed else metric
            selector = self.filters.selector() if prefixed else self.job
            merged: dict[tuple[tuple[str, str], ...], SampleStream] = {}
            # Range selectors are open on the left, so consecutive pieces never overlap.
            piece_end = self.start - LOOKBACK
            while piece_end < self.end:
                piece = min(CHUNK, self.end - piece_end)
                piece_end += piece
                expr = f"{name}{selector}[{math.ceil(piece * 1000)}ms]"
                for s in self.client.instant(expr, piece_end):
                    key = tuple(sorted(s["metric"].items()))
                    merged.setdefault(key, SampleStream(metric=s["metric"], values=[]))
                    merged[key]["values"].extend(s["values"])
            for s in merged.values():
                s["values"] = sorted(dict(s["values"]).items())  # one sample per time
            self._raw[metric] = list(merged.values())
        return self._raw[metric]

    def counts(self, metric: str) -> dict[LabelKey, float]:
        """Exact increase in the range per label set, replicas deduplicated."""
        return deduplicated(self.raw(metric), self.start, self.restarts)

    def binned(self, series: list[SampleStream]) -> list[float]:
        return binned(series, self.start, self.step, self.bins, self.restarts)

    def middle(self, i: int) -> float:
        return min(self.end, self.start + (i + 0.5) * self.step)

    def per_second(self, metric: str) -> Points:
        """The metric's exact count per bin, as a rate, at each bin's middle."""
        counted = self.binned(self.raw(metric))
        return [[self.middle(i), round(n / self.step, 6)] for i, n in enumerate(counted)]

    def runtime(self) -> dict[str, Points]:
        """Average and p95 runtime of the tasks that finished in each bin (none: no point)."""
        sums = self.binned(self.raw("task_runtime_sum"))
        counts = self.binned(self.raw("task_runtime_count"))
        by_le: dict[float, list[SampleStream]] = {}
        for s in self.raw("task_runtime_bucket"):
            by_le.setdefault(float(s["metric"].get("le", "nan")), []).append(s)
        buckets = {le: self.binned(group) for le, group in by_le.items() if not math.isnan(le)}
        average: Points = []
        p95: Points = []
        for i, count in enumerate(counts):
            if count > 0:
                average.append([self.middle(i), round(sums[i] / count, 6)])
                high = quantile(0.95, {le: counted[i] for le, counted in buckets.items()})
                if high is not None:
                    p95.append([self.middle(i), round(high, 6)])
        return {"average": average, "p95": p95}

    def range(self, expr: str) -> list[SampleStream]:
        return self.client.range(expr, self.start, self.end, self.step)

    def backlog(self) -> list[SampleStream]:
        return self.range(
            f"sum by (queue_name) (max without (instance, pod) "
            f"({self.prefix}queue_length{self.filters.selector(task=False)}))"
        )

    def charts(self, backlog: list[SampleStream]) -> dict[str, dict[str, Points]]:
        return {
            "throughput": {
                "succeeded": self.per_second("task_succeeded_total"),
                "failed": self.per_second("task_failed_total"),
            },
            "failures": {
                "failed": self.per_second("task_failed_total"),
                "retried": self.per_second("task_retried_total"),
            },
            "backlog": {
                s["metric"].get("queue_name", ""): _points(s)
                for s in sorted(backlog, key=lambda s: s["metric"].get("queue_name", ""))
            },
            "runtime": self.runtime(),
        }


def _points(series: SampleStream) -> Points:
    return [[t, round(v, 6)] for t, v in series["values"] if math.isfinite(v)]
