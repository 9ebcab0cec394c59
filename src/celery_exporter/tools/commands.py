"""Run an operator subcommand by name, with the daemon's rule for errors: one line, never a trace.

cli.py imports this module only when the first argument names a subcommand, so the daemon's
start-up loads nothing from this package.
"""

from __future__ import annotations

import sys
from importlib import import_module

import click

PROG = "celery-exporter"


def run(name: str, module: str, argv: list[str]) -> None:
    """Run the click `command` of `module` as `celery-exporter NAME ARGV...`."""
    command: click.Command = import_module(module).command
    try:
        command.main(args=argv, prog_name=f"{PROG} {name}", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"{PROG} {name}: error: {exc.format_message()}".replace("\n", " "), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
