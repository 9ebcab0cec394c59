"""`check`, fourth link: Alertmanager is ready, has its configuration, and routes every severity.

The loaded configuration is read back from Alertmanager itself (/api/v2/status), and each alert
rule's labels are routed through its route tree the way Alertmanager does (first matching child
wins unless `continue`), so "a receiver exists for each severity" means: every alert of that
severity reaches a receiver that notifies somebody (one with at least one *_configs entry).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from ..http import HttpError, get_json, get_text, join
from .results import Result, fail, ok

LINK = "alertmanager"
MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def check_alertmanager(
    url: str, timeout: float, alert_labels: Iterable[dict[str, str]]
) -> list[Result]:
    try:
        get_text(join(url, "/-/ready"), timeout)
    except HttpError as exc:
        return [fail(LINK, "ready", str(exc), "start Alertmanager, or correct --alertmanager-url")]
    results = [ok(LINK, "ready", f"{url} is ready")]
    try:
        status = get_json(join(url, "/api/v2/status"), timeout)
        config = yaml.safe_load(status["config"]["original"])
        if not isinstance(config, dict) or "route" not in config:
            raise ValueError("no route in the loaded configuration")
    except (HttpError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        results.append(
            fail(
                LINK,
                "configuration",
                f"cannot read the loaded configuration: {str(exc).splitlines()[0]}",
                "check alertmanager.yml with `amtool check-config` and Alertmanager's log",
            )
        )
        return results
    results.append(
        ok(LINK, "configuration", f"loaded, {len(config.get('receivers') or [])} receivers")
    )
    results.append(judge_receivers(config, list(alert_labels)))
    return results


def judge_receivers(config: dict[str, Any], alerts: list[dict[str, str]]) -> Result:
    """OK when every alert of every severity reaches a receiver that notifies somebody."""
    notifying = {
        r["name"]
        for r in config.get("receivers") or []
        if any(key.endswith("_configs") and value for key, value in r.items())
    }
    reached: dict[str, set[str]] = {}
    silent: dict[str, set[str]] = {}
    for labels in alerts:
        severity = labels.get("severity", "")
        for receiver in route(config["route"], labels):
            bucket = reached if receiver in notifying else silent
            bucket.setdefault(severity, set()).add(receiver)
    lost = sorted(s for s in {a.get("severity", "") for a in alerts} if s not in reached)
    if lost:
        where = ", ".join(f"{s} -> {sorted(silent.get(s, {'nothing'}))}" for s in lost)
        return fail(
            LINK,
            "receivers",
            f"alerts of severity {where}, which notifies nobody",
            "route each severity to a receiver with an email_configs, webhook_configs or other "
            "*_configs entry (see deploy/alertmanager.yml)",
        )
    shown = "; ".join(f"{s} -> {', '.join(sorted(reached[s]))}" for s in sorted(reached))
    return ok(LINK, "receivers", shown)


def route(node: dict[str, Any], labels: dict[str, str], inherited: str = "") -> list[str]:
    """Receivers an alert with `labels` reaches from this route node (Alertmanager semantics)."""
    receiver = node.get("receiver") or inherited
    found: list[str] = []
    for child in node.get("routes") or []:
        if _matches(child, labels):
            found.extend(route(child, labels, receiver))
            if not child.get("continue"):
                break
    return found or [receiver]


def _matches(node: dict[str, Any], labels: dict[str, str]) -> bool:
    for name, value in (node.get("match") or {}).items():
        if labels.get(name, "") != str(value):
            return False
    for name, pattern in (node.get("match_re") or {}).items():
        if not re.fullmatch(str(pattern), labels.get(name, "")):
            return False
    for text in node.get("matchers") or []:
        parsed = MATCHER.match(str(text))
        if parsed is None:
            return False
        name, op, value = parsed.groups()
        actual = labels.get(name, "")
        hit = re.fullmatch(value, actual) is not None if "~" in op else actual == value
        if hit == op.startswith("!"):
            return False
    return True
