"""A fast writer for the Prometheus text and OpenMetrics formats, from Family records.

prometheus_client's generic writer costs ~8.6 us a line, so a 100k-line exposition took most
of a second, and longer while the event thread competes for the GIL. This writer formats each
label set once per scrape and reuses it for all of a histogram's bucket lines.
Called from the HTTP threads at scrape time; holds no lock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from .families import Family


def render(families: Iterable[Family], openmetrics: bool = False) -> str:
    """Families as exposition text (without OpenMetrics' closing `# EOF`)."""
    out: list[str] = []
    append = out.append
    # The same (name, hostname, queue_name) set labels 8 counters and 3 histograms: escape it
    # once per scrape, not once per family.
    pairs_of: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
    for series in families:
        name, kind = series.name, series.kind
        sample_name = f"{name}_total" if kind == "counter" else name
        family_name = name if openmetrics else sample_name
        append(f"# HELP {family_name} {_escape_help(series.help, openmetrics)}\n")
        append(f"# TYPE {family_name} {kind}\n")
        label_names = series.labels
        for values, value in series.samples:
            pairs = _cached_pairs(pairs_of, label_names, values)
            block = f"{{{pairs}}}" if pairs else ""
            append(f"{sample_name}{block} {_number(value)}\n")
        for values, buckets, total in series.histograms:
            pairs = _cached_pairs(pairs_of, label_names, values)
            prefix = f'{name}_bucket{{{pairs}{"," if pairs else ""}le="'
            count = 0.0
            for le, cumulative in buckets:
                append(f'{prefix}{le}"}} {_number(cumulative)}\n')
                count = cumulative
            block = f"{{{pairs}}}" if pairs else ""
            append(f"{name}_count{block} {_number(count)}\n")
            append(f"{name}_sum{block} {_number(total)}\n")
    return "".join(out)


def _cached_pairs(
    cache: dict[tuple[tuple[str, ...], tuple[str, ...]], str],
    names: tuple[str, ...],
    values: Sequence[str],
) -> str:
    key = (names, tuple(values))
    pairs = cache.get(key)
    if pairs is None:
        pairs = cache[key] = ",".join(
            f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)
        )
    return pairs


def _escape_label(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def _number(value: float) -> str:
    number = float(value)
    if number.is_integer():  # False for NaN and infinities
        return f"{int(number)}.0"
    if math.isnan(number):
        return "NaN"
    if number in (float("inf"), float("-inf")):
        return "+Inf" if number > 0 else "-Inf"
    return repr(number)
