"""PromQL for the dashboards: selectors filtered by the template variables, and HA dedup.

Every raw exporter series goes through `one_replica` before anything sums or counts it: two
exporters of an HA pair export the same series, told apart only by `instance` (and `pod` on
Kubernetes), so `max without (instance, pod)` reads a pair exactly like one exporter, also while
one replica restarts (its counters start again from 0 and its rate is at most its partner's).
Recording rules (`celery:...`) are already deduplicated in deploy/alert_rules.yml.
"""

from __future__ import annotations

# Matchers for the template variables. `select` always adds JOB.
JOB = 'job=~"$job"'
QUEUE = 'queue_name=~"$queue"'
TASK = 'name=~"$task"'
WORKER = 'worker=~"$worker"'

# Labels that tell replicas of one exporter apart; everything else must be equal on both.
REPLICA_LABELS = ("instance", "pod")
RATE_WINDOW = "$__rate_interval"


def select(metric: str, *matchers: str) -> str:
    """`metric{job=~"$job", <matchers>}`."""
    return f"{metric}{{{', '.join((JOB, *matchers))}}}"


def one_replica(expr: str) -> str:
    """One series per exporter job, whatever the number of replicas scraping the same broker."""
    return f"max without ({', '.join(REPLICA_LABELS)}) ({expr})"


def gauge(metric: str, *matchers: str) -> str:
    """A gauge, deduplicated across replicas."""
    return one_replica(select(metric, *matchers))


def rate(metric: str, *matchers: str, window: str = RATE_WINDOW) -> str:
    """Per-second rate of a counter, per replica (each resets on its own), then deduplicated."""
    return one_replica(f"rate({select(metric, *matchers)}[{window}])")


def increase(metric: str, *matchers: str, window: str) -> str:
    """Increase of a counter over `window`, per replica, then deduplicated."""
    return one_replica(f"increase({select(metric, *matchers)}[{window}])")


def aggregate(operator: str, expr: str, by: tuple[str, ...] = ()) -> str:
    """`sum(expr)` or `sum by (a, b) (expr)`; `operator` is any PromQL aggregation."""
    grouping = f" by ({', '.join(by)})" if by else ""
    return f"{operator}{grouping} ({expr})" if by else f"{operator}({expr})"


def quantile(q: float, histogram: str, *matchers: str, by: tuple[str, ...] = ()) -> str:
    """The q-quantile of a histogram (`histogram` names the family, without `_bucket`)."""
    buckets = rate(f"{histogram}_bucket", *matchers)
    return f"histogram_quantile({q}, {aggregate('sum', buckets, (*by, 'le'))})"
