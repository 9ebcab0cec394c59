"""HTTP: /metrics (gzip, OpenMetrics by negotiation), /, /healthz, /readyz, /health.

A threaded WSGI server; TLS and basic auth come from the exporter-toolkit web config file.
No request does broker I/O: /readyz and /health read the consumer's connection state.
"""

from __future__ import annotations

import gzip
import html
import itertools
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from .. import __version__
from ..exposition.families import FamilyCollector
from ..exposition.health import ExporterHealth
from ..exposition.render import render
from .basic_auth import CHALLENGE, BasicAuth
from .web_config import WebConfig

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/health"})
GZIP_MIN_BYTES = 1024  # below this gzip costs more than it saves


class MetricsApp:
    """The WSGI application."""

    def __init__(
        self,
        registry: CollectorRegistry,
        collectors: Sequence[FamilyCollector],
        health: ExporterHealth,
        web_config: WebConfig,
        broker_url_redacted: str,
        health_without_auth: bool = False,
    ) -> None:
        self._registry = registry  # the standard process_* and python_* collectors
        self._collectors = collectors  # ours, rendered by the fast writer
        self._health = health
        self._auth = BasicAuth(web_config.users)
        self._headers = list(web_config.headers.items())
        self._broker = broker_url_redacted
        self._health_without_auth = health_without_auth

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        handler = path if path in HEALTH_PATHS or path in ("/", "/metrics") else "other"
        exempt = self._health_without_auth and path in HEALTH_PATHS
        if not exempt and not self._auth.check(environ.get("HTTP_AUTHORIZATION")):
            return self._reply(
                start_response,
                handler,
                401,
                b"Unauthorized\n",
                "text/plain",
                [("WWW-Authenticate", CHALLENGE)],
            )
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path == "/":
            return self._reply(start_response, "/", 200, self._landing(), "text/html")
        if path == "/healthz":
            return self._reply(start_response, path, 200, b"ok\n", "text/plain")
        if path in ("/readyz", "/health"):
            if self._health.broker_up:
                return self._reply(start_response, path, 200, b"ok\n", "text/plain")
            # /health keeps danihodovic/celery-exporter's 500 for its users' probes.
            code = 503 if path == "/readyz" else 500
            return self._reply(start_response, path, code, b"broker unreachable\n", "text/plain")
        return self._reply(start_response, "other", 404, b"Not Found\n", "text/plain")

    def _metrics(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        standard = encoder(self._registry)
        if openmetrics:
            standard = standard.removesuffix(b"# EOF\n")  # ours come after; EOF goes last
        families = itertools.chain.from_iterable(c.families() for c in self._collectors)
        ours = render(families, openmetrics).encode("utf-8", "replace")
        body = b"".join((standard, ours, b"# EOF\n" if openmetrics else b""))
        headers = []
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "") and len(body) >= GZIP_MIN_BYTES:
            body = gzip.compress(body, compresslevel=1)  # fast: scrapes are frequent
            headers.append(("Content-Encoding", "gzip"))
        return self._reply(start_response, "/metrics", 200, body, content_type, headers)

    def _reply(
        self,
        start_response: StartResponse,
        handler: str,
        code: int,
        body: bytes,
        content_type: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> Iterable[bytes]:
        self._health.count_request(handler, code)
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        start_response(f"{code} {_REASONS[code]}", headers + self._headers + (extra or []))
        return [body]

    def _landing(self) -> bytes:
        state = "connected" if self._health.broker_up else "not connected"
        page = f"""<!doctype html>
<html><head><title>Celery Exporter</title></head>
<body><h1>Celery Exporter</h1>
<p>Version {html.escape(__version__)}. Broker {html.escape(self._broker)}: {state}.</p>
<ul>
<li><a href="/metrics">Metrics</a></li>
<li><a href="/healthz">Liveness</a> (the process is serving)</li>
<li><a href="/readyz">Readiness</a> (connected to the broker)</li>
</ul></body></html>
"""
        return page.encode()


_REASONS = {
    200: "OK",
    401: "Unauthorized",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class _QuietHandler(WSGIRequestHandler):
    timeout = 30  # a client that stalls mid-request does not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape is noise; requests are counted in a metric instead


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed TLS handshakes and dropped clients are the client's problem: no traceback.
        log.debug("HTTP request from %s failed", client_address, exc_info=True)


class _ThreadingServerV6(_ThreadingServer):
    address_family = socket.AF_INET6


def build_server(host: str, port: int, app: MetricsApp, web_config: WebConfig) -> WSGIServer:
    """Bind the listening socket (raises OSError, e.g. when the port is in use)."""
    server_class = _ThreadingServerV6 if ":" in host else _ThreadingServer
    server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    if web_config.ssl_context is not None:
        # The handshake runs in the request's own thread, so a slow client blocks nobody.
        server.socket = web_config.ssl_context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    return server
