"""The fast writer exposes exactly what prometheus_client's own writer does, in both formats."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from celery_exporter.exposition.catalogue import FamilyFactory
from celery_exporter.exposition.families import Family
from celery_exporter.exposition.render import render
from celery_exporter.exposition.tracker_collector import TrackerCollector
from tests.support.eventscript import Harness, failed, heartbeat, received, sent, started, succeeded

T0 = 1_700_000_000.0
Parsed = dict[str, tuple[str, str, set[tuple[str, tuple[tuple[str, str], ...], float]]]]


def populated() -> tuple[Harness, TrackerCollector]:
    h = Harness(static_labels=(("env", "prod"),))
    names = ["app.plain", 'app.quote"d', "app.back\\slash", "app.new\nline", "app.\u2603"]
    for i, name in enumerate(names):
        host = f"celery@host-{i % 2}"
        h.feed(sent(f"s{i}", name, T0), received(f"s{i}", name, T0, hostname=host))
        h.feed(started(f"s{i}", T0 + 1, hostname=host))
        h.feed(succeeded(f"s{i}", T0 + 2, runtime=0.1 * (i + 1), hostname=host))
        h.feed(received(f"f{i}", name, T0, hostname=host), started(f"f{i}", T0, hostname=host))
        h.feed(failed(f"f{i}", T0 + 0.5, hostname=host))
    h.feed(heartbeat("celery@host-0", T0, active=2, processed=7))
    factory = FamilyFactory("celery_", (("env", "prod"),))
    collector = TrackerCollector(
        h.tracker, factory, h.config.runtime_buckets, h.config.queue_wait_buckets
    )
    return h, collector


def parsed(text: str, openmetrics: bool) -> Parsed:
    parse = parse_openmetrics if openmetrics else parse_text
    return {
        family.name: (
            family.type,
            family.documentation,
            {(s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples},
        )
        for family in parse(text)
    }


@pytest.mark.parametrize("openmetrics", [False, True])
def test_fast_writer_matches_prometheus_client(openmetrics: bool) -> None:
    h, collector = populated()
    fast = render(collector.families(), openmetrics)
    reference_registry = h.registry
    if openmetrics:
        reference = generate_openmetrics(reference_registry).decode()
        fast += "# EOF\n"
    else:
        reference = generate_latest(reference_registry).decode()
    ours, theirs = parsed(fast, openmetrics), parsed(reference, openmetrics)
    assert ours == theirs
    samples = sum(len(family[2]) for family in ours.values())
    assert samples > 200  # the comparison covered real data, not two empty pages
    assert any("\u2603" in str(family[2]) for family in ours.values())


def test_numbers_are_written_as_prometheus_reads_them() -> None:
    series = Family("x", "gauge", "help", ("a",))
    for value in (0, 1.5, 1e21, math.inf, -math.inf, math.nan, 1_795_338_224.9152093):
        series.add_metric((str(value),), value)
    values = {
        s.labels["a"]: s.value for family in parse_text(render([series])) for s in family.samples
    }
    assert values["0"] == 0 and values["1.5"] == 1.5 and values["1e+21"] == 1e21
    assert values["inf"] == math.inf and values["-inf"] == -math.inf
    assert math.isnan(values["nan"])
    assert values["1795338224.9152093"] == 1_795_338_224.9152093
