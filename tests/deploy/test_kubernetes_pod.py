"""The Deployment held to the exporter itself.

The CE_* names are the exporter's own (click reads each one from the environment). Then the
real exporter is started as kubelet would start the container (tests/support/kubepod.py: the
manifest's env with Secret values filled in, volumes at their mountPaths, read-only root,
UID 10001, no capabilities), with a real Redis as the broker, and the probes the manifest names
must pass: plain HTTP, and HTTPS with basic auth from the web-config component, scraped the way
the ServiceMonitor says. The listen address is the one substitution (CE_HOST/CE_PORT on a free
loopback port), because this machine is shared.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import socket
import ssl
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.core import ParameterSource

from celery_exporter.cli import command
from tests.support.kubepod import (
    PodProcess,
    Secrets,
    container_env,
    materialise_volumes,
    probe_port,
)
from tests.support.kustomize import (
    BROKER_SECRET,
    Obj,
    exporter_container,
    exporter_deployment,
    find,
    objects,
    render_all,
)
from tests.support.servers import free_port, terminate_pid, wait_for

pytestmark = pytest.mark.deploy


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return render_all()


def test_every_ce_variable_is_read_by_the_exporter(
    rendered: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """click reports each manifest variable as the source of its option: no typo is ignored."""
    names: set[str] = set()
    for text in rendered.values():
        for item in exporter_container(objects(text))["env"]:
            names.add(item["name"])
            monkeypatch.setenv(item["name"], item.get("value", "redis://broker:6379/0"))
    assert all(n.startswith("CE_") for n in names), names
    context = command.make_context("celery-exporter", [])
    by_env = {
        f"{context.auto_envvar_prefix}_{p.name.upper()}": p.name for p in command.params if p.name
    }
    unknown = names - by_env.keys()
    assert not unknown, f"not exporter variables: {sorted(unknown)}"
    for name in names:
        assert context.get_parameter_source(by_env[name]) == ParameterSource.ENVIRONMENT, name


@pytest.fixture
def run_pod(tmp_path: Path) -> Iterator[Any]:
    """run_pod(docs, secrets[, command]) -> (PodProcess, container, port): the exporter
    container of a rendered kustomization, started as kubelet would with its volumes and
    security context (running `command` instead of the exporter if given)."""
    started: list[PodProcess] = []

    def run(
        docs: list[Obj], secrets: Secrets, command: list[str] | None = None
    ) -> tuple[PodProcess, Obj, int]:
        pod = exporter_deployment(docs)["spec"]["template"]["spec"]
        container = exporter_container(docs)
        root = tmp_path / f"pod-{len(started)}"
        mounts = materialise_volumes(pod, container, secrets, root)
        env = container_env(container, secrets)
        assert env["CE_HOST"] == "0.0.0.0"  # all interfaces: kubelet probes the pod IP
        port = free_port()
        env["CE_HOST"], env["CE_PORT"] = "127.0.0.1", str(port)
        process = PodProcess(pod, container, env, mounts, root, command)
        started.append(process)
        return process, container, port

    yield run
    for process in started:
        terminate_pid(process.proc.pid)
        process.proc.wait()


def assert_probes_pass(process: PodProcess, container: Obj, port: int) -> None:
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for kind in ("livenessProbe", "readinessProbe"):
        probe = container[kind]
        # The probe's port is the one the exporter listens on (CE_PORT).
        assert probe_port(container, probe) == int(env["CE_PORT"]), kind
        wait_for(
            lambda p=probe: 200 <= process.probe(p, port) < 400,  # type: ignore[misc]
            45,
            f"{kind} {probe['httpGet']['path']} to pass\n{process.output()}",
            step=0.2,
        )


@pytest.mark.integration
def test_exporter_started_as_the_pod_answers_its_probes(
    rendered: dict[str, str], redis_url: str, run_pod: Any
) -> None:
    secrets = {BROKER_SECRET[0]: {BROKER_SECRET[1]: redis_url.encode()}}
    process, container, port = run_pod(objects(rendered["."]), secrets)
    assert_probes_pass(process, container, port)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert b"celery_exporter_broker_up 1.0" in metrics
    # CE_LOG_FORMAT=json: every log line is one JSON object.
    wait_for(lambda: process.output().strip() != "", 10, "a log line")
    for line in process.output().splitlines():
        json.loads(line)


@pytest.mark.integration
def test_readiness_fails_while_the_broker_is_unreachable(
    rendered: dict[str, str], run_pod: Any
) -> None:
    """So the probe means something: /readyz says 503 when the broker is down, /healthz 200."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0".encode()
    secrets = {BROKER_SECRET[0]: {BROKER_SECRET[1]: nowhere}}
    process, container, port = run_pod(objects(rendered["."]), secrets)
    live, ready = container["livenessProbe"], container["readinessProbe"]
    wait_for(lambda: process.probe(live, port) == 200, 45, "liveness to pass", step=0.2)
    assert process.probe(ready, port) == 503


def web_pki() -> dict[str, bytes]:
    """A CA and a server certificate for the DNS name the ServiceMonitor checks (serverName)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(
        name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer[0].subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
        )
        if issuer is None:
            ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
            builder = builder.add_extension(ski, False)
        else:
            sans = [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key

    ca = issue("celery-exporter test CA", None)
    server = issue("celery-exporter", ca)
    pem = serialization.Encoding.PEM
    return {
        "ca.crt": ca[0].public_bytes(pem),
        "tls.crt": server[0].public_bytes(pem),
        "tls.key": server[1].private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }


def web_secrets(broker_url: str, password: str) -> Secrets:
    """The Secrets the web-config component names, made as deploy/kubernetes/README.md says."""
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    # Paths relative to the web config's own directory, as deploy/kubernetes/README.md shows.
    web_config = {
        "tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"},
        "basic_auth_users": {"prometheus": hashed},
    }
    return {
        BROKER_SECRET[0]: {BROKER_SECRET[1]: broker_url.encode()},
        "celery-exporter-web-config": {"web-config.yml": yaml.safe_dump(web_config).encode()},
        "celery-exporter-tls": web_pki(),
        "celery-exporter-scrape-auth": {"username": b"prometheus", "password": password.encode()},
    }


@pytest.mark.integration
def test_web_config_variant_serves_tls_and_auth_and_its_probes_pass(
    rendered: dict[str, str], redis_url: str, run_pod: Any
) -> None:
    docs = objects(rendered["examples/production"])
    monitor = find(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    password = "scrape-secret"
    secrets = web_secrets(redis_url, password)
    process, container, port = run_pod(docs, secrets)
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert_probes_pass(process, container, port)

    # Prometheus as the ServiceMonitor configures it: HTTPS checked against the Secret's
    # ca.crt for serverName, and basic auth from the scrape-auth Secret.
    assert endpoint["scheme"] == "https"
    ca_ref = endpoint["tlsConfig"]["ca"]["secret"]
    context = ssl.create_default_context(cadata=secrets[ca_ref["name"]][ca_ref["key"]].decode())
    auth = endpoint["basicAuth"]
    user = secrets[auth["username"]["name"]][auth["username"]["key"]]
    secret = secrets[auth["password"]["name"]][auth["password"]["key"]]
    token = base64.b64encode(user + b":" + secret).decode()

    def get(path: str, headers: dict[str, str]) -> int:
        """Connect to the pod's address, verify the certificate for serverName."""
        name = endpoint["tlsConfig"]["serverName"]
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=name) as conn,
        ):
            head = [f"GET {path} HTTP/1.0", f"Host: {name}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            return int(conn.recv(64).split()[1])

    assert get(endpoint["path"], {"Authorization": f"Basic {token}"}) == 200
    assert get(endpoint["path"], {}) == 401
    # The probes pass because the health paths are exempt, not because auth is off.
    assert process.probe(container["readinessProbe"], port) == 200


def drop_tmp_volume(docs: list[Obj]) -> None:
    """Take the /tmp emptyDir out of the exporter's pod (in place)."""
    pod = exporter_deployment(docs)["spec"]["template"]["spec"]
    container = exporter_container(docs)
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] != "/tmp"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "tmp"]


@pytest.mark.integration
def test_web_config_variant_needs_no_tmp_volume(
    rendered: dict[str, str], redis_url: str, run_pod: Any
) -> None:
    """The certificate and key are loaded from the Secret's files as they are: on the read-only
    root without the /tmp emptyDir, the exporter still starts and its HTTPS probes pass."""
    docs = objects(rendered["examples/production"])
    drop_tmp_volume(docs)
    process, container, port = run_pod(docs, web_secrets(redis_url, "scrape-secret"))
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert_probes_pass(process, container, port)


# Creates a file in /tmp, which is world-writable, so only a read-only file system refuses it.
WRITE_TMP = """
import errno, os, sys
try:
    os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
except OSError as exc:
    sys.exit(f"refused: {errno.errorcode[exc.errno]}")
print("written")
"""


@pytest.mark.integration
@pytest.mark.parametrize("tmp_volume", [True, False], ids=["with /tmp volume", "without"])
def test_the_pod_sandbox_root_is_read_only(
    rendered: dict[str, str], run_pod: Any, tmp_path: Path, tmp_volume: bool
) -> None:
    """The sandbox really bites: in the container, /tmp on the root file system refuses a
    write with EROFS; with the manifest's emptyDir the same write lands in the volume."""
    docs = objects(rendered["."])
    if not tmp_volume:
        drop_tmp_volume(docs)
    name = f"celery-exporter-rofs-check-{uuid.uuid4().hex}"
    secrets = {BROKER_SECRET[0]: {BROKER_SECRET[1]: b"redis://127.0.0.1:1/0"}}
    command = [sys.executable, "-c", WRITE_TMP, f"/tmp/{name}"]
    try:
        process, _, _ = run_pod(docs, secrets, command)
        wait_for(lambda: process.proc.poll() is not None, 30, "the write check to finish")
        output = process.output()
        written = list(tmp_path.glob(f"pod-0/volume-*-tmp/{name}"))
        if tmp_volume:
            assert process.proc.returncode == 0, output
            assert output.strip() == "written"
            assert len(written) == 1  # in the emptyDir, not on the host
            assert not Path("/tmp", name).exists()
        else:
            assert process.proc.returncode == 1, output
            assert output.strip() == "refused: EROFS"
            assert written == []
    finally:
        Path("/tmp", name).unlink(missing_ok=True)  # only if the sandbox failed to protect it
