"""Where the shipped PromQL lives, and the little PromQL text handling the deploy tests need.

Collects every query a user runs through the shipped files (recording and alerting rules,
queries inside alert annotations, dashboard targets and template-variable queries), pulls
metric names out of an expression, and splits an alert expression into the operands around its
threshold and set operators, so the end-to-end test can ask "does this side have data?".
This is a scanner for the PromQL we write, not a parser for all PromQL: the tests of this
module pin down what it handles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from celery_exporter.exposition.catalogue import CATALOGUE, DEFAULT_PREFIX

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES_FILE = DEPLOY / "alert_rules.yml"
RULES_TEST_FILE = DEPLOY / "alert_rules_test.yml"
PROMETHEUS_FILE = DEPLOY / "prometheus.yml"
ALERTMANAGER_FILE = DEPLOY / "alertmanager.yml"
DASHBOARD_DIR = DEPLOY / "grafana" / "dashboards"
RUNBOOK_FILE = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/celery-exporter/celery-exporter/blob/main/docs/runbook.md"
EXPORTER_JOB = "celery-exporter"

KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
        "unless", "offset", "atan2", "inf", "nan", "start", "end",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(\s*\()?")
_TEMPLATE_QUERY = re.compile(r'\bquery\s+"((?:[^"\\]|\\.)*)"')
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$", re.S)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_MODIFIER = re.compile(
    r"^\s*(?:bool|(?:on|ignoring|group_left|group_right)\b\s*(?:\([^()]*\))?)\s*"
)
_OPERATOR = re.compile(r"\b(?:and|or|unless)\b|==|!=|>=|<=|>|<")
# A raw exporter series (or `up`), and the text that must precede it for the read to be
# deduplicated across the replicas of an HA pair: `max without (instance, pod[, ...]) (`,
# possibly followed by one range function such as `rate(`.
_RAW_SERIES = re.compile(r"(?<![\w:])(celery_[a-zA-Z0-9_]+|up)\b(?![\w:(])")
_DEDUPLICATED = re.compile(r"max without \(instance, pod\b[^()]*\) \((?:[a-z_]+\()?$")


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it was found, for failure messages."""

    where: str
    expr: str


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = load_yaml(RULES_FILE)["groups"]
    return groups


def rules() -> Iterator[dict[str, Any]]:
    for group in rule_groups():
        yield from group["rules"]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recording_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboards() -> dict[str, dict[str, Any]]:
    """Dashboard JSON by file name."""
    return {
        path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def rule_queries() -> list[Query]:
    """Rule expressions, and the queries that alert annotations run through `query`."""
    found = []
    for rule in rules():
        name = rule.get("alert") or rule["record"]
        found.append(Query(f"rule {name}", rule["expr"]))
        for key, text in rule.get("annotations", {}).items():
            for match in _TEMPLATE_QUERY.finditer(text):
                found.append(Query(f"rule {name} annotation {key}", match.group(1)))
    return found


def dashboard_queries() -> list[Query]:
    """Every panel target's expression, verbatim (template variables not substituted)."""
    found = []
    for file, board in dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                where = f"{file} panel {panel.get('id')} {panel.get('title')!r} {target['refId']}"
                found.append(Query(where, target["expr"]))
    return found


def variable_queries() -> list[tuple[Query, str]]:
    """(selector, label) of every `label_values(selector, label)` template variable."""
    found = []
    for file, board in dashboards().items():
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            text = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
            match = _LABEL_VALUES.match(text)
            if match is None:
                raise ValueError(f"{file} variable {var['name']}: not label_values(): {text}")
            found.append((Query(f"{file} variable {var['name']}", match.group(1)), match.group(2)))
    return found


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (not functions, keywords, labels or numbers)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in KEYWORDS:
            continue
        names.add(name)
    return names


def substitute(
    expr: str, rate_interval: str = "1m", time_range: str = "5m", job: str = ".*"
) -> str:
    """A dashboard expression as Grafana would send it: `job` as given, other variables All."""
    text = expr.replace("$__rate_interval", rate_interval).replace("$__range", time_range)
    text = text.replace("$__interval", "15s")
    text = re.sub(r"\$\{?job\}?", job, text)
    return re.sub(r"\$\{?(queue|task|worker)\}?", ".*", text)


def undeduplicated(expr: str, also: tuple[str, ...] = ()) -> list[str]:
    """Raw exporter series `expr` reads without deduplicating HA replicas first.

    A read is deduplicated when it sits directly in `max without (instance, pod...) (`, or
    in a range function there (`max without (instance, pod) (rate(x[5m]))`), or after one of
    the prefixes in `also` (e.g. `min(`, which duplicates do not change).
    """
    text = _STRING.sub('""', expr)
    # Label names in `by (...)`, `without (...)`, `on (...)` are not series: blank them out,
    # keeping positions, for the search only.
    masked = _GROUPING.sub(lambda m: " " * len(m.group(0)), text)
    found = []
    for match in _RAW_SERIES.finditer(masked):
        before = " ".join(text[: match.start()].split())
        if not (_DEDUPLICATED.search(before) or before.endswith(also)):
            found.append(match.group(1))
    return found


def _top_level(expr: str) -> list[tuple[int, int]]:
    """(start, end) of each binary comparison or set operator outside brackets and strings."""
    spans = []
    depth = 0
    i = 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            end = expr.index(char, i + 1)
            while expr[end - 1] == "\\" and char != "`":
                end = expr.index(char, end + 1)
            i = end + 1
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            match = _OPERATOR.match(expr, i)
            if match and (match.group(0)[0] not in "ao" or _word_start(expr, i)):
                spans.append(match.span())
                i = match.end()
                continue
        i += 1
    return spans


def _word_start(expr: str, i: int) -> bool:
    return i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] in "_:")


def _strip_parens(expr: str) -> str:
    text = expr.strip()
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, char in enumerate(text):
            depth += char == "("
            depth -= char == ")"
            if depth == 0 and i < len(text) - 1:
                return text
        text = text[1:-1].strip()
    return text


def operands(expr: str) -> list[str]:
    """The non-literal operands around an expression's comparison and set operators.

    `a > on () group_left () b and c > 0` gives [a, b, c]; `absent(x)` gives [x], since an
    absent() that returns nothing is the healthy case; a bare number is dropped.
    """
    text = _strip_parens(expr)
    spans = _top_level(text)
    if not spans:
        absent = re.match(r"^absent\((.*)\)$", text, re.S)
        if absent:
            return operands(absent.group(1))
        return [] if _NUMBER.match(text) else [text]
    parts = []
    start = 0
    for op_start, op_end in spans:
        parts.append(text[start:op_start])
        start = op_end
    parts.append(text[start:])
    found = []
    for i, part in enumerate(parts):
        operand = part
        while i:  # `bool`, `on (...)`, `group_left (...)` may follow an operator
            stripped = _MODIFIER.sub("", operand, count=1)
            if stripped == operand:
                break
            operand = stripped
        found.extend(operands(operand))
    return found


PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
# prometheus_client's process collector, which the exporter registers (app.py): the series
# the shipped rules read of it (celery:task_expired:increase10m: how long a replica has run).
PROCESS_OWN = {"process_start_time_seconds"}


def exposed_names() -> set[str]:
    names: set[str] = set()
    for spec in CATALOGUE:
        name = spec.exposed_name(DEFAULT_PREFIX)
        if spec.kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return names | PROCESS_OWN
