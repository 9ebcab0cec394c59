"""Flags and CE_* variables -> Config, and one-line errors for bad input."""

from __future__ import annotations

import math

import pytest

from celery_exporter import cli
from celery_exporter.config import Config, ConfigError, parse_broker_url, redact_url


def build(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Config:
    """Parse argv with the real click command, stopping before anything starts."""
    captured: list[Config] = []

    def fake_build(options: dict[str, object]) -> Config:
        config = original(options)
        captured.append(config)
        raise SystemExit(0)

    original = cli.build_config
    monkeypatch.setattr(cli, "build_config", fake_build)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    return captured[0]


def test_defaults_match_the_drop_in_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    config = build(["--broker-url", "redis://localhost:6379/0"], monkeypatch)
    assert config.port == 9808
    assert config.host == "0.0.0.0"
    assert config.metric_prefix == "celery_"
    assert config.default_queue_name == "celery"
    assert config.runtime_buckets[0] == 0.005 and config.runtime_buckets[-1] == math.inf
    assert len(config.runtime_buckets) == 15
    assert config.queue_wait_buckets[-2] == 1800
    # Chosen so a SIGKILLed worker reads 0 long enough for the shipped alert (for: 15m).
    assert config.worker_timeout + 15 * 60 < config.purge_offline_worker_metrics


def test_every_option_is_read_from_its_ce_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "CE_BROKER_URL": "amqp://guest:guest@localhost:5672//",
        "CE_BROKER_TRANSPORT_OPTION": 'visibility_timeout=3600 sentinel_kwargs={"password":"x"}',
        "CE_BROKER_SSL_OPTION": "ssl_cert_reqs=CERT_NONE",
        "CE_ACCEPT_CONTENT": "json,pickle",
        "CE_RETRY_INTERVAL": "5",
        "CE_HOST": "127.0.0.1",
        "CE_PORT": "9999",
        "CE_BUCKETS": "1,2,3",
        "CE_QUEUE_WAIT_BUCKETS": "10,20",
        "CE_LOG_LEVEL": "debug",
        "CE_WORKER_TIMEOUT": "30",
        "CE_PURGE_OFFLINE_WORKER_METRICS": "1200",
        "CE_GENERIC_HOSTNAME_TASK_SENT_METRIC": "true",
        "CE_GENERIC_HOSTNAME_WORKER_TASK_METRIC": "1",
        "CE_QUEUES": "a,b,a",
        "CE_METRIC_PREFIX": "jobs_",
        "CE_DEFAULT_QUEUE_NAME": "default",
        "CE_STATIC_LABEL": "env=prod team=a",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = build([], monkeypatch)
    assert config.broker_url.startswith("amqp://")
    assert config.broker_transport_options == {
        "visibility_timeout": 3600,
        "sentinel_kwargs": {"password": "x"},
    }
    assert config.broker_ssl_options == {"ssl_cert_reqs": "CERT_NONE"}
    assert config.accept_content == ("json", "pickle")
    assert config.retry_interval == 5
    assert (config.host, config.port) == ("127.0.0.1", 9999)
    assert config.runtime_buckets == (1, 2, 3, math.inf)
    assert config.queue_wait_buckets == (10, 20, math.inf)
    assert config.log_level == "DEBUG"
    assert (config.worker_timeout, config.purge_offline_worker_metrics) == (30, 1200)
    assert config.generic_hostname_task_sent_metric and config.generic_hostname_worker_task_metric
    assert config.queues == ("a", "b")
    assert config.metric_prefix == "jobs_"
    assert config.default_queue_name == "default"
    assert config.static_labels == (("env", "prod"), ("team", "a"))


def test_disable_metric_accepts_exposed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    config = build(
        [
            "--broker-url",
            "redis://x",
            "--disable-metric",
            "celery_task_runtime",
            "--disable-metric",
            "celery_task_sent_total",
        ],
        monkeypatch,
    )
    assert config.disabled_metrics == {"task_runtime", "task_sent"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "Missing option '--broker-url'"),
        (["--broker-url", "localhost:6379"], "is not a URL"),
        (["--broker-url", "redsi://localhost"], "unknown transport 'redsi'"),
        (["--broker-url", "redis://localhost:port"], "Port could not be cast"),
        (["--broker-url", "redis://x", "--port", "70000"], "--port"),
        (["--broker-url", "redis://x", "--port", "abc"], "'abc' is not a valid integer"),
        (["--broker-url", "redis://x", "--buckets", "1,a"], "--buckets"),
        (["--broker-url", "redis://x", "--buckets", "3,2"], "strictly increasing"),
        (["--broker-url", "redis://x", "--static-label", "bad-name=1"], "label name"),
        (["--broker-url", "redis://x", "--static-label", "novalue"], "expected key=value"),
        (["--broker-url", "redis://x", "--log-level", "loud"], "--log-level 'loud'"),
        (["--broker-url", "redis://x", "--metric-prefix", "9x"], "--metric-prefix"),
        (["--broker-url", "redis://x", "--disable-metric", "nope"], "no metric family 'nope'"),
        (
            [
                "--broker-url",
                "redis://x",
                "--worker-timeout",
                "600",
                "--purge-offline-worker-metrics",
                "300",
            ],
            "longer than --worker-timeout",
        ),
        (["--broker-url", "redis://x", "--bogus"], "No such option '--bogus'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CE_BROKER_URL", raising=False)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("celery-exporter: error: ")
    assert message in err


def test_bad_url_errors_never_show_the_password() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_broker_url("redis://user:hunter2@host:notaport/0")
    assert "hunter2" not in str(exc.value)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("amqp://guest:s3cr%40t@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
        (
            "sentinel://:a@s1:26379;sentinel://:b@s2:26379",
            "sentinel://:***@s1:26379;sentinel://:***@s2:26379",
        ),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
