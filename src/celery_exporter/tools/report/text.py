"""The report as plain text (terminals) and Markdown (tickets): the same sections and tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Table = tuple[list[str], list[list[str]]]


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value}{unit}"
    return f"{value:.3g}{unit}" if abs(value) < 1000 else f"{value:.0f}{unit}"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.0f} s"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def sections(report: dict[str, Any]) -> tuple[list[str], list[tuple[str, Table | list[str]]]]:
    """(heading lines, [(section title, table or lines)]) shared by text and Markdown."""
    r = report["range"]
    head = [
        f"Celery task report {r['start']} to {r['end']} ({_duration(r['seconds'])})",
        f"Source: {report['prometheus_url']}" + _filters(report["filters"]),
    ]
    if not report["has_data"]:
        head.append(
            "No data: Prometheus has no celery-exporter series for this range and these filters. "
            "Nothing below would be a fact, so nothing is shown."
        )
        return head, []
    t = report["totals"]
    runtime = report["runtime_seconds"]
    tp = report["throughput"]
    summary = [
        [kind, str(t[kind])] for kind in ("sent", "received", "succeeded", "failed", "retried",
                                          "rejected", "revoked")
    ] + [
        ["failure ratio", _pct(report["failure_ratio"])],
        ["runtime average / p50 / p95 / p99 (s)", " / ".join(
            _num(runtime[k]) for k in ("average", "p50", "p95", "p99"))],
        ["throughput average (tasks/s)", _num(tp["average_per_second"])],
        ["throughput peak (tasks/s)", f"{_num(tp['peak_per_second'])} at {tp['peak_at'] or '-'}"],
        ["workers busy (share of pool)", _pct(report["busy_ratio"])],
    ]  # fmt: skip
    recs = [
        f"{rec['message']} [{rec['figure']['name']} {_num(rec['figure']['value'])} "
        f"{rec['threshold']['comparison']} {_num(rec['threshold']['value'])}]"
        for rec in report["recommendations"]
    ] or ["None: no figure crossed its threshold."]
    body: list[tuple[str, Table | list[str]]] = [
        ("Summary", (["figure", "value"], summary)),
        ("Recommendations", recs),
        ("Queues", (["queue", "completed", "peak backlog", "wait p95 (s)"], [
            [q["queue"], str(q["completed"]), _num(q["peak_backlog"]),
             _num(q["queue_wait_p95_seconds"])] for q in report["queues"]])),
        ("Workers", (["worker", "availability"], [
            [w["worker"], _pct(w["availability"])] for w in report["workers"]])),
        ("Top failing tasks", (["task", "failed", "ratio", "main exceptions"], [
            [f["task"], str(f["failed"]), _pct(f["failure_ratio"]),
             ", ".join(f"{e['exception']} ({e['count']})" for e in f["exceptions"])]
            for f in report["top_failing_tasks"]])),
        ("Slowest tasks", (["task", "succeeded", "avg (s)", "p95 (s)"], [
            [s["task"], str(s["succeeded"]), _num(s["runtime_average_seconds"]),
             _num(s["runtime_p95_seconds"])] for s in report["slowest_tasks"]])),
        ("Tasks", (["task", "succeeded", "failed", "retried"], [
            [x["task"], str(x["succeeded"]), str(x["failed"]), str(x["retried"])]
            for x in report["tasks"]])),
    ]  # fmt: skip
    return head, body


def _filters(filters: dict[str, list[str]]) -> str:
    used = [f"{k}={'|'.join(v)}" for k, v in filters.items() if v]
    return f"; filters {', '.join(used)}" if used else ""


def _render(report: dict[str, Any], title: Callable[[str], str], table: Callable[[Table], str],
            item: Callable[[str], str]) -> str:  # fmt: skip
    head, body = sections(report)
    out = [*head]
    for name, content in body:
        out += ["", title(name)]
        if isinstance(content, tuple):
            out.append(table(content) if content[1] else "(none)")
        else:
            out += [item(line) for line in content]
    return "\n".join(out) + "\n"


def as_text(report: dict[str, Any]) -> str:
    def table(t: Table) -> str:
        header, rows = t
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in [header, *rows]]  # fmt: skip
        return "\n".join(lines)

    return _render(report, lambda n: f"{n}\n{'-' * len(n)}", table, lambda s: f"- {s}")


def as_markdown(report: dict[str, Any]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    def table(t: Table) -> str:
        header, rows = t
        lines = [_row(header, cell), _row(["---"] * len(header), str)]
        lines += [_row(r, cell) for r in rows]
        return "\n".join(lines)

    head, _ = sections(report)
    text = _render(report, lambda n: f"## {n}\n", table, lambda s: f"- {s}")
    return text.replace(head[0], f"# {head[0]}", 1)


def _row(cells: Sequence[str], fmt: Callable[[str], str]) -> str:
    return "| " + " | ".join(fmt(c) for c in cells) + " |"
