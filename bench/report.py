"""What every bench mode prints and keeps: number formats, Markdown tables, the raw JSON.

Pure formatting and one file write per run (under bench/results/, git-ignored); no thread of
its own.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def fmt_rate(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def fmt_us(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def fmt_ms(value: float | None) -> str:
    if value is not None and math.isinf(value):
        return "no answer"  # the scrape timed out
    return "-" if value is None or math.isnan(value) else f"{value * 1000:.1f} ms"


def fmt_mb(value: float | None) -> str:
    return "-" if not value else f"{value / 2**20:.0f} MB"


def markdown_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """`rows` (the first is the header) as the lines of a Markdown table, columns padded."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append("| " + " | ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return out


def save(prefix: str, report: dict[str, Any]) -> Path:
    """The run's raw numbers as bench/results/<prefix>-<time>.json."""
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{prefix}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    return out
