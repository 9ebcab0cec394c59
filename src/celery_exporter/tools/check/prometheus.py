"""`check`, third link: Prometheus is ready, scrapes the exporter, has rules and Alertmanager.

The exporter's target is found by the exporter URL's host:port when one is given (else by the
scrape job's name), since Prometheus labels targets by the address it scrapes.
"""

from __future__ import annotations

import time
import urllib.parse
from datetime import datetime
from typing import Any

from ..http import HttpError
from ..prometheus import PrometheusClient
from ..shipped import RULE_GROUPS
from .results import Result, fail, ok

LINK = "prometheus"
RELOAD = "then reload Prometheus (SIGHUP, or POST /-/reload with --web.enable-lifecycle)"


def check_prometheus(
    url: str, timeout: float, exporter_url: str | None, job: str, now: float | None = None
) -> list[Result]:
    client = PrometheusClient(url, timeout)
    try:
        client.ready()
    except HttpError as exc:
        return [
            fail(LINK, "ready", str(exc), "start Prometheus, or correct --prometheus-url"),
        ]
    now = time.time() if now is None else now
    results = [ok(LINK, "ready", f"{url} is ready")]
    for check in (_target, _rules, _alertmanagers):
        try:
            results.append(check(client, exporter_url, job, now))
        except HttpError as exc:
            results.append(fail(LINK, check.__name__.strip("_"), str(exc), "see Prometheus's log"))
    return results


def _target(client: PrometheusClient, exporter_url: str | None, job: str, now: float) -> Result:
    targets = client.targets()
    address = urllib.parse.urlsplit(exporter_url).netloc if exporter_url else ""
    matching = [t for t in targets if address and _address(t) == address]
    how = f"address {address}"
    if not matching:
        matching = [t for t in targets if t.get("labels", {}).get("job") == job]
        how = f"job {job!r}"
    if not matching:
        wanted = f"{address} (or job {job!r})" if address else f"job {job!r}"
        return fail(
            LINK,
            "target",
            f"no active target scrapes {wanted}",
            "add the exporter to scrape_configs (see deploy/prometheus.yml), " + RELOAD,
        )
    down = [t for t in matching if t.get("health") != "up"]
    if down:
        target = down[0]
        return fail(
            LINK,
            "target",
            f"target {_address(target)} is {target.get('health')}: "
            f"{target.get('lastError') or 'not scraped yet'}",
            "make the exporter reachable from Prometheus (network, port, scheme, auth)",
        )
    stale = []
    for target in matching:
        interval = _seconds(target.get("scrapeInterval")) or 60.0
        age = now - _timestamp(target.get("lastScrape"))
        if age > 3 * interval + 5:
            stale.append(f"{_address(target)} last scraped {age:.0f}s ago")
    if stale:
        return fail(
            LINK,
            "target",
            "; ".join(stale),
            "Prometheus is not scraping on schedule: check its log and load",
        )
    return ok(LINK, "target", f"{len(matching)} up, found by {how}, scraped recently")


def _rules(client: PrometheusClient, exporter_url: str | None, job: str, now: float) -> Result:
    groups = client.rule_groups()
    loaded = {g.get("name") for g in groups}
    missing = [name for name in RULE_GROUPS if name not in loaded]
    if missing:
        return fail(
            LINK,
            "rule groups",
            f"not loaded: {', '.join(missing)}",
            "add alert_rules.yml (deploy/) to rule_files in prometheus.yml, " + RELOAD,
        )
    broken = [
        f"{rule.get('name')}: {rule.get('lastError') or 'error'}"
        for group in groups
        if group.get("name") in RULE_GROUPS
        for rule in group.get("rules", [])
        if rule.get("health") == "err"
    ]
    if broken:
        return fail(
            LINK,
            "rule groups",
            f"{len(broken)} rules fail to evaluate; first: {broken[0]}",
            "fix the rule (promtool test rules deploy/alert_rules_test.yml), " + RELOAD,
        )
    return ok(LINK, "rule groups", f"{', '.join(RULE_GROUPS)} loaded, every rule evaluates")


def _alertmanagers(
    client: PrometheusClient, exporter_url: str | None, job: str, now: float
) -> Result:
    active = client.alertmanagers()
    if not active:
        return fail(
            LINK,
            "alertmanagers",
            "Prometheus knows no active Alertmanager: alerts go nowhere",
            "add alerting.alertmanagers to prometheus.yml (see deploy/prometheus.yml), " + RELOAD,
        )
    urls = ", ".join(str(a.get("url", "?")) for a in active)
    return ok(LINK, "alertmanagers", f"sends alerts to {urls}")


def _address(target: dict[str, Any]) -> str:
    return urllib.parse.urlsplit(str(target.get("scrapeUrl", ""))).netloc


def _timestamp(text: Any) -> float:
    try:
        # Prometheus writes RFC 3339 with nanoseconds; Python parses microseconds at most.
        head, _, rest = str(text).partition(".")
        zone = rest.lstrip("0123456789") if rest else ""
        fraction = rest[: len(rest) - len(zone)][:6] if rest else "0"
        zone = "+00:00" if zone in ("Z", "") else zone
        return datetime.fromisoformat(f"{head}.{fraction or '0'}{zone}").timestamp()
    except ValueError:
        return 0.0


def _seconds(text: Any) -> float | None:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    text = str(text or "")
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return float(text[: -len(unit)]) * units[unit]
    return None
