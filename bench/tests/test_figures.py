"""One place for each number: measured figures are stated once, at their source, and linked.

The sources: bench/README.md's Figures table (the mypyc gain, CPU per event) and the container
tier's table in docs/container.md (SIGTERM to exit, which that tier measures). Every other page
a user or operator reads (README.md, CHANGELOG.md, docs/*.md, deploy/kubernetes/**/*.yaml,
Dockerfile, setup.py) may cite such a figure only with the source's value and a link to it
within two lines; a different value, or the right value without the link, fails. Pure file
reads, no I/O beyond this checkout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH_README = REPO / "bench" / "README.md"
CONTAINER = REPO / "docs" / "container.md"

ROW = re.compile(r'^\| <a id="(fig-[\w-]+)"></a>\1 \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$', re.M)
GAIN = re.compile(r"\b(\d+\.\d+)x\b")
MICROS = re.compile(r"\b(\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?) ?(?:µs|us)\b")
SECONDS = re.compile(r"\b(\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?) ?s\b")
SIGTERM_ROW = re.compile(r"^\| SIGTERM to exit[^|]*\| ([^|]+) \|$", re.M)
# A mypyc gain is a ratio on a line about compiling; a CPU-per-event figure is a time in µs on
# a line about events; a SIGTERM time is a time in seconds on a line about SIGTERM.
ABOUT_COMPILING = re.compile(r"mypyc|compiled|CE_MYPYC", re.I)
ABOUT_EVENTS = re.compile(r"event", re.I)
ABOUT_SIGTERM = re.compile(r"SIGTERM", re.I)


@dataclass(frozen=True)
class Figure:
    kind: str  # "mypyc gain", "CPU per event", "SIGTERM time"
    values: frozenset[str]  # every value the source states for this kind
    source: str  # the page that states it, relative to the repository
    link: str  # what a citing page must name within two lines: the source and its anchor


def figures_table(text: str) -> dict[str, str]:
    """bench/README.md's Figures table: id -> value column."""
    return {fid: value.strip() for fid, _what, value, _when in ROW.findall(text)}


def sources() -> dict[str, Figure]:
    table = figures_table(BENCH_README.read_text())
    gains = {table["fig-mypyc-gain"], table["fig-mypyc-tracker"]}
    micros = {table["fig-cpu-per-event"], table["fig-cpu-per-event-rabbitmq"]}
    sigterm = SIGTERM_ROW.findall(CONTAINER.read_text())
    assert len(sigterm) == 1, "docs/container.md: no single 'SIGTERM to exit' row"
    return {
        "mypyc gain": Figure(
            "mypyc gain",
            frozenset(v for text in gains for v in GAIN.findall(text)),
            "bench/README.md",
            "bench/README.md#fig-mypyc",
        ),
        "CPU per event": Figure(
            "CPU per event",
            frozenset(v for text in micros for v in MICROS.findall(text)),
            "bench/README.md",
            "bench/README.md#fig-cpu-per-event",
        ),
        "SIGTERM time": Figure(
            "SIGTERM time",
            frozenset(SECONDS.findall(sigterm[0])),
            "docs/container.md",
            "container.md",
        ),
    }


def stated(line: str) -> list[tuple[str, str]]:
    """(kind, value) of every figure this line states."""
    out = []
    if ABOUT_COMPILING.search(line):
        out += [("mypyc gain", v) for v in GAIN.findall(line)]
    if ABOUT_EVENTS.search(line):
        out += [("CPU per event", v) for v in MICROS.findall(line)]
    if ABOUT_SIGTERM.search(line):
        out += [("SIGTERM time", v) for v in SECONDS.findall(line)]
    return out


def problems(name: str, text: str, figures: dict[str, Figure]) -> list[str]:
    """One line per figure a page states against its source, or restates without a link."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        for kind, value in stated(line):
            figure = figures[kind]
            if name == figure.source:
                continue
            near = "\n".join(lines[max(0, i - 2) : i + 3])
            where = f"{name}:{i + 1}: {kind} {value}"
            if value not in figure.values:
                out.append(f"{where} disagrees with {figure.link} ({sorted(figure.values)})")
            elif figure.link not in near:
                out.append(f"{where} restated without linking {figure.link}")
    return out


def pages() -> list[Path]:
    found = [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "Dockerfile", REPO / "setup.py"]
    found += sorted((REPO / "docs").glob("*.md"))
    found += sorted((REPO / "deploy" / "kubernetes").rglob("*.yaml"))
    return [p for p in found if p.is_file()]


def test_the_sources_state_each_figure() -> None:
    figures = sources()
    assert figures["mypyc gain"].values == {"1.30", "1.42"}
    assert "5.8" in figures["CPU per event"].values
    assert figures["SIGTERM time"].values


def test_every_figures_row_has_value_and_provenance() -> None:
    text = BENCH_README.read_text()
    rows = ROW.findall(text)
    assert len(rows) >= 10
    for fid, what, value, when in rows:
        assert what.strip() and value.strip(), fid
        # date and the commit measured at
        assert re.search(r"\b\d{4}-\d{2}-\d{2}, [0-9a-f]{7,}\b", when), fid
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "a figure id repeated"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_a_page_cites_figures_from_their_source(page: Path) -> None:
    name = str(page.relative_to(REPO))
    assert not problems(name, page.read_text(), sources())


def test_a_wrong_or_unlinked_figure_is_caught() -> None:
    """What the checks above would say on the deployment comment before figures had a home."""
    figures = sources()
    old = "# - cpu: 17-25 us of CPU per event; set requests.cpu to events/s x 25 us.\n"
    found = problems("deploy/kubernetes/base/deployment.yaml", old, figures)
    assert len(found) == 2 and all("disagrees" in p for p in found)
    unlinked = "Compiled with mypyc it is 1.30x faster.\n"
    assert problems("README.md", unlinked, figures) == [
        "README.md:1: mypyc gain 1.30 restated without linking bench/README.md#fig-mypyc"
    ]
    linked = "Compiled with mypyc: 1.30x ([bench](bench/README.md#fig-mypyc-gain)).\n"
    assert problems("README.md", linked, figures) == []
    sigterm = "On SIGTERM it exits within 3 s.\n"
    assert "disagrees" in problems("docs/runbook.md", sigterm, figures)[0]
