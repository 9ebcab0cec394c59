"""The exporter's validated configuration, and the parsers that turn flag text into it.

Imports neither click nor celery, so the rules are unit-testable on their own. Every parser
raises ConfigError with a one-line message naming the option; the CLI prints it and exits 2.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .exposition.catalogue import DEFAULT_QUEUE_WAIT_BUCKETS, DEFAULT_RUNTIME_BUCKETS, SPECS

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_PREFIX = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
KNOWN_SCHEMES = frozenset(
    {
        "amqp",
        "amqps",
        "pyamqp",
        "librabbitmq",
        "redis",
        "rediss",
        "sentinel",
        "memory",
        "sqs",
        "filesystem",
        "mongodb",
        "zookeeper",
        "qpid",
        "confluentkafka",
        "gcpubsub",
        "azureservicebus",
        "azurestoragequeues",
        "sqlalchemy",
        "sqla",
        "consul",
        "etcd",
    }
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A setting the exporter cannot run with; the message is one line for the operator."""


@dataclass(frozen=True)
class Config:
    broker_url: str
    broker_transport_options: dict[str, Any] = field(default_factory=dict)
    broker_ssl_options: dict[str, Any] = field(default_factory=dict)
    accept_content: tuple[str, ...] | None = None
    retry_interval: float = 1.0
    host: str = "0.0.0.0"
    port: int = 9808
    runtime_buckets: tuple[float, ...] = DEFAULT_RUNTIME_BUCKETS
    queue_wait_buckets: tuple[float, ...] = DEFAULT_QUEUE_WAIT_BUCKETS
    log_level: str = "INFO"
    log_format: str = "text"
    worker_timeout: float = 60.0
    purge_offline_worker_metrics: float = 3600.0
    generic_hostname_task_sent_metric: bool = False
    generic_hostname_worker_task_metric: bool = False
    queues: tuple[str, ...] = ()
    metric_prefix: str = "celery_"
    default_queue_name: str = "celery"
    static_labels: tuple[tuple[str, str], ...] = ()
    # queue and inspect polling (off the scrape path)
    queue_poll_interval: float = 5.0
    broker_timeout: float = 3.0
    inspect_interval: float = 30.0  # 0 switches inspect off
    inspect_timeout: float = 2.0
    queue_expiry: float = 3600.0  # a discovered queue nobody consumes is dropped after this
    # cardinality and exposition size
    max_task_names: int = 1000
    max_workers: int = 1000
    max_tracked_tasks: int = 100_000
    disabled_metrics: frozenset[str] = frozenset()
    # HTTP security (exporter-toolkit web config file)
    web_config_file: str | None = None
    web_health_without_auth: bool = False
    # The user's Celery app (module:attribute), read once at start-up for its beat_schedule
    app: str | None = None

    @property
    def redacted_broker_url(self) -> str:
        return redact_url(self.broker_url)


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`; every URL of a `;` list is redacted."""
    return ";".join(_redact_one(part) for part in url.split(";"))


def _redact_one(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if not password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def parse_broker_url(url: str) -> str:
    url = url.strip()
    if not url:
        raise ConfigError("--broker-url is empty")
    for part in url.split(";"):
        scheme, sep, _ = part.partition("://")
        if not sep or not scheme:
            raise ConfigError(f"--broker-url {redact_url(part)!r} is not a URL (want scheme://...)")
        transport = scheme.split("+", 1)[-1].lower()
        if transport not in KNOWN_SCHEMES:
            raise ConfigError(f"--broker-url: unknown transport {scheme!r}")
        try:
            port = urlsplit(part).port
        except ValueError as exc:
            raise ConfigError(f"--broker-url {redact_url(part)!r}: {exc}") from None
        del port
    return url


def parse_key_values(option: str, items: Iterable[str]) -> dict[str, Any]:
    """`key=value` items: digits become int, JSON is decoded if it parses, else a string."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r}: expected key=value")
        result[key.strip()] = _coerce(raw)
    return result


def _coerce(raw: str) -> Any:
    if raw.isdigit():
        return int(raw)
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_buckets(option: str, text: str) -> tuple[float, ...]:
    try:
        bounds = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: not a comma-separated list of numbers") from None
    if not bounds:
        raise ConfigError(f"{option} is empty")
    if any(math.isnan(b) for b in bounds) or any(b >= c for b, c in pairwise(bounds)):
        raise ConfigError(f"{option} {text!r}: bounds must be strictly increasing numbers")
    if bounds[-1] != math.inf:
        bounds.append(math.inf)
    return tuple(bounds)


def parse_static_labels(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    labels = parse_key_values("--static-label", items)
    for name in labels:
        if not LABEL_NAME.match(name) or name.startswith("__"):
            raise ConfigError(f"--static-label: {name!r} is not a valid Prometheus label name")
    return tuple((name, str(value)) for name, value in labels.items())


def parse_list(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def parse_metric_prefix(prefix: str) -> str:
    if not METRIC_PREFIX.match(prefix):
        raise ConfigError(f"--metric-prefix {prefix!r} is not a valid metric name prefix")
    return prefix


def parse_disabled_metrics(items: Iterable[str], prefix: str) -> frozenset[str]:
    """Family names, with or without the prefix and `_total`, to switch off."""
    disabled = set()
    for item in items:
        name = item.strip()
        if name.startswith(prefix):
            name = name[len(prefix) :]
        name = name.removesuffix("_total")
        if name not in SPECS:
            raise ConfigError(f"--disable-metric: no metric family {item!r}")
        disabled.add(name)
    return frozenset(disabled)


def parse_app(spec: str | None) -> str | None:
    """`-A/--app`: `module`, `module:attribute` or `module.attribute`, as for `celery -A`.
    Only its shape is checked here; schedule/user_app.py imports it."""
    if spec is None or not spec.strip():
        return None
    spec = spec.strip()
    module, _, attribute = spec.partition(":")
    names = [*module.split("."), *([attribute] if attribute or ":" in spec else [])]
    if not all(name.isidentifier() for name in names):
        raise ConfigError(f"--app {spec!r}: want module:attribute, as for celery -A")
    return spec


def parse_log_level(level: str) -> str:
    upper = level.upper()
    if upper not in LOG_LEVELS:
        raise ConfigError(f"--log-level {level!r}: want one of {', '.join(LOG_LEVELS)}")
    return upper


def check_durations(config: Config) -> None:
    """Cross-field rules, after every field parsed on its own."""
    purge, timeout = config.purge_offline_worker_metrics, config.worker_timeout
    if purge and timeout and purge <= timeout:
        raise ConfigError(
            "--purge-offline-worker-metrics must be longer than --worker-timeout, "
            "or a dead worker's series vanish before worker_up reads 0"
        )
    if not 0 < config.port < 65536:
        raise ConfigError(f"--port {config.port}: want 1-65535")
    if config.queue_poll_interval <= 0:
        raise ConfigError("--queue-poll-interval must be positive")
    if config.broker_timeout <= 0 or config.inspect_timeout <= 0:
        raise ConfigError("--broker-timeout and --inspect-timeout must be positive")
    for name in ("max_task_names", "max_workers", "max_tracked_tasks"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
