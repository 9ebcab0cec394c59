"""The README's metric and flag tables say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import click

from celery_exporter.cli import command
from celery_exporter.exposition.catalogue import CATALOGUE

README = (Path(__file__).parents[2] / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(title: str) -> list[list[str]]:
    rows = []
    for line in section(title).splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_metric_table_matches_the_catalogue() -> None:
    documented = {
        row[0].strip("`"): (row[1], tuple(re.findall(r"`(\w+)`", row[2])))
        for row in table_rows("Metrics")
    }
    expected = {spec.exposed_name("celery_"): (spec.kind, spec.labels) for spec in CATALOGUE}
    assert documented == expected


def test_flag_table_lists_every_option_with_its_environment_variable() -> None:
    documented = {}
    for row in table_rows("Flags"):
        flags = re.findall(r"`(-[-\w]+)`", row[0])
        documented[flags[-1]] = row[1].strip("`")
    options = {
        param.opts[-1]: f"CE_{param.name.upper()}"
        for param in command.params
        if isinstance(param, click.Option)
        and param.name
        and not param.hidden
        and param.name != "version"
    }
    assert documented == options


def test_readme_gives_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    """The run-for-real command comes first, for users; the test command is for contributors,
    in Development, so the first section lists no test packages before anything is installed."""
    run, development = section("Install and run"), section("Development")
    assert "scripts/demo.sh" in run and "scripts/test.sh" not in run
    assert "rabbitmq-server" not in run and "chromium" not in run
    assert "```sh\nscripts/test.sh\n```" in development
    assert README.index("\n## Install and run\n") < README.index("\n## Development\n")
    ci = (Path(__file__).parents[2] / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
