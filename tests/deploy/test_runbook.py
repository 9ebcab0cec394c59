"""docs/runbook.md has a section for every alert, where the alert's runbook_url points."""

from __future__ import annotations

import re

from tests.support import promql


def sections() -> dict[str, str]:
    """Level-2 heading -> its body, in document order."""
    text = promql.RUNBOOK_FILE.read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def github_anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def test_every_alert_has_a_section_with_meaning_confirmation_and_action() -> None:
    found = sections()
    names = {rule["alert"] for rule in promql.alert_rules()}
    assert names <= set(found), f"no runbook section: {sorted(names - set(found))}"
    for name in names:
        body = found[name]
        assert "**Meaning.**" in body, name
        assert "**Confirm.**" in body and "```promql" in body, name
        assert "**Act.**" in body, name


def test_every_section_is_an_alert() -> None:
    names = {rule["alert"] for rule in promql.alert_rules()}
    assert set(sections()) == names


def test_runbook_urls_point_at_existing_anchors() -> None:
    anchors = {github_anchor(title) for title in sections()}
    for rule in promql.alert_rules():
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == promql.RUNBOOK_URL
        assert anchor in anchors, rule["alert"]
        assert anchor == rule["alert"].lower()


def test_internal_links_resolve() -> None:
    anchors = {github_anchor(title) for title in sections()}
    links = re.findall(r"\]\(#([^)]+)\)", promql.RUNBOOK_FILE.read_text())
    assert links
    for link in links:
        assert link in anchors, link


def test_runbook_queries_name_exposed_or_recorded_metrics() -> None:
    from tests.support.promql import PROMETHEUS_OWN, exposed_names

    known = exposed_names() | PROMETHEUS_OWN | promql.recording_names()
    known |= {"scrape_duration_seconds"}
    blocks = re.findall(r"```promql\n(.*?)```", promql.RUNBOOK_FILE.read_text(), flags=re.S)
    unknown = set()
    for block in blocks:
        for line in block.splitlines():
            unknown |= promql.metric_names(line) - known
    assert not unknown, sorted(unknown)
