"""recommend.THRESHOLD_DEFAULTS must equal the celery:alert_threshold:* values in
deploy/alert_rules.yml: the report falls back to these copies when Prometheus has no rules loaded,
and an installed package has no deploy/ directory to read them from (tools/shipped.py)."""

from __future__ import annotations

import re

from celery_exporter.tools.recommend import THRESHOLD_DEFAULTS
from tests.support import promql


def shipped_thresholds() -> dict[str, float]:
    rules = promql.load_yaml(promql.RULES_FILE)
    found = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("record", "")
            if name.startswith("celery:alert_threshold:"):
                match = re.fullmatch(r"\s*vector\(([0-9.eE+-]+)\)\s*", str(rule["expr"]))
                assert match, f"{name}: {rule['expr']!r} is not vector(<number>)"
                found[name.removeprefix("celery:alert_threshold:")] = float(match[1])
    return found


def test_recommend_copies_the_shipped_thresholds_exactly() -> None:
    shipped = shipped_thresholds()
    differ = {
        name: (value, shipped.get(name))
        for name, value in THRESHOLD_DEFAULTS.items()
        if shipped.get(name) != value
    }
    assert not differ, f"recommend.py (copy, alert_rules.yml) differ: {differ}"
