"""`celery-exporter report`: a task performance report over a time range, from Prometheus.

Exit 0 with the report (also when the range has no data: the report says so), 1 when Prometheus
cannot be reached or fails a query, 2 for bad input.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from ...config import ConfigError, parse_metric_prefix
from ..http import HttpError
from ..prometheus import PrometheusClient
from ..timerange import RangeError, resolve
from .data import build_report
from .fetch import Filters
from .html import as_html
from .text import as_markdown, as_text

RENDERERS = {
    "text": as_text,
    "markdown": as_markdown,
    "html": as_html,
    "json": lambda report: json.dumps(report, indent=2) + "\n",
}


@click.command(name="report", context_settings={"auto_envvar_prefix": "CE", "show_default": True})
@click.option(
    "--prometheus-url", required=True, help="Prometheus's base URL, e.g. http://host:9090."
)
@click.option("--since", help="Range ending at --end (default now): 90m, 24h, 7d. Default 24h.")
@click.option("--start", help="Range start: 2024-05-01T00:00:00Z (UTC if no zone) or Unix seconds.")
@click.option("--end", help="Range end, same forms as --start. Default now.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(sorted(RENDERERS)),
    default="text",
    envvar="CE_REPORT_FORMAT",
    help="text for terminals, markdown for tickets, html for people, json for machines.",
)
@click.option("--output", type=click.Path(dir_okay=False), envvar="CE_REPORT_OUTPUT",
              help="Write the report to this file instead of stdout.")  # fmt: skip
@click.option("--job", multiple=True, help="Only this Prometheus job; repeatable.")
@click.option("--queue", multiple=True, help="Only this queue (queue_name); repeatable.")
@click.option("--task", multiple=True, help="Only this task name; repeatable.")
@click.option("--metric-prefix", default="celery_", help="The exporter's --metric-prefix.")
@click.option("--timeout", type=click.FloatRange(0.5, 300), default=30.0,
              envvar="CE_REPORT_TIMEOUT", help="Seconds per Prometheus query.")  # fmt: skip
def command(**options: Any) -> None:
    """Task performance report over a time range, computed from Prometheus.

    Every option is also read from CE_<OPTION> (CE_PROMETHEUS_URL, CE_SINCE...), except --format,
    --output and --timeout: CE_REPORT_FORMAT, CE_REPORT_OUTPUT and CE_REPORT_TIMEOUT.
    """
    try:
        start, end = resolve(options["since"], options["start"], options["end"], time.time())
        prefix = parse_metric_prefix(options["metric_prefix"])
    except (RangeError, ConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    url = options["prometheus_url"]
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--prometheus-url")
    filters = Filters(tuple(options["job"]), tuple(options["queue"]), tuple(options["task"]))
    client = PrometheusClient(url, options["timeout"])
    try:
        report = build_report(client, start, end, filters, prefix)
    except HttpError as exc:
        raise click.ClickException(f"cannot build the report: {exc}") from None
    text = RENDERERS[options["output_format"]](report)
    if options["output"]:
        try:
            Path(options["output"]).write_text(text)
        except OSError as exc:
            raise click.ClickException(f"--output {options['output']}: {exc.strerror}") from None
    else:
        sys.stdout.write(text)
