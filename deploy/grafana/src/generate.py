"""Generate deploy/grafana/dashboards/*.json from code, with Grafana's Foundation SDK.

    python deploy/grafana/src/generate.py          # rewrite the JSON files
    python deploy/grafana/src/generate.py --check  # exit 1 if a committed file is out of date

The SDK (`grafana-foundation-sdk`, build 10.4 to match the compose stack's Grafana) is in the
`test` extra: `pip install -e '.[test]'`. Never edit the JSON by hand; tests/deploy/
test_dashboards.py fails when it differs from what this script writes.

HOW TO ADD A PANEL (a few lines in overview.py, tasks.py or workers.py; the metric name here
is for illustration):

    .with_panel(
        timeseries(
            "Oldest task age",                                   # title
            "Seconds the oldest message has waited in each queue.",  # description (required)
            target(
                aggregate("max", gauge("celery_queue_oldest_age_seconds", QUEUE), ("queue_name",)),
                "{{queue_name}}",                                # legend
            ),
            unit="s",
        )
    )

- Queries: build them with queries.py. `gauge(metric, QUEUE)` and `rate(metric, QUEUE, TASK)`
  select `metric{job=~"$job", queue_name=~"$queue", ...}` and deduplicate the replicas of an HA
  pair (`max without (instance, pod)`); aggregate only what they return (`aggregate("sum",
  ..., by)`), so that two exporters on one broker read like one. Recording rules (`celery:...`)
  are already deduplicated: `select("celery:...", QUEUE, TASK)`.
- Panels: `stat(...)` (width 4 by default, `steps=` thresholds, `mappings=up_down(...)`) and
  `timeseries(...)` (width 12 by default, `min_value=`, `stacked=True`). Panels fill rows of 24
  columns left to right; `row("Title")` starts a new row. Fill each line to 24 (a panel that
  does not fit is not wrapped; test_dashboards.py checks every line): change `width=` or move a
  panel. Every panel needs a description; every selector needs the job filter
  (`select`/`gauge`/`rate` add it). A stat coloured for an alert turns red at the alert's
  threshold (test_dashboards.py compares it with the `celery:alert_threshold:...` rule).
- Then run this script, then `pytest tests/deploy/test_dashboards.py tests/deploy/test_e2e.py
  tests/deploy/test_ha.py`: the end-to-end test runs every panel query against a real
  Prometheus and fails on no data (extend tests/deploy/workload.py if the workload never makes
  your metric), and the HA test checks that a pair of exporters reads like one.
- Never change a dashboard's UID: alert annotations link to /d/<uid>.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import overview
import tasks
import workers
from board import render
from grafana_foundation_sdk.builders.dashboard import Dashboard

OUTPUT = Path(__file__).resolve().parents[1] / "dashboards"
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    f"{overview.UID}.json": overview.dashboard,
    f"{tasks.UID}.json": tasks.dashboard,
    f"{workers.UID}.json": workers.dashboard,
}


def generated() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="directory to write to")
    args = parser.parse_args(argv)
    stale = []
    for name, text in generated().items():
        path = args.output / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
    extra = sorted({p.name for p in args.output.glob("*.json")} - set(DASHBOARDS))
    if args.check and (stale or extra):
        print(
            f"out of date: {', '.join(stale + extra)}; run python deploy/grafana/src/generate.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
