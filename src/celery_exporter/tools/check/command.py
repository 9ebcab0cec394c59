"""`celery-exporter check`: verify each link of the monitoring chain, in the order data flows.

Exit 0 when every check passes (skipped ones included), 1 when one fails, 2 for bad input.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from ...config import ConfigError, parse_broker_url, parse_list, parse_metric_prefix
from ..http import HttpError
from ..prometheus import PrometheusClient
from ..shipped import DATASOURCE_UID, EXPORTER_JOB, SEVERITIES
from .alertmanager import check_alertmanager
from .broker import QUEUES, check_broker
from .exporter import check_exporter
from .grafana import CredentialsError, auth_headers, check_grafana
from .prometheus import check_prometheus
from .results import Link, Result, as_json, as_text, exit_code, run_links, skip

# The whole command ends within this many seconds, whatever the servers do.
DEADLINE = 15.0


def _http_url(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1]) == 0:
        raise click.BadParameter(f"{value!r} is not an http(s) URL", param_hint=option)
    return value.rstrip("/")


@click.command(
    name="check",
    context_settings={"auto_envvar_prefix": "CE", "show_default": True},
)
@click.option("--broker-url", help="Celery broker URL: connect, listen to workers' events.")
@click.option(
    "-Q",
    "--queues",
    help="Comma list of queues whose length the broker check reads, as the exporter's -Q "
    "(default: celery).",
)
@click.option("--exporter-url", help="celery-exporter's base URL, e.g. http://host:9808.")
@click.option("--prometheus-url", help="Prometheus's base URL, e.g. http://host:9090.")
@click.option("--alertmanager-url", help="Alertmanager's base URL, e.g. http://host:9093.")
@click.option("--grafana-url", help="Grafana's base URL, e.g. http://host:3000.")
@click.option(
    "--grafana-credentials-file",
    help="File holding a Grafana token or user:password (else CE_GRAFANA_TOKEN, or "
    "CE_GRAFANA_USER and CE_GRAFANA_PASSWORD, from the environment).",
)
@click.option(
    "--grafana-datasource-uid", default=DATASOURCE_UID, help="uid of the Prometheus data source."
)
@click.option(
    "--scrape-job", default=EXPORTER_JOB, help="Prometheus job of the exporter (without URL)."
)
@click.option("--metric-prefix", default="celery_", help="The exporter's --metric-prefix.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 10),
    default=3.0,
    envvar="CE_CHECK_TIMEOUT",
    help="Seconds per request.",
)
@click.option(
    "--events-window",
    type=click.FloatRange(1, 10),
    default=5.0,
    help="Seconds to listen to the broker's event stream.",
)
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="CE_CHECK_OUTPUT",
    help="text for people, json for scripts and CI.",
)
def command(**options: Any) -> None:
    """Verify the monitoring stack: broker, workers, exporter, Prometheus, Alertmanager, Grafana.

    Every option is also read from CE_<OPTION> (CE_PROMETHEUS_URL...), except --output and
    --timeout: CE_CHECK_OUTPUT and CE_CHECK_TIMEOUT. Exit 0: all passed; 1: a check failed;
    2: bad input.
    """
    started = time.monotonic()
    links = build_links(options, dict(os.environ))
    results = run_links(links, DEADLINE)
    seconds = time.monotonic() - started
    render = as_json if options["output"] == "json" else as_text
    click.echo(render(results, seconds))
    sys.exit(exit_code(results))


def build_links(options: dict[str, Any], env: dict[str, str]) -> list[Link]:
    """One Link per link of the chain, in data-flow order; bad input raises (exit 2)."""
    try:
        broker = parse_broker_url(options["broker_url"]) if options["broker_url"] else None
        prefix = parse_metric_prefix(options["metric_prefix"])
        headers = auth_headers(env, options["grafana_credentials_file"])
    except (ConfigError, CredentialsError) as exc:
        raise click.UsageError(str(exc)) from None
    exporter = _http_url(options["exporter_url"], "--exporter-url")
    prometheus = _http_url(options["prometheus_url"], "--prometheus-url")
    alertmanager = _http_url(options["alertmanager_url"], "--alertmanager-url")
    grafana = _http_url(options["grafana_url"], "--grafana-url")
    if not any((broker, exporter, prometheus, alertmanager, grafana)):
        raise click.UsageError(
            "nothing to check: give at least one of --broker-url, --exporter-url, "
            "--prometheus-url, --alertmanager-url, --grafana-url"
        )
    timeout: float = options["timeout"]
    queues = parse_list(options.get("queues")) or QUEUES

    def missing(link: str, option: str) -> Link:
        return Link(link, lambda: [skip(link, "-", f"not checked: no {option}")])

    def alert_labels() -> list[dict[str, str]]:
        """The labels of the alerts Prometheus has loaded, else one per shipped severity."""
        if prometheus:
            try:
                labels = [
                    {"alertname": rule["name"], **rule.get("labels", {})}
                    for group in PrometheusClient(prometheus, timeout).rule_groups()
                    for rule in group.get("rules", [])
                    if rule.get("type") == "alerting"
                ]
                if labels:
                    return labels
            except HttpError:
                pass
        return [{"severity": severity} for severity in SEVERITIES]

    return [
        Link("broker", lambda: check_broker(broker, timeout, options["events_window"], queues))
        if broker
        else missing("broker", "--broker-url"),
        Link("exporter", lambda: check_exporter(exporter, timeout, prefix))
        if exporter
        else missing("exporter", "--exporter-url"),
        Link(
            "prometheus",
            lambda: check_prometheus(prometheus, timeout, exporter, options["scrape_job"]),
        )
        if prometheus
        else missing("prometheus", "--prometheus-url"),
        Link("alertmanager", lambda: check_alertmanager(alertmanager, timeout, alert_labels()))
        if alertmanager
        else missing("alertmanager", "--alertmanager-url"),
        Link(
            "grafana",
            lambda: check_grafana(grafana, timeout, headers, options["grafana_datasource_uid"]),
        )
        if grafana
        else missing("grafana", "--grafana-url"),
    ]


__all__ = ["Result", "build_links", "command"]
