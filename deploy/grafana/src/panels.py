"""Panel helpers shared by every dashboard: one call makes a stat, a time series or a row.

Each helper fixes what all Celery panels share (the `${datasource}` variable on the panel and
every target, code-mode Prometheus targets with refIds A, B, C..., the stat and graph styles),
so a dashboard module only says what differs: title, description, queries, unit, thresholds.
"""

from __future__ import annotations

import string
from typing import TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Threshold steps as (color, lower bound); the first step's bound is None (from -inf).
Steps = list[tuple[str, float | None]]
GREEN: Steps = [("green", None)]
RED_BELOW_1: Steps = [("red", None), ("green", 1)]  # a count or a 0/1 that must be at least 1
ORANGE_FROM = "orange"

STAT_HEIGHT = 4
GRAPH_HEIGHT = 8


def target(expr: str, legend: str) -> prometheus_builders.Dataquery:
    """A range query in code mode; the panel helpers set its refId and datasource."""
    return (
        prometheus_builders.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .range()
        .editor_mode(prometheus_models.QueryEditorMode.CODE)
        .datasource(DATASOURCE)
    )


def up_down(down: str, up: str) -> list[dashboard_models.ValueMapping]:
    """Show 0 as `down` in red and 1 as `up` in green."""
    return [
        dashboard_models.ValueMap(
            options={
                "0": dashboard_models.ValueMappingResult(text=down, color="red", index=0),
                "1": dashboard_models.ValueMappingResult(text=up, color="green", index=1),
            }
        )
    ]


def _thresholds(steps: Steps) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_models.Threshold(color=color, value=value) for color, value in steps])
    )


Panel = TypeVar("Panel", stat_builders.Panel, timeseries_builders.Panel)


def _with_targets(panel: Panel, targets: tuple[prometheus_builders.Dataquery, ...]) -> Panel:
    for ref_id, query in zip(string.ascii_uppercase, targets, strict=False):
        panel.with_target(query.ref_id(ref_id))
    return panel


def stat(
    title: str,
    description: str,
    *targets: prometheus_builders.Dataquery,
    unit: str = "short",
    steps: Steps = GREEN,
    mappings: list[dashboard_models.ValueMapping] | None = None,
    decimals: int | None = None,
    width: int = 4,
) -> stat_builders.Panel:
    """A single number (the last non-null value), coloured by `steps`."""
    panel = (
        stat_builders.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .height(STAT_HEIGHT)
        .span(width)
        .unit(unit)
        .color_scheme(
            dashboard_builders.FieldColor().mode(dashboard_models.FieldColorModeId.THRESHOLDS)
        )
        .thresholds(_thresholds(steps))
        .mappings(mappings or [])
        .reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)
        )
        .color_mode(common_models.BigValueColorMode.VALUE)
        .graph_mode(common_models.BigValueGraphMode.AREA)
        .justify_mode(common_models.BigValueJustifyMode.AUTO)
        .orientation(common_models.VizOrientation.AUTO)
        .text_mode(common_models.BigValueTextMode.AUTO)
    )
    if decimals is not None:
        panel.decimals(decimals)
    return _with_targets(panel, targets)


def timeseries(
    title: str,
    description: str,
    *targets: prometheus_builders.Dataquery,
    unit: str = "short",
    min_value: float | None = None,
    max_value: float | None = None,
    stacked: bool = False,
    width: int = 12,
) -> timeseries_builders.Panel:
    """A line graph, one line per series (stacked and more filled if `stacked`)."""
    panel = (
        timeseries_builders.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .height(GRAPH_HEIGHT)
        .span(width)
        .unit(unit)
        .color_scheme(
            dashboard_builders.FieldColor().mode(dashboard_models.FieldColorModeId.PALETTE_CLASSIC)
        )
        .draw_style(common_models.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(20 if stacked else 10)
        .show_points(common_models.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(
            common_builders.StackingConfig()
            .mode(common_models.StackingMode.NORMAL if stacked else common_models.StackingMode.NONE)
            .group("A")
        )
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
    )
    if min_value is not None:
        panel.min(min_value)
    if max_value is not None:
        panel.max(max_value)
    return _with_targets(panel, targets)


def row(title: str) -> dashboard_builders.Row:
    """An expanded row; the panels added after it (until the next row) sit under it."""
    return dashboard_builders.Row(title)
