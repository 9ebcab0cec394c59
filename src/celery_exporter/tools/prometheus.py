"""A small client for Prometheus's HTTP API (v1): readiness, queries, targets, rules.

Used by both operator commands. Query errors (bad PromQL, too many samples) and transport
errors both raise HttpError with a one-line message.
"""

from __future__ import annotations

from typing import Any, TypedDict

from .http import HttpError, get_json, get_text, join


class SampleStream(TypedDict):
    metric: dict[str, str]
    values: list[tuple[float, float]]  # (unix time, value), oldest first


class PrometheusClient:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def ready(self) -> None:
        """Raises HttpError unless /-/ready answers 200."""
        get_text(join(self.url, "/-/ready"), self.timeout)

    def _data(self, path: str, **params: str) -> Any:
        try:
            body = get_json(join(self.url, path, **params), self.timeout)
        except HttpError as exc:
            # Prometheus answers 400/422/503 with {"status": "error", "error": "..."}.
            if isinstance(exc.body, dict) and exc.body.get("error"):
                raise HttpError(f"Prometheus: {exc.body['error']}", exc.status) from None
            raise
        if not isinstance(body, dict) or body.get("status") != "success":
            raise HttpError(f"Prometheus answered {path} without success")
        return body["data"]

    def instant(self, expr: str, at: float) -> list[SampleStream]:
        """An instant query at `at`; vectors and matrices both come back as SampleStream lists."""
        data = self._data("/api/v1/query", query=expr, time=f"{at:.3f}")
        return _series(data)

    def range(self, expr: str, start: float, end: float, step: float) -> list[SampleStream]:
        data = self._data(
            "/api/v1/query_range",
            query=expr,
            start=f"{start:.3f}",
            end=f"{end:.3f}",
            step=f"{step:g}",
        )
        return _series(data)

    def targets(self) -> list[dict[str, Any]]:
        data = self._data("/api/v1/targets", state="active")
        active: list[dict[str, Any]] = data.get("activeTargets", [])
        return active

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._data("/api/v1/rules").get("groups", [])
        return groups

    def alertmanagers(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._data("/api/v1/alertmanagers").get(
            "activeAlertmanagers", []
        )
        return active


def _series(data: dict[str, Any]) -> list[SampleStream]:
    kind = data.get("resultType")
    result = data.get("result", [])
    if kind == "vector":
        return [
            SampleStream(metric=r["metric"], values=[(float(r["value"][0]), float(r["value"][1]))])
            for r in result
        ]
    if kind == "matrix":
        return [
            SampleStream(metric=r["metric"], values=[(float(t), float(v)) for t, v in r["values"]])
            for r in result
        ]
    if kind == "scalar":
        return [SampleStream(metric={}, values=[(float(result[0]), float(result[1]))])]
    raise HttpError(f"unexpected Prometheus result type {kind!r}")
