"""The real exporter process behind a web config file: HTTPS with required client certificates,
basic auth (401s counted), and start-up failures that end with one line and a non-zero exit.

The broker URL points at a loopback port nothing listens on: the HTTP side must work regardless.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.certs import Pki
from tests.support.servers import REPO_ROOT, ServerError, free_port, terminate_pid, wait_for

pytestmark = pytest.mark.integration

USER, PASSWORD = "prometheus", "scrape-secret"
GOOD_AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BAD_AUTH = "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()
UNKNOWN_AUTH = "Basic " + base64.b64encode(f"mallory:{PASSWORD}".encode()).decode()


@dataclass
class Exporter:
    process: subprocess.Popen[bytes]
    port: int
    stderr: Path


def exporter_command(port: int, web_config: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "celery_exporter",
        "--broker-url", f"redis://127.0.0.1:{free_port()}/0",
        "--host", "127.0.0.1", "--port", str(port),
        "--web-config-file", str(web_config),
        *extra,
    ]  # fmt: skip


def exporter_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH")])
    )
    return env


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_exporter(tmp: Path, web_config: Path, extra: Sequence[str] = ()) -> Exporter:
    port = free_port()
    stderr = tmp / f"exporter-{port}.err"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            exporter_command(port, web_config, *extra),
            env=exporter_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    exporter = Exporter(process, port, stderr)

    def listening() -> bool:
        if process.poll() is not None:
            raise ServerError(f"exporter exited {process.returncode}: {stderr.read_text()}")
        return port_open(port)

    try:
        wait_for(listening, 30.0, "the exporter to listen")
    except BaseException:
        stop_exporter(exporter)
        raise
    return exporter


def stop_exporter(exporter: Exporter) -> None:
    terminate_pid(exporter.process.pid)
    exporter.process.wait(timeout=5)


def write_web_config(directory: Path, pki: Pki | None, password_hash: str) -> Path:
    lines = []
    if pki is not None:
        lines += [
            "tls_server_config:",
            f"  cert_file: {pki.server_cert}",
            f"  key_file: {pki.server_key}",
            f"  client_ca_file: {pki.ca_cert}",
            "  client_auth_type: RequireAndVerifyClientCert",
        ]
    lines += [
        "basic_auth_users:",
        f"  {USER}: '{password_hash}'",
        "http_server_config:",
        "  headers:",
        "    X-Content-Type-Options: nosniff",
    ]
    path = directory / "web-config.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def password_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()


@pytest.fixture(scope="module")
def tls_exporter(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, password_hash: str
) -> Iterator[Exporter]:
    tmp = tmp_path_factory.mktemp("tls-exporter")
    exporter = start_exporter(tmp, write_web_config(tmp, pki, password_hash))
    try:
        yield exporter
    finally:
        stop_exporter(exporter)


def client_context(pki: Pki, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str


def get(
    port: int, path: str, authorization: str | None, context: ssl.SSLContext | None = None
) -> Reply:
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        headers = {"Authorization": authorization} if authorization else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read().decode())
    finally:
        connection.close()


def unauthorized_count(exposition: str) -> float:
    """celery_exporter_http_requests_total{code="401"}, summed over handlers."""
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if (
                sample.name == "celery_exporter_http_requests_total"
                and sample.labels.get("code") == "401"
            ):
                total += sample.value
    return total


def test_good_certificate_and_password_get_metrics(tls_exporter: Exporter, pki: Pki) -> None:
    context = client_context(pki, (pki.client_cert, pki.client_key))
    reply = get(tls_exporter.port, "/metrics", GOOD_AUTH, context)
    assert reply.status == 200
    assert "celery_exporter_http_requests_total" in reply.body
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("cert", ["none", "stranger"])
def test_handshake_refused_without_a_trusted_certificate(
    tls_exporter: Exporter, pki: Pki, cert: str
) -> None:
    pair = None if cert == "none" else (pki.stranger_cert, pki.stranger_key)
    # TLS 1.3 lets the client finish first; the refusal arrives as an alert on the first read.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(tls_exporter.port, "/metrics", GOOD_AUTH, client_context(pki, pair))


def test_wrong_credentials_get_401_and_are_counted(tls_exporter: Exporter, pki: Pki) -> None:
    context = client_context(pki, (pki.client_cert, pki.client_key))
    before = unauthorized_count(get(tls_exporter.port, "/metrics", GOOD_AUTH, context).body)
    for authorization in (BAD_AUTH, UNKNOWN_AUTH, None, "Basic !!!"):
        reply = get(tls_exporter.port, "/metrics", authorization, context)
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"].startswith('Basic realm="')
        assert PASSWORD not in reply.body
    after = unauthorized_count(get(tls_exporter.port, "/metrics", GOOD_AUTH, context).body)
    assert after - before == 4


@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz", "/health"])
def test_landing_page_and_health_need_auth_too(tls_exporter: Exporter, pki: Pki, path: str) -> None:
    context = client_context(pki, (pki.client_cert, pki.client_key))
    assert get(tls_exporter.port, path, None, context).status == 401
    assert get(tls_exporter.port, path, GOOD_AUTH, context).status != 401


def test_stalled_handshake_blocks_no_other_scrape(tls_exporter: Exporter, pki: Pki) -> None:
    context = client_context(pki, (pki.client_cert, pki.client_key))
    with socket.create_connection(("127.0.0.1", tls_exporter.port), timeout=5):
        # this client never sends its ClientHello; a scrape must still be answered
        assert get(tls_exporter.port, "/metrics", GOOD_AUTH, context).status == 200


def test_plain_http_with_health_exempt(tmp_path: Path, password_hash: str, pki: Pki) -> None:
    web_config = write_web_config(tmp_path, None, password_hash)
    exporter = start_exporter(tmp_path, web_config, ["--web-health-without-auth"])
    try:
        assert get(exporter.port, "/healthz", None).status == 200
        assert get(exporter.port, "/metrics", None).status == 401
        assert get(exporter.port, "/", None).status == 401
        assert get(exporter.port, "/metrics", GOOD_AUTH).status == 200
    finally:
        stop_exporter(exporter)


@pytest.mark.parametrize("fault", ["missing file", "bad YAML", "garbage cert", "key mismatch"])
def test_bad_web_config_ends_with_one_line(tmp_path: Path, pki: Pki, fault: str) -> None:
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    web_config = tmp_path / "web-config.yml"
    texts = {
        "bad YAML": "tls_server_config: [\n",
        "garbage cert": (
            f"tls_server_config:\n  cert_file: {garbage}\n  key_file: {pki.server_key}\n"
        ),
        "key mismatch": (
            f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.client_key}\n"
        ),
    }
    if fault in texts:
        web_config.write_text(texts[fault])
    port = free_port()
    process = subprocess.Popen(
        exporter_command(port, web_config),
        env=exporter_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            terminate_pid(process.pid)
            process.wait(timeout=5)
    lines = err.decode().strip().splitlines()
    assert process.returncode == 2
    assert len(lines) == 1, lines
    assert str(web_config) in lines[0]
    assert "Traceback" not in lines[0]
    assert not port_open(port)
