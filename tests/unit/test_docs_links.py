"""The documentation's relative links and the source files it names exist.

Every relative Markdown link in the README, docs/, deploy/kubernetes/README.md and
bench/README.md must name a file or directory of this checkout, and an anchor (`#...`) into a
Markdown file must name one of its headings, slugged as GitHub slugs them. Every `*.py` path the
same pages name must be a file of this checkout, so a page cannot keep a module's old name after
the module moved. Pure file reads; no network (absolute URLs are not followed).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [
        REPO / "README.md",
        REPO / "CHANGELOG.md",
        REPO / "bench" / "README.md",
        REPO / "deploy" / "kubernetes" / "README.md",
        *(REPO / "docs").glob("*.md"),
    ]
)
# Where a bare or partial module path may live (`state/tracker.py`, `generate.py`).
SOURCE_TREES = ("src", "tests", "bench", "deploy", "scripts", "demo")

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)
EXPLICIT_ID = re.compile(r'<a id="([\w-]+)"></a>')
PY_PATH = re.compile(r"[\w./-]*\w\.py\b")


def prose(text: str) -> str:
    """The page without its fenced code blocks, where `[x](y)` is code, not a link."""
    return FENCE.sub("", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, markup and punctuation dropped, spaces
    to hyphens (underscores and hyphens kept)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    slugs: set[str] = set()
    for heading in HEADING.findall(prose(page.read_text())):
        slug = github_slug(heading)
        # GitHub numbers repeated headings: foo, foo-1, foo-2 ...
        n, unique = 0, slug
        while unique in slugs:
            n += 1
            unique = f"{slug}-{n}"
        slugs.add(unique)
    # An explicit anchor, as bench/README.md gives each row of its figures table.
    return slugs | set(EXPLICIT_ID.findall(page.read_text()))


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(page.read_text()))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: ...
    ]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    return broken


def module_exists(name: str) -> bool:
    name = name.removeprefix("./")
    if any((REPO / base / name).is_file() for base in ("", "src", "src/celery_exporter")):
        return True
    return any(
        path.as_posix().endswith("/" + name)
        for tree in SOURCE_TREES
        for path in (REPO / tree).rglob(Path(name).name)
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert page.exists(), f"{page.relative_to(REPO)} is gone"
    assert not broken_links(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_python_file_a_page_names_exists(page: Path) -> None:
    named = set(PY_PATH.findall(page.read_text()))
    assert not sorted(name for name in named if not module_exists(name))


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """A link to a missing file, an anchor to a missing heading, and an old module name fail;
    links inside code blocks and absolute URLs are not followed."""
    (tmp_path / "other.md").write_text("# Other\n\n## Where `queue_name` comes from\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[a](other.md#where-queue_name-comes-from) [b](https://example.com/x.md) [c](#top)\n"
        "# Top\n```\n[d](missing-in-code.md)\n```\n"
    )
    assert broken_links(page) == []
    page.write_text("# Top\n[a](gone.md) [b](other.md#nowhere) [c](#bottom)\n")
    assert len(broken_links(page)) == 3
    assert module_exists("state/tracker.py") and module_exists("exposition/catalogue.py")
    assert module_exists("src/celery_exporter/web/server.py") and module_exists("setup.py")
    for old in (
        "metrics.py",
        "state/series.py",
        "held.py",
        "webconfig.py",
        "tools/check_broker.py",
    ):
        assert not module_exists(old), old
