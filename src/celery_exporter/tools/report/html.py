"""The report as one self-contained HTML page: inline CSS and SVG charts, nothing fetched.

Charts (throughput, failures, backlog, runtime over the range) are drawn here as SVG polylines
from the report's chart points, so the page opens anywhere, offline, with no script at all.
"""

from __future__ import annotations

import html
import itertools
import statistics
from typing import Any

from ..timerange import iso
from .text import sections

WIDTH, HEIGHT, PAD_LEFT, PAD_RIGHT, PAD_Y = 720, 220, 56, 12, 22
COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "retried": "#ef6c00",
    "average": "#1565c0",
    "p95": "#6a1b9a",
}
PALETTE = ("#00838f", "#ad1457", "#5d4037", "#283593", "#9e9d24", "#4e342e")
CHARTS = (
    ("throughput", "Throughput (tasks/s)"),
    ("failures", "Failures and retries (per s)"),
    ("backlog", "Backlog (messages waiting, per queue)"),
    ("runtime", "Runtime (seconds; average and p95 of the tasks finished in each interval)"),
)
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:980px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left}th{background:#f4f4f4}.charts{display:grid;grid-template-columns:1fr;gap:12px}
figure{margin:0}figcaption{font-weight:600;margin:4px 0}.legend span{margin-right:14px}
.nodata{padding:12px;background:#fff3cd;border:1px solid #e0c36c}svg text{font-size:11px;fill:#555}
"""


def chart(chart_id: str, title: str, lines: dict[str, list[list[float]]], start: float,
          end: float) -> str:  # fmt: skip
    """One SVG line chart; each line is a <path> whose points are the data."""
    values = [v for points in lines.values() for _, v in points]
    top = max(values, default=0.0) or 1.0
    span = (end - start) or 1.0
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - 2 * PAD_Y

    def xy(t: float, v: float) -> str:
        x = PAD_LEFT + min(1.0, max(0.0, (t - start) / span)) * plot_w
        y = PAD_Y + plot_h - v / top * plot_h
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg id="chart-{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}">',
        f'<rect x="{PAD_LEFT}" y="{PAD_Y}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#ccc"/>',
        f'<text x="{PAD_LEFT - 4}" y="{PAD_Y + 4}" text-anchor="end">{top:.3g}</text>',
        f'<text x="{PAD_LEFT - 4}" y="{PAD_Y + plot_h}" text-anchor="end">0</text>',
        f'<text x="{PAD_LEFT}" y="{HEIGHT - 4}">{iso(start)}</text>',
        f'<text x="{WIDTH - PAD_RIGHT}" y="{HEIGHT - 4}" text-anchor="end">{iso(end)}</text>',
    ]
    # Points are evenly spaced; a wider gap means intervals without data: lift the pen there.
    # The median, not the smallest gap: the range's last, partial interval can end a moment
    # after the one before it, and would make every ordinary gap look like missing data.
    gaps = [b[0] - a[0] for points in lines.values() for a, b in itertools.pairwise(points)]
    spacing = statistics.median([g for g in gaps if g > 0] or [span])
    legend = []
    for i, (name, points) in enumerate(lines.items()):
        colour = COLOURS.get(name, PALETTE[i % len(PALETTE)])
        legend.append(f'<span><b style="color:{colour}">&#9632;</b> {html.escape(name)}</span>')
        if not points:
            continue
        d = "".join(
            ("M" if j == 0 or t - points[j - 1][0] > 1.5 * spacing else " L") + xy(t, v)
            for j, (t, v) in enumerate(points)
        )
        parts.append(
            f'<path class="series" data-series="{html.escape(name)}" d="{d}" fill="none" '
            f'stroke="{colour}" stroke-width="2.5"/>'
        )
        # A point with no neighbour draws no line: show it as a dot.
        for j, (t, v) in enumerate(points):
            alone_before = j == 0 or t - points[j - 1][0] > 1.5 * spacing
            alone_after = j == len(points) - 1 or points[j + 1][0] - t > 1.5 * spacing
            if alone_before and alone_after:
                x, y = xy(t, v).split(",")
                parts.append(f'<circle cx="{x}" cy="{y}" r="3.5" fill="{colour}"/>')
    if not values:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text>')
    parts.append("</svg>")
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>{''.join(parts)}"
        f'<div class="legend">{"".join(legend)}</div></figure>'
    )


def as_html(report: dict[str, Any]) -> str:
    head, body = sections(report)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(head[0])}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(head[0])}</h1>",
    ]
    out += [f"<p>{html.escape(line)}</p>" for line in head[1:2]]
    if not report["has_data"]:
        out.append(f'<p class="nodata">{html.escape(head[2])}</p></body></html>')
        return "\n".join(out)
    start = _ts(report["range"]["start"])
    end = _ts(report["range"]["end"])
    out.append('<h2>Charts</h2><div class="charts">')
    for chart_id, title in CHARTS:
        out.append(chart(chart_id, title, report["charts"][chart_id], start, end))
    out.append("</div>")
    for name, content in body:
        out.append(f"<h2>{html.escape(name)}</h2>")
        if isinstance(content, tuple):
            header, rows = content
            if not rows:
                out.append("<p>(none)</p>")
                continue
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header))
            out += [
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in rows
            ]
            out.append("</table>")
        else:
            out.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in content) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def _ts(text: str) -> float:
    from ..timerange import parse_time

    return parse_time("range", text)
