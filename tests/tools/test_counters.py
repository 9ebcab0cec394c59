"""Exact counting from raw samples, quantiles, time ranges and Alertmanager routing: pure logic."""

from __future__ import annotations

import math

import pytest

from celery_exporter.tools.check.alertmanager import judge_receivers, route
from celery_exporter.tools.counters import (
    LabelKey,
    bucket_counts,
    deduplicated,
    increase,
    quantile,
    restart_times,
    total_by,
)
from celery_exporter.tools.prometheus import SampleStream
from celery_exporter.tools.report.fetch import Fetcher, Filters
from celery_exporter.tools.timerange import RangeError, resolve
from tests.support import promql

START = 1000.0


def samples(*pairs: float) -> list[tuple[float, float]]:
    return list(zip(pairs[::2], pairs[1::2], strict=True))


def test_increase_counts_steps_after_the_start_only() -> None:
    # 5 before the range, then 7 and 12 inside: 7 tasks in the range, not 12.
    assert increase(samples(990, 5, 1001, 7, 1002, 12), START) == 7


def test_a_series_born_inside_the_range_counts_its_first_value() -> None:
    assert increase(samples(1001, 3, 1002, 4), START) == 4


def test_a_counter_reset_counts_the_new_value() -> None:
    # 10 before, 15 (+5), reset to 2 (+2), 6 (+4): 11.
    assert increase(samples(999, 10, 1001, 15, 1002, 2, 1003, 6), START) == 11


def test_a_restart_hidden_by_a_higher_value_is_found_from_the_start_time() -> None:
    values = samples(999, 10, 1001, 15, 1010, 20, 1011, 21)
    assert increase(values, START) == 11  # looks like +5 +5 +1 without the restart
    # The process restarted at 1005: the 20 at 1010 is all new, so 5 + 20 + 1.
    assert increase(values, START, restarts=[500, 1005]) == 26


def test_replicas_are_deduplicated_with_max_and_label_sets_kept_apart() -> None:
    def series(instance: str, name: str, *pairs: float) -> SampleStream:
        return SampleStream(metric={"instance": instance, "name": name}, values=samples(*pairs))

    found = deduplicated(
        [
            series("a:1", "add", 1001, 4),
            series("b:1", "add", 999, 0, 1001, 4),  # the same 4 tasks, seen by the other replica
            series("b:1", "mul", 1001, 2),
        ],
        START,
    )
    assert total_by(found) == {(): 6}
    assert total_by(found, "name") == {("add",): 4, ("mul",): 2}


def test_restart_times_per_process() -> None:
    found = restart_times(
        [SampleStream(metric={"job": "j", "instance": "a"}, values=samples(1, 500, 2, 500, 3, 900))]
    )
    assert found == {("j", "a"): [500, 900]}


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 1.5), (0.9, 3.5), (1.0, 5.0)],
)
def test_quantile_interpolates_like_histogram_quantile(q: float, expected: float) -> None:
    # 10 observations: 2 <= 1 s, 8 <= 2 s, 10 <= 5 s.
    buckets = {1.0: 2.0, 2.0: 8.0, 5.0: 10.0, math.inf: 10.0}
    assert quantile(q, buckets) == pytest.approx(expected)


def test_quantile_of_nothing_is_none_and_inf_reads_as_the_top_bound() -> None:
    assert quantile(0.5, {1.0: 0.0, math.inf: 0.0}) is None
    assert quantile(0.99, {1.0: 1.0, math.inf: 10.0}) == 1.0


def test_bucket_counts_group_by_label() -> None:
    counts: dict[LabelKey, float] = {
        (("le", "1.0"), ("name", "a")): 1.0,
        (("le", "+Inf"), ("name", "a")): 3.0,
        (("le", "+Inf"), ("name", "b")): 2.0,
    }
    assert bucket_counts(counts, "name") == {
        ("a",): {1.0: 1.0, math.inf: 3.0},
        ("b",): {math.inf: 2.0},
    }


def test_filters_make_anchored_escaped_selectors() -> None:
    filters = Filters(job=("celery-exporter",), queue=("a.b", "c"), task=("app.add",))
    assert filters.selector() == (
        '{job=~"celery-exporter",queue_name=~"a\\\\.b|c",name=~"app\\\\.add"}'
    )
    assert filters.selector(queue=False, task=False) == '{job=~"celery-exporter"}'
    assert Filters().selector() == "{}"


def test_time_ranges() -> None:
    now = 100_000.0
    assert resolve("24h", None, None, now) == (now - 86400, now)
    assert resolve(None, "1970-01-01T00:00:10Z", "20", now) == (10.0, 20.0)
    assert resolve(None, None, None, now) == (now - 86400, now)
    for since, start, end, message in [
        ("5x", None, None, "expected a number and a unit"),
        ("1h", "10", None, "not both"),
        (None, "20", "10", "--start must be before --end"),
        (None, "yesterday", None, "--start 'yesterday'"),
        (None, str(now + 10), str(now + 20), "starts in the future"),
    ]:
        with pytest.raises(RangeError, match=message):
            resolve(since, start, end, now)


def test_every_shipped_alert_routes_to_a_notifying_receiver() -> None:
    config = promql.load_yaml(promql.ALERTMANAGER_FILE)
    for rule in promql.alert_rules():
        labels = {"alertname": rule["alert"], **rule["labels"]}
        reached = route(config["route"], labels)
        assert reached, rule["alert"]
    critical = {"alertname": "X", "severity": "critical", "component": "queue"}
    assert route(config["route"], critical) == ["celery-webhook", "celery-email"]
    warning = {"alertname": "X", "severity": "warning", "component": "exporter"}
    assert route(config["route"], warning) == ["celery-platform-email"]


def test_a_severity_routed_to_a_receiver_that_notifies_nobody_fails() -> None:
    config = {
        "route": {
            "receiver": "mail",
            "routes": [{"receiver": "blackhole", "matchers": ['severity="warning"']}],
        },
        "receivers": [{"name": "mail", "email_configs": [{"to": "a@b"}]}, {"name": "blackhole"}],
    }
    alerts = [{"alertname": "A", "severity": "critical"}, {"alertname": "B", "severity": "warning"}]
    result = judge_receivers(config, alerts)
    assert result.status == "FAIL"
    assert result.reason == "alerts of severity warning -> ['blackhole'], which notifies nobody"
    assert judge_receivers(config, alerts[:1]).status == "OK"


class ScriptedPrometheus:
    """Answers `name[Nms]` at time T with the scripted samples in (T - N, T], as Prometheus does."""

    url = "scripted"

    def __init__(self, samples: list[tuple[float, float]]) -> None:
        self.samples = samples
        self.queries: list[str] = []

    def instant(self, expr: str, at: float) -> list[SampleStream]:
        self.queries.append(expr)
        if not expr.startswith("celery_task_succeeded_total"):
            return []
        span = float(expr.rsplit("[", 1)[1].rstrip("ms]")) / 1000
        found = [(t, v) for t, v in self.samples if at - span < t <= at]
        return [SampleStream(metric={"job": "j", "instance": "a"}, values=found)] if found else []


def test_long_ranges_are_read_in_pieces_without_gaps_or_overlaps() -> None:
    start, end = 0.0, 2 * 86400.0
    samples = [(float(t), float(t // 15)) for t in range(-600, int(end) + 1, 15)]
    client = ScriptedPrometheus(samples)
    fetch = Fetcher(client, start, end, "celery_", Filters())  # type: ignore[arg-type]
    (series,) = fetch.raw("task_succeeded_total")
    assert len(client.queries) > 8  # 2 days + lookback in 6 h pieces, for each metric
    in_window = [(t, v) for t, v in samples if start - 300 < t <= end]
    assert series["values"] == in_window
    assert fetch.counts("task_succeeded_total") == {(("job", "j"),): end // 15}
