"""The WSGI app in-process: routes, content negotiation, gzip, health codes, request counts."""

from __future__ import annotations

import gzip
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client.registry import CollectorRegistry

from celery_exporter.exposition.catalogue import FamilyFactory
from celery_exporter.exposition.exporter_collector import ExporterCollector
from celery_exporter.exposition.health import ExporterHealth
from celery_exporter.web.server import MetricsApp
from celery_exporter.web.web_config import WebConfig

Response = tuple[int, dict[str, str], bytes]


@pytest.fixture
def health() -> ExporterHealth:
    return ExporterHealth()


@pytest.fixture
def app(health: ExporterHealth) -> MetricsApp:
    web = WebConfig(ssl_context=None, users={}, headers={})
    collectors = [ExporterCollector(health, FamilyFactory())]
    return MetricsApp(CollectorRegistry(), collectors, health, web, "redis://:***@broker:6379/0")


def get(app: MetricsApp, path: str, **headers: str) -> Response:
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    environ.update(headers)
    replies: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        replies.append((status, response_headers))

    body = b"".join(app(environ, start_response))
    status, response_headers = replies[0]
    return int(status.split()[0]), dict(response_headers), body


def test_metrics_in_text_format_by_default(app: MetricsApp) -> None:
    code, headers, body = get(app, "/metrics")
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"celery_exporter_broker_up 0.0" in body


def test_openmetrics_when_the_scraper_asks(app: MetricsApp) -> None:
    code, headers, body = get(
        app, "/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0"
    )
    assert code == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_gzip_when_asked_and_large_enough(app: MetricsApp, health: ExporterHealth) -> None:
    for i in range(100):  # make the body larger than the gzip threshold
        health.count_request(f"/handler-{i}", 200)
    code, headers, body = get(app, "/metrics", HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert code == 200
    assert headers["Content-Encoding"] == "gzip"
    assert b"celery_exporter_build_info" in gzip.decompress(body)


def test_health_endpoints_follow_the_broker_state(app: MetricsApp, health: ExporterHealth) -> None:
    assert get(app, "/healthz")[0] == 200
    assert get(app, "/readyz")[0] == 503
    assert get(app, "/health")[0] == 500
    health.broker_up = True
    assert get(app, "/readyz")[0] == 200
    assert get(app, "/health")[0] == 200


def test_landing_page_shows_version_and_redacted_broker(app: MetricsApp) -> None:
    code, headers, body = get(app, "/")
    assert code == 200 and headers["Content-Type"] == "text/html"
    assert b"redis://:***@broker:6379/0" in body and b'href="/metrics"' in body


def test_unknown_paths_are_404_and_requests_are_counted(
    app: MetricsApp, health: ExporterHealth
) -> None:
    assert get(app, "/nope")[0] == 404
    assert get(app, "/also/nope")[0] == 404
    get(app, "/metrics")
    assert health.http_requests[("other", "404")] == 2
    assert health.http_requests[("/metrics", "200")] == 1
