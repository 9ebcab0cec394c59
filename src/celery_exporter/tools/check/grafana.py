"""`check`, last link: Grafana is healthy, its Prometheus data source answers, dashboards exist.

Uses Grafana's HTTP API as documented: GET /api/health, GET /api/datasources/uid/:uid/health,
GET /api/dashboards/uid/:uid and GET /api/search. Credentials never come from a flag value
(which `ps` would show): CE_GRAFANA_TOKEN (a service account token), or CE_GRAFANA_USER and
CE_GRAFANA_PASSWORD, or a file named by --grafana-credentials-file holding a token or
`user:password`. Not run against a real Grafana (none can be installed on the test machines):
the tests answer these endpoints as Grafana's documentation describes them.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from ..http import HttpError, get_json, join
from ..shipped import DASHBOARD_UIDS
from .results import Result, fail, ok

LINK = "grafana"


class CredentialsError(ValueError):
    """The credentials file cannot be read; bad input, exit 2."""


def auth_headers(env: Mapping[str, str], credentials_file: str | None) -> dict[str, str]:
    """The Authorization header from the environment or a file; empty for anonymous access."""
    secret = ""
    if credentials_file:
        try:
            secret = Path(credentials_file).read_text().strip()
        except OSError as exc:
            raise CredentialsError(
                f"--grafana-credentials-file: cannot read {credentials_file}: {exc.strerror}"
            ) from None
        if not secret:
            raise CredentialsError(f"--grafana-credentials-file: {credentials_file} is empty")
    elif env.get("CE_GRAFANA_TOKEN"):
        return {"Authorization": f"Bearer {env['CE_GRAFANA_TOKEN']}"}
    elif env.get("CE_GRAFANA_USER"):
        secret = f"{env['CE_GRAFANA_USER']}:{env.get('CE_GRAFANA_PASSWORD', '')}"
    if not secret:
        return {}
    if ":" in secret:
        return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    return {"Authorization": f"Bearer {secret}"}


def check_grafana(
    url: str, timeout: float, headers: dict[str, str], datasource_uid: str
) -> list[Result]:
    try:
        health = get_json(join(url, "/api/health"), timeout)
    except HttpError as exc:
        return [fail(LINK, "health", str(exc), "start Grafana, or correct --grafana-url")]
    if not isinstance(health, dict) or health.get("database") != "ok":
        return [
            fail(
                LINK,
                "health",
                f"/api/health answered {str(health)[:200]}",
                "check Grafana's database and its log",
            )
        ]
    results = [ok(LINK, "health", f"Grafana {health.get('version', '?')}, database ok")]
    results.append(_datasource(url, timeout, headers, datasource_uid))
    results.append(_dashboards(url, timeout, headers))
    return results


def _auth_fix(exc: HttpError) -> str | None:
    if exc.status in (401, 403):
        return (
            "give a Viewer service account token in CE_GRAFANA_TOKEN or a file named by "
            "--grafana-credentials-file (or CE_GRAFANA_USER and CE_GRAFANA_PASSWORD)"
        )
    return None


def _datasource(url: str, timeout: float, headers: dict[str, str], uid: str) -> Result:
    path = f"/api/datasources/uid/{urllib.parse.quote(uid, safe='')}/health"
    try:
        body = get_json(join(url, path), timeout, headers)
    except HttpError as exc:
        message = exc.body.get("message") if isinstance(exc.body, dict) else None
        if exc.status == 404:
            return fail(
                LINK,
                "data source",
                f"no data source with uid {uid!r}",
                "provision deploy/grafana/provisioning/datasources/prometheus.yml, or pass "
                "--grafana-datasource-uid",
            )
        return fail(
            LINK,
            "data source",
            f"data source {uid!r} fails its health check: {message or exc}",
            _auth_fix(exc) or "check the data source's URL: Grafana must reach Prometheus",
        )
    return ok(LINK, "data source", f"{uid!r}: {body.get('message', body.get('status', 'OK'))}")


def _dashboards(url: str, timeout: float, headers: dict[str, str]) -> Result:
    missing = []
    for uid in DASHBOARD_UIDS:
        try:
            get_json(join(url, f"/api/dashboards/uid/{uid}"), timeout, headers)
        except HttpError as exc:
            if exc.status != 404:
                return fail(LINK, "dashboards", str(exc), _auth_fix(exc) or "check Grafana's log")
            missing.append(uid)
    if not missing:
        return ok(LINK, "dashboards", f"{', '.join(DASHBOARD_UIDS)} provisioned")
    fix = (
        "provision deploy/grafana/dashboards with deploy/grafana/provisioning/dashboards/"
        "celery.yml (the uids are fixed so links from alerts work)"
    )
    try:
        found = get_json(join(url, "/api/search", type="dash-db", query="Celery"), timeout, headers)
        other = [f"{d.get('title')} (uid {d.get('uid')})" for d in found if isinstance(d, dict)]
        if other:
            fix += f"; found under other uids: {', '.join(other)}"
    except HttpError:
        pass
    return fail(LINK, "dashboards", f"missing: {', '.join(missing)}", fix)
