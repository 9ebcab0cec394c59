"""The `celery-exporter` command: flags and CE_* environment variables -> Config -> run.

With no subcommand it is the daemon (the drop-in form). A first argument naming a subcommand
(`check`, `report`) runs that operator command from the tools package instead, imported only
then, so the daemon's start-up never loads it.

Every option is also read from CE_<OPTION> (repeatable options: space-separated items), as in
danihodovic/celery-exporter. Any bad input ends with one line on stderr and exit 2; a start-up
failure such as a port in use with exit 1. No logic lives here beyond parsing.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from . import __version__
from .config import (
    Config,
    ConfigError,
    check_durations,
    parse_app,
    parse_broker_url,
    parse_buckets,
    parse_disabled_metrics,
    parse_key_values,
    parse_list,
    parse_log_level,
    parse_metric_prefix,
    parse_static_labels,
)
from .exposition.catalogue import DEFAULT_QUEUE_WAIT_BUCKETS, DEFAULT_RUNTIME_BUCKETS

PROG = "celery-exporter"
# Operator commands: name -> (module holding a click `command`, one line for --help).
SUBCOMMANDS = {
    "check": ("celery_exporter.tools.check.command", "Verify the whole monitoring stack."),
    "report": ("celery_exporter.tools.report.command", "Task performance report from Prometheus."),
}


class DaemonCommand(click.Command):
    """The daemon's command, whose help also lists the subcommands (a group whose default is it)."""

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(PROG, "[OPTIONS]")
        formatter.write_usage(PROG, "COMMAND [ARGS]...", prefix="   or: ")

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands (`celery-exporter COMMAND --help` for their options)"):
            formatter.write_dl([(name, text) for name, (_, text) in SUBCOMMANDS.items()])
        super().format_epilog(ctx, formatter)


def _join(bounds: tuple[float, ...]) -> str:
    return ",".join("inf" if b == float("inf") else f"{b:g}" for b in bounds)


def _seconds(minimum: float = 0.0) -> click.FloatRange:
    return click.FloatRange(min=minimum)


@click.command(
    cls=DaemonCommand, context_settings={"auto_envvar_prefix": "CE", "show_default": True}
)
@click.option(
    "--broker-url", required=True, help="Celery broker URL (redis, rediss, sentinel, amqp, sqs...)."
)
@click.option(
    "--broker-transport-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="Broker transport option; repeatable. Digits become int, JSON is decoded.",
)
@click.option(
    "--broker-ssl-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="broker_use_ssl option; repeatable.",
)
@click.option(
    "--accept-content",
    default=None,
    help="Comma list of accepted event serializers, e.g. json,pickle.",
)
@click.option(
    "--retry-interval",
    type=_seconds(),
    default=1.0,
    help="Base seconds between reconnects (capped exponential backoff; 0: the default).",
)
@click.option("--host", default="0.0.0.0", help="Listen address.")
@click.option("--port", type=click.IntRange(1, 65535), default=9808, help="Listen port.")
@click.option(
    "--buckets", default=_join(DEFAULT_RUNTIME_BUCKETS), help="Runtime histogram buckets (seconds)."
)
@click.option(
    "--queue-wait-buckets",
    default=_join(DEFAULT_QUEUE_WAIT_BUCKETS),
    help="Queue-wait histogram buckets (seconds).",
)
@click.option("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", help="Log line format."
)
@click.option(
    "--worker-timeout",
    type=_seconds(),
    default=60.0,
    help="Seconds without a heartbeat before celery_worker_up reads 0 (0 disables).",
)
@click.option(
    "--purge-offline-worker-metrics",
    type=_seconds(),
    default=3600.0,
    help="Seconds without a heartbeat, or since its goodbye, before a worker's series are removed "
    "(0 disables).",
)
@click.option(
    "--generic-hostname-task-sent-metric",
    is_flag=True,
    help='Label task-sent counters hostname="generic".',
)
@click.option(
    "--generic-hostname-worker-task-metric",
    is_flag=True,
    help='Label other task counters and histograms hostname="generic".',
)
@click.option("-Q", "--queues", default=None, help="Comma list of queues to report from the start.")
@click.option(
    "--metric-prefix", default="celery_", help="Replaces the celery_ prefix of every metric."
)
@click.option(
    "--default-queue-name", default="celery", help="queue_name when the queue cannot be resolved."
)
@click.option(
    "--static-label",
    multiple=True,
    metavar="KEY=VALUE",
    help="Label added to every metric; repeatable.",
)
@click.option(
    "--queue-poll-interval",
    type=_seconds(0.1),
    default=5.0,
    help="Seconds between broker queue-length polls.",
)
@click.option(
    "--broker-timeout",
    type=_seconds(0.1),
    default=3.0,
    help="Connect and socket timeout (seconds) for broker polls.",
)
@click.option(
    "--inspect-interval",
    type=_seconds(),
    default=30.0,
    help="Seconds between inspect rounds (active_queues, stats); 0 disables.",
)
@click.option(
    "--inspect-timeout",
    type=_seconds(0.1),
    default=2.0,
    help="Seconds to wait for workers' inspect replies.",
)
@click.option(
    "--queue-expiry",
    type=_seconds(),
    default=3600.0,
    help="Seconds after which a discovered queue nobody consumes is dropped.",
)
@click.option(
    "--max-task-names",
    type=click.IntRange(min=1),
    default=1000,
    help="Distinct task names before the rest are folded into __overflow__.",
)
@click.option(
    "--max-workers",
    type=click.IntRange(min=1),
    default=1000,
    help="Distinct workers (and hosts) before the rest are folded into __overflow__.",
)
@click.option(
    "--max-tracked-tasks",
    type=click.IntRange(min=1),
    default=100_000,
    help="In-flight tasks remembered (uuid -> name, queue, times).",
)
@click.option(
    "--disable-metric",
    multiple=True,
    metavar="NAME",
    help="Metric family to leave out of the exposition; repeatable.",
)
@click.option(
    "--web-config-file", default=None, help="Exporter-toolkit web config (TLS, basic auth)."
)
@click.option(
    "--web-health-without-auth",
    is_flag=True,
    help="Serve /healthz, /readyz and /health without basic auth.",
)
@click.option(
    "-A",
    "--app",
    default=None,
    metavar="MODULE:ATTRIBUTE",
    help="Your Celery app, as for celery -A: its beat_schedule is read once at start-up for "
    "the periodic-task metrics.",
)
@click.version_option(__version__, prog_name=PROG)
def command(**options: Any) -> None:
    """Prometheus exporter for Celery: task, worker and queue metrics on /metrics."""
    config = build_config(options)
    # Imported here so that --help and flag errors answer without loading celery and kombu.
    from .app import Exporter, StartupError
    from .logs import setup_logging

    setup_logging(config.log_level, config.log_format)
    try:
        exporter = Exporter(config)
    except StartupError as exc:
        _fail(str(exc), code=1)
    exporter.run()


def build_config(options: dict[str, Any]) -> Config:
    prefix = parse_metric_prefix(options["metric_prefix"])
    config = Config(
        broker_url=parse_broker_url(options["broker_url"]),
        broker_transport_options=parse_key_values(
            "--broker-transport-option", options["broker_transport_option"]
        ),
        broker_ssl_options=parse_key_values("--broker-ssl-option", options["broker_ssl_option"]),
        accept_content=parse_list(options["accept_content"]) or None,
        retry_interval=options["retry_interval"] or 1.0,
        host=options["host"],
        port=options["port"],
        runtime_buckets=parse_buckets("--buckets", options["buckets"]),
        queue_wait_buckets=parse_buckets("--queue-wait-buckets", options["queue_wait_buckets"]),
        log_level=parse_log_level(options["log_level"]),
        log_format=options["log_format"],
        worker_timeout=options["worker_timeout"],
        purge_offline_worker_metrics=options["purge_offline_worker_metrics"],
        generic_hostname_task_sent_metric=options["generic_hostname_task_sent_metric"],
        generic_hostname_worker_task_metric=options["generic_hostname_worker_task_metric"],
        queues=parse_list(options["queues"]),
        metric_prefix=prefix,
        default_queue_name=options["default_queue_name"],
        static_labels=parse_static_labels(options["static_label"]),
        queue_poll_interval=options["queue_poll_interval"],
        broker_timeout=options["broker_timeout"],
        inspect_interval=options["inspect_interval"],
        inspect_timeout=options["inspect_timeout"],
        queue_expiry=options["queue_expiry"],
        max_task_names=options["max_task_names"],
        max_workers=options["max_workers"],
        max_tracked_tasks=options["max_tracked_tasks"],
        disabled_metrics=parse_disabled_metrics(options["disable_metric"], prefix),
        web_config_file=options["web_config_file"],
        web_health_without_auth=options["web_health_without_auth"],
        app=parse_app(options["app"]),
    )
    check_durations(config)
    return config


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line and a non-zero exit for any bad input, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in SUBCOMMANDS:
        from .tools.commands import run

        run(args[0], SUBCOMMANDS[args[0]][0], args[1:])
        return
    try:
        command.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message().replace("\n", " "))
    except ConfigError as exc:
        _fail(str(exc))
    except click.exceptions.Abort:
        sys.exit(130)
