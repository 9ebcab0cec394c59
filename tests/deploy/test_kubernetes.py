"""The Kubernetes manifests (deploy/kubernetes): rendered, validated, and held to the exporter.

- Every kustomization renders with the real `kubectl kustomize`, every component is used by one
  of them, and the generated files (base/prometheusrule.yaml, rendered.yaml) are current.
- Every rendered object passes tests/deploy/k8s_schema/validate.mjs: the Kubernetes,
  prometheus-operator and KEDA schemas carried by the npm kubernetes-models packages, plus a
  TypeScript check against their interfaces that rejects unknown fields. The validator is shown
  to reject broken objects, so a pass means something.
- The Deployment's CE_* names are the exporter's own (click reads each one from the
  environment), and the real exporter, started with exactly the env the manifest sets (Secret
  values substituted; the listen address moved to a free loopback port, since this machine is
  shared), answers the probes the manifest names: plain HTTP, and HTTPS with basic auth using
  the Secrets laid out as kubelet mounts them.

The validator's packages are installed by `npm ci --prefix tests/deploy/k8s_schema`; without
them these tests fail with that command, they do not skip.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.core import ParameterSource

from celery_exporter import __version__
from celery_exporter.cli import command
from tests.deploy.kubepod import (
    PodProcess,
    Secrets,
    container_env,
    materialise_volumes,
    probe_port,
)
from tests.servers import free_port, terminate_pid, wait_for

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
SCHEMA_DIR = Path(__file__).resolve().parent / "k8s_schema"
NPM_INSTALL = "npm ci --prefix tests/deploy/k8s_schema"
BROKER_SECRET = ("celery-exporter-broker", "broker-url")

Obj = dict[str, Any]


# --- rendering ----------------------------------------------------------------------------------


def kustomize_dirs(kind: str) -> list[Path]:
    found = []
    for path in sorted(K8S.rglob("kustomization.yaml")):
        if (yaml.safe_load(path.read_text()) or {}).get("kind", "Kustomization") == kind:
            found.append(path.parent)
    return found


KUSTOMIZATIONS = kustomize_dirs("Kustomization")
COMPONENTS = kustomize_dirs("Component")


def kubectl() -> str:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("kubectl is not on PATH: it renders the kustomizations (kubectl kustomize)")
    return binary


def render(directory: Path) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    """kustomization dir (relative to deploy/kubernetes) -> rendered YAML."""
    return {str(d.relative_to(K8S)): render(d) for d in KUSTOMIZATIONS}


def objects(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[Obj], kind: str, name: str | None = None) -> Obj:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(matches) == 1, f"want one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def exporter_container(docs: list[Obj]) -> Obj:
    deployment = find(docs, "Deployment", "celery-exporter")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "celery-exporter")


def test_the_expected_kustomizations_and_components_exist() -> None:
    assert {str(d.relative_to(K8S)) for d in KUSTOMIZATIONS} == {
        ".",
        "base",
        "examples/keda",
        "examples/production",
    }
    assert {d.name for d in COMPONENTS} == {"ha", "web-config", "network-policy"}


def test_every_component_is_rendered_by_some_kustomization() -> None:
    """Components cannot render alone; each one is checked through an overlay that uses it."""
    used: set[Path] = set()
    for directory in KUSTOMIZATIONS:
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        used |= {(directory / c).resolve() for c in spec.get("components", [])}
    assert {c.resolve() for c in COMPONENTS} <= used


def test_generated_files_are_current() -> None:
    """base/prometheusrule.yaml and rendered.yaml are what generate.py writes now."""
    result = subprocess.run(
        [sys.executable, str(K8S / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        f"{result.stdout}{result.stderr}\nrun: python deploy/kubernetes/generate.py"
    )


def test_prometheus_rule_groups_are_exactly_alert_rules_yml(rendered: dict[str, str]) -> None:
    alert_rules = yaml.safe_load((REPO / "deploy" / "alert_rules.yml").read_text())
    rule = find(objects(rendered["."]), "PrometheusRule")
    assert rule["spec"]["groups"] == alert_rules["groups"], (
        "run: python deploy/kubernetes/generate.py"
    )


def test_rendered_yaml_is_the_base_rendered(rendered: dict[str, str]) -> None:
    text = (K8S / "rendered.yaml").read_text()
    assert objects(text) == objects(rendered["."]) == objects(rendered["base"])


# --- schema validation --------------------------------------------------------------------------


def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node is not on PATH: the schema validator is a node script")
    return binary


def validate(paths: list[Path]) -> dict[str, Any]:
    """Run validate.mjs over YAML files; its JSON report."""
    if not (SCHEMA_DIR / "node_modules" / "kubernetes-models").is_dir():
        pytest.fail(f"the schema validator's packages are not installed: run `{NPM_INSTALL}`")
    result = subprocess.run(
        [node(), str(SCHEMA_DIR / "validate.mjs"), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode in (0, 1), f"validate.mjs failed to run: {result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout)
    assert (result.returncode == 1) == (report["errors"] > 0)
    return report


@pytest.fixture(scope="module")
def schema_report(rendered: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("rendered")
    paths = []
    for name, text in rendered.items():
        path = out / (name.replace("/", "_").replace(".", "root") + ".yaml")
        path.write_text(text)
        paths.append(path)
    return validate(paths)


def test_every_rendered_object_passes_the_schemas(
    rendered: dict[str, str], schema_report: dict[str, Any]
) -> None:
    failures = [o for o in schema_report["objects"] if o["errors"]]
    assert not failures, json.dumps(failures, indent=1)
    assert len(schema_report["objects"]) == sum(len(objects(t)) for t in rendered.values())
    kinds = {(o["apiVersion"], o["kind"]) for o in schema_report["objects"]}
    assert kinds == {
        ("v1", "ServiceAccount"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("keda.sh/v1alpha1", "ScaledObject"),
    }


def broken_variants(docs: list[Obj]) -> dict[str, tuple[Obj, str]]:
    """name -> (an object with one fault, a fragment of the error the validator must give)."""

    def copy(kind: str) -> Obj:
        name = "celery-exporter" if kind == "Deployment" else None
        result: Obj = json.loads(json.dumps(find(docs, kind, name)))
        return result

    variants: dict[str, tuple[Obj, str]] = {}
    deployment = copy("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9808"
    variants["port as a string"] = (deployment, "containerPort must be integer")
    deployment = copy("Deployment")
    # A classic: readOnlyRootFilesystem exists on containers, not on the pod.
    deployment["spec"]["template"]["spec"]["securityContext"]["readOnlyRootFilesystem"] = True
    variants["field in the wrong place"] = (deployment, "'\"readOnlyRootFilesystem\"' does not")
    deployment = copy("Deployment")
    del deployment["spec"]["template"]["spec"]["containers"][0]["name"]
    variants["container without a name"] = (deployment, "must have required property name")
    monitor = copy("ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    variants["bad Prometheus duration"] = (monitor, "interval must match pattern")
    rule = copy("PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["exprr"] = rule["spec"]["groups"][0]["rules"][0].pop(
        "expr"
    )
    variants["rule without expr"] = (rule, "must have required property expr")
    scaled = copy("ScaledObject")
    del scaled["spec"]["scaleTargetRef"]
    variants["ScaledObject without target"] = (scaled, "required property scaleTargetRef")
    unknown = copy("Service")
    unknown["apiVersion"] = "example.com/v1"
    variants["unknown apiVersion"] = (unknown, "no schema for apiVersion example.com/v1")
    return variants


def test_the_validator_rejects_broken_objects(rendered: dict[str, str], tmp_path: Path) -> None:
    docs = objects(rendered["examples/keda"])
    variants = broken_variants(docs)
    paths = []
    for index, (obj, _) in enumerate(variants.values()):
        path = tmp_path / f"broken-{index}.yaml"
        path.write_text(yaml.safe_dump(obj))
        paths.append(path)
    report = validate(paths)
    assert len(report["objects"]) == len(variants)
    for (name, (_, expected)), result in zip(variants.items(), report["objects"], strict=True):
        assert any(expected in e for e in result["errors"]), f"{name}: {result['errors']}"


# --- what the manifests promise -----------------------------------------------------------------


def test_broker_url_comes_from_a_secret_and_is_never_a_literal(rendered: dict[str, str]) -> None:
    for name, text in rendered.items():
        for obj in objects(text):
            assert obj["kind"] != "Secret", f"{name} ships a Secret"
        env = {e["name"]: e for e in exporter_container(objects(text))["env"]}
        assert "value" not in env["CE_BROKER_URL"]
        ref = env["CE_BROKER_URL"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == BROKER_SECRET
        assert not re.search(r"(redis|rediss|amqp|amqps|sentinel|sqs)://", text), name


def dockerfile_user() -> int:
    match = re.search(r"^USER (\d+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile has no numeric USER"
    return int(match.group(1))


@pytest.mark.parametrize("name", [".", "examples/production", "examples/keda"])
def test_exporter_pod_is_locked_down(rendered: dict[str, str], name: str) -> None:
    docs = objects(rendered[name])
    pod = find(docs, "Deployment", "celery-exporter")["spec"]["template"]["spec"]
    container = exporter_container(docs)
    uid = dockerfile_user()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    account = find(docs, "ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    context = container["securityContext"]
    assert context["runAsUser"] == uid
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_resources_say_where_they_come_from() -> None:
    text = (K8S / "base" / "deployment.yaml").read_text()
    assert "bench/README.md" in text


def test_image_is_pinned_to_this_release(rendered: dict[str, str]) -> None:
    images = {name: exporter_container(objects(t))["image"] for name, t in rendered.items()}
    for name, image in images.items():
        assert not image.endswith(":latest") and re.search(r":[\w.-]+$", image), (name, image)
    assert images["."] == f"ghcr.io/celery-exporter/celery-exporter:{__version__}", (
        "deploy/kubernetes/base/kustomization.yaml images: newTag must be the release"
    )
    # An overlay's `images:` must name the image as the base sets it, or it changes nothing.
    assert images["examples/production"].startswith("registry.example.com/")


def test_servicemonitor_scrapes_the_metrics_port_as_job_celery_exporter(
    rendered: dict[str, str],
) -> None:
    docs = objects(rendered["."])
    monitor, service = find(docs, "ServiceMonitor"), find(docs, "Service")
    deployment = find(docs, "Deployment")
    # The shipped rules select up{job="celery-exporter"}.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "celery-exporter"
    selected = monitor["spec"]["selector"]["matchLabels"].items()
    assert selected <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", 9808, "metrics")
    assert {"name": "metrics", "containerPort": 9808, "protocol": "TCP"} in (
        exporter_container(docs)["ports"]
    )


def test_ha_pair_has_a_budget_and_never_shares_a_node(rendered: dict[str, str]) -> None:
    docs = objects(rendered["examples/production"])
    deployment = find(docs, "Deployment", "celery-exporter")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    budget = find(docs, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    hard = [s for s in spread if s["whenUnsatisfiable"] == "DoNotSchedule"]
    assert [s["topologyKey"] for s in hard] == ["kubernetes.io/hostname"]
    assert hard[0]["labelSelector"]["matchLabels"].items() <= labels.items()


def test_keda_query_is_deduplicated_valid_promql_on_a_reported_queue(
    rendered: dict[str, str], tmp_path: Path
) -> None:
    docs = objects(rendered["examples/keda"])
    scaled = find(docs, "ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]["name"]
    worker = find(docs, "Deployment", target)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert query.startswith("max without (instance, pod) (celery_queue_length{")
    queue = re.search(r'queue_name="([^"]+)"', query)
    assert queue
    command_line = worker["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command_line[command_line.index("-Q") + 1] == queue.group(1)
    assert "-E" in command_line
    env = {e["name"]: e.get("value") for e in exporter_container(docs)["env"]}
    assert queue.group(1) in env["CE_QUEUES"].split(","), "scale from zero needs CE_QUEUES"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH (Debian package prometheus)")
    rules = tmp_path / "keda.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "keda", "rules": [
        {"record": "keda:query", "expr": query}]}]}))  # fmt: skip
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the manifest against the exporter itself ---------------------------------------------------


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
    """run_pod(docs, secrets) -> (PodProcess, container, port): the exporter container of a
    rendered kustomization, started as kubelet would with its volumes and security context."""
    started: list[PodProcess] = []

    def run(docs: list[Obj], secrets: Secrets) -> tuple[PodProcess, Obj, int]:
        pod = find(docs, "Deployment", "celery-exporter")["spec"]["template"]["spec"]
        container = exporter_container(docs)
        root = tmp_path / f"pod-{len(started)}"
        mounts = materialise_volumes(pod, container, secrets, root)
        env = container_env(container, secrets)
        assert env["CE_HOST"] == "0.0.0.0"  # all interfaces: kubelet probes the pod IP
        port = free_port()
        env["CE_HOST"], env["CE_PORT"] = "127.0.0.1", str(port)
        process = PodProcess(pod, container, env, mounts, root)
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
    """The Secrets the web-config component names, as the README tells users to make them."""
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    # Paths relative to the web config's own directory, as the README shows.
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


@pytest.mark.integration
def test_the_pod_sandbox_bites_without_the_tmp_volume(
    rendered: dict[str, str], redis_url: str, run_pod: Any
) -> None:
    """The root file system really is read-only in these tests: without the /tmp emptyDir,
    the exporter cannot write the scratch copy of its certificate and does not start."""
    docs = objects(rendered["examples/production"])
    pod = find(docs, "Deployment", "celery-exporter")["spec"]["template"]["spec"]
    container = exporter_container(docs)
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] != "/tmp"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "tmp"]
    process, _, _ = run_pod(docs, web_secrets(redis_url, "scrape-secret"))
    wait_for(lambda: process.proc.poll() is not None, 30, "the exporter to exit")
    assert process.proc.returncode != 0
    assert "temporary directory" in process.output().lower(), process.output()
