"""The HTML report's SVG line chart: where the pen lifts, and where it must not."""

from __future__ import annotations

import re

from celery_exporter.tools.report.html import chart


def path_moves(svg: str, series: str) -> int:
    """How many separate strokes (M commands) the series' path has."""
    found = re.search(rf'data-series="{series}" d="([^"]*)"', svg)
    assert found, svg
    return found.group(1).count("M")


def test_a_short_last_interval_does_not_break_the_line_into_dots() -> None:
    # Points every 1 s, and the range's last, partial interval 0.2 s after the one before.
    points = [[float(t), 1.0] for t in range(10)] + [[9.2, 2.0]]
    svg = chart("throughput", "Throughput", {"succeeded": points}, 0.0, 9.2)
    assert path_moves(svg, "succeeded") == 1
    assert "<circle" not in svg


def test_intervals_without_data_lift_the_pen() -> None:
    points = [[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [6.0, 1.0], [7.0, 1.0]]
    svg = chart("throughput", "Throughput", {"succeeded": points}, 0.0, 7.0)
    assert path_moves(svg, "succeeded") == 2
