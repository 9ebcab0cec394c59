"""The exporter-toolkit web config file: TLS, client certificates, basic auth users and extra
response headers, read into a WebConfig (the per-request password check is basic_auth.py).

The file format is the one node_exporter and friends read, so operators can reuse theirs. It is
read once at start; any fault is a ConfigError naming the file and the problem in one line.
"""

from __future__ import annotations

import logging
import re
import ssl
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError
from .config_checks import FileError, check_keys, mapping
from .tls import ssl_context

log = logging.getLogger(__name__)


# Only headers that harden a response, as in the toolkit; value None means free text.
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
TOP_KEYS = frozenset({"tls_server_config", "http_server_config", "basic_auth_users"})
HTTP_KEYS = frozenset({"http2", "headers"})
BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{21}([./A-Za-z0-9])[./A-Za-z0-9]{31}$")
# The salt's last character carries 2 payload bits; bcrypt rejects any other character there.
SALT_TAILS = frozenset(".Oeu")


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None  # None: plain HTTP
    # user -> bcrypt hash; empty: no auth. Kept out of repr so a logged config leaks no hashes.
    users: Mapping[str, bytes] = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)


def load_web_config(path: str | None) -> WebConfig:
    """Read and check the web config file; None means plain HTTP and no auth."""
    if path is None:
        return WebConfig(ssl_context=None, users=types.MappingProxyType({}))
    try:
        return _parse(Path(path))
    except FileError as exc:
        raise ConfigError(" ".join(f"--web-config-file {path}: {exc}".splitlines())) from None


def _parse(path: Path) -> WebConfig:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileError(f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise FileError("not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise FileError(f"not valid YAML: {_yaml_problem(exc)}") from None
    top = mapping(document, "the file")
    check_keys(top, TOP_KEYS, "")
    tls = mapping(top.get("tls_server_config"), "tls_server_config")
    return WebConfig(
        ssl_context=ssl_context(tls, path.resolve().parent),
        users=types.MappingProxyType(_users(top.get("basic_auth_users"))),
        headers=types.MappingProxyType(_http(top.get("http_server_config"))),
    )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(exc)


def _http(value: Any) -> dict[str, str]:
    http = mapping(value, "http_server_config")
    check_keys(http, HTTP_KEYS, "http_server_config.")
    # http2 is accepted for compatibility; the exporter serves HTTP/1.1, which every scraper speaks.
    if not isinstance(http.get("http2", True), bool):
        raise FileError("http_server_config.http2 must be true or false")
    canonical = {name.lower(): name for name in HEADERS}
    headers: dict[str, str] = {}
    for name, raw in mapping(http.get("headers"), "http_server_config.headers").items():
        proper = canonical.get(name.lower())
        if proper is None:
            raise FileError(f"http_server_config.headers: header {name!r} is not allowed")
        if raw is None or raw == "":
            continue  # blank means unset
        if not isinstance(raw, str) or not raw.isprintable() or not raw.isascii():
            raise FileError(f"http_server_config.headers.{name}: want printable ASCII text")
        allowed = HEADERS[proper]
        if allowed is not None and raw.lower() not in allowed:
            raise FileError(
                f"http_server_config.headers.{name} {raw!r}: want {' or '.join(allowed)}"
            )
        headers[proper] = raw
    return headers


def _users(value: Any) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for user, hashed in mapping(value, "basic_auth_users").items():
        if ":" in user:
            raise FileError(
                f"basic_auth_users: user {user!r} contains ':', which basic auth forbids"
            )
        match = BCRYPT_HASH.match(hashed) if isinstance(hashed, str) else None
        if match is None or not 4 <= int(match[1]) <= 31 or match[2] not in SALT_TAILS:
            raise FileError(
                f"basic_auth_users.{user}: not a bcrypt hash (make one with htpasswd -nBC 10 '')"
            )
        users[user] = hashed.encode("ascii")
    return users
