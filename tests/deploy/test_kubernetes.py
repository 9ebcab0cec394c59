"""The Kubernetes manifests (deploy/kubernetes): rendered, current, and saying what they promise.

Every kustomization renders with the real `kubectl kustomize`; every component is used by one
of them; the generated files (base/prometheusrule.yaml, rendered.yaml) are what
deploy/kubernetes/generate.py writes now, and the PrometheusRule's groups are exactly
deploy/alert_rules.yml. Then what the manifests promise an operator (Secret, security context,
pinned image, scrape wiring, HA pair, KEDA query) and the commands and overlay of
deploy/kubernetes/README.md (and the README's install lines).
Schema validation: test_kubernetes_schema.py; the exporter run as the pod: test_kubernetes_pod.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from celery_exporter import __version__
from tests.support.kustomize import (
    BROKER_SECRET,
    COMPONENTS,
    K8S,
    KUSTOMIZATIONS,
    REPO,
    Obj,
    exporter_container,
    exporter_deployment,
    find,
    objects,
    render,
    render_all,
)
from tests.support.prometheus import Prometheus
from tests.support.servers import free_port, wait_for

pytestmark = pytest.mark.deploy

COMPONENT_DIR = K8S / "components"


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return render_all()


def test_the_expected_kustomizations_and_components_exist() -> None:
    assert {str(d.relative_to(K8S)) for d in KUSTOMIZATIONS} == {
        ".",
        "base",
        "examples/keda",
        "examples/production",
        "examples/plain-prometheus",
        "examples/second-broker",
    }
    assert {d.name for d in COMPONENTS} == {
        "ha",
        "web-config",
        "network-policy",
        "without-prometheus-operator",
    }


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


def test_broker_url_comes_from_a_secret_and_is_never_a_literal(rendered: dict[str, str]) -> None:
    for name, text in rendered.items():
        for obj in objects(text):
            assert obj["kind"] != "Secret", f"{name} ships a Secret"
        env = {e["name"]: e for e in exporter_container(objects(text))["env"]}
        assert "value" not in env["CE_BROKER_URL"]
        ref = env["CE_BROKER_URL"]["valueFrom"]["secretKeyRef"]
        # The second broker's exporter reads its own, prefixed Secret.
        prefix = "payments-" if name == "examples/second-broker" else ""
        assert (ref["name"], ref["key"]) == (prefix + BROKER_SECRET[0], BROKER_SECRET[1])
        assert not re.search(r"(redis|rediss|amqp|amqps|sentinel|sqs)://", text), name


def dockerfile_user() -> int:
    match = re.search(r"^USER (\d+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile has no numeric USER"
    return int(match.group(1))


@pytest.mark.parametrize("name", [".", "examples/production", "examples/keda"])
def test_exporter_pod_is_locked_down(rendered: dict[str, str], name: str) -> None:
    docs = objects(rendered[name])
    pod = exporter_deployment(docs)["spec"]["template"]["spec"]
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


def selectors(obj: Obj) -> list[dict[str, str]]:
    """Every label selector in an object that picks the exporter's pods or Services."""
    spec = obj.get("spec", {})
    found = {
        "Deployment": lambda: [spec["selector"]["matchLabels"]]
        + [c["labelSelector"]["matchLabels"] for c in
           spec["template"]["spec"].get("topologySpreadConstraints", [])],
        "Service": lambda: [spec["selector"]],
        "ServiceMonitor": lambda: [spec["selector"]["matchLabels"]],
        "PodDisruptionBudget": lambda: [spec["selector"]["matchLabels"]],
        "NetworkPolicy": lambda: [spec["podSelector"]["matchLabels"]],
    }.get(obj["kind"], list)()  # fmt: skip
    return list(found)


@pytest.mark.parametrize("name", [str(d.relative_to(K8S)) for d in KUSTOMIZATIONS])
def test_every_selector_names_the_exporter_instance(rendered: dict[str, str], name: str) -> None:
    """Two exporters (two brokers) in one namespace never select each other's pods."""
    docs = [d for d in objects(rendered[name]) if d["metadata"]["name"].endswith("celery-exporter")]
    pod_labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    instance = pod_labels["app.kubernetes.io/instance"]
    for obj in docs:
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == instance, obj["kind"]
        for selector in selectors(obj):
            assert selector.get("app.kubernetes.io/instance") == instance, obj["kind"]
            assert selector.items() <= pod_labels.items(), obj["kind"]


def test_second_broker_exporter_stands_beside_the_first(rendered: dict[str, str]) -> None:
    first, second = objects(rendered["."]), objects(rendered["examples/second-broker"])
    names = {(d["kind"], d["metadata"]["name"]) for d in first}
    assert not names & {(d["kind"], d["metadata"]["name"]) for d in second}
    # Each ServiceMonitor selects its own Service only; each Service its own pods only.
    for own, other in ((first, second), (second, first)):
        monitor, service = find(own, "ServiceMonitor")["spec"], find(other, "Service")
        selected = monitor["selector"]["matchLabels"].items()
        assert not selected <= service["metadata"]["labels"].items()
        pod_labels = exporter_deployment(other)["spec"]["template"]["metadata"]["labels"].items()
        assert not find(own, "Service")["spec"]["selector"].items() <= pod_labels
        # Both keep the job label the alerts select.
        assert find(own, "Service")["metadata"]["labels"][monitor["jobLabel"]] == "celery-exporter"
    assert [d for d in second if d["kind"] == "PrometheusRule"] == []  # the rules once
    refs = [
        e["valueFrom"]["secretKeyRef"]["name"]
        for docs in (first, second)
        for e in exporter_container(docs)["env"]
        if e["name"] == "CE_BROKER_URL"
    ]
    assert len(set(refs)) == 2


def test_ha_pair_has_a_budget_and_never_shares_a_node(rendered: dict[str, str]) -> None:
    docs = objects(rendered["examples/production"])
    deployment = exporter_deployment(docs)
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
    # The work per queue, a shipped recording rule that deduplicates replicas itself.
    assert query.startswith("celery:queue_work:sum{")
    shipped = yaml.safe_load((REPO / "deploy" / "alert_rules.yml").read_text())
    records = {r.get("record") for g in shipped["groups"] for r in g["rules"]}
    assert "celery:queue_work:sum" in records
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


# --- deploy/kubernetes/README.md, and the README's three lines ------------------------------------

SECRET_COMMAND = re.compile(r"create secret generic (\S+) \\\n\s*--from-file=([\w.-]+)=/dev/stdin")


def kubernetes_readme() -> str:
    return (K8S / "README.md").read_text()


def test_readme_broker_secret_command_makes_the_secret_the_deployment_reads() -> None:
    for where, text in (
        ("deploy/kubernetes/README.md", kubernetes_readme()),
        ("README.md", (REPO / "README.md").read_text()),
    ):
        match = SECRET_COMMAND.search(text)
        assert match, f"the broker Secret command of {where} is gone"
        assert (match.group(1), match.group(2)) == BROKER_SECRET, where


def test_readme_overlay_renders_and_does_what_it_says(tmp_path: Path) -> None:
    """The overlay deploy/kubernetes/README.md shows, pointed at this checkout, renders and takes
    effect."""
    match = re.search(r"```yaml\n(# kustomization.yaml\n.*?)```", kubernetes_readme(), re.DOTALL)
    assert match, "the example overlay of deploy/kubernetes/README.md is gone"
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    checkout = os.path.relpath(REPO, overlay)
    text = match.group(1).replace("../celery-exporter/", checkout + "/")
    (overlay / "kustomization.yaml").write_text(text)
    docs = objects(render(overlay))
    deployment = exporter_deployment(docs)
    assert deployment["metadata"]["namespace"] == "monitoring"
    assert deployment["spec"]["replicas"] == 2
    assert exporter_container(docs)["image"] == "registry.example.com/celery-exporter:0.1.0"
    find(docs, "PodDisruptionBudget")


def pod_target(port: int, **meta: str) -> dict[str, Any]:
    """A static target carrying the labels kubernetes_sd (role: pod) would give it."""
    labels = {f"__meta_kubernetes_{k}": v for k, v in meta.items()}
    return {"targets": [f"127.0.0.1:{port}"], "labels": labels}


@pytest.mark.integration
def test_plain_prometheus_scrape_job_keeps_exactly_the_exporter_pods(
    rendered: dict[str, str], tmp_path: Path
) -> None:
    """The job for a Prometheus without the operator, run by a real Prometheus. Debian's build
    has no kubernetes_sd, so the pods it would discover are given as static targets with the
    same __meta labels; the relabelling is Prometheus's own."""
    docs = objects(rendered["examples/plain-prometheus"])
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    job_file = COMPONENT_DIR / "without-prometheus-operator" / "scrape-job.yml"
    (job,) = yaml.safe_load(job_file.read_text())
    assert job["job_name"] == "celery-exporter"  # what the shipped alerts select
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    name = exporter_deployment(docs)["spec"]["template"]["metadata"]["labels"]
    (port,) = exporter_container(docs)["ports"]
    exporter = {
        "pod_label_app_kubernetes_io_name": name["app.kubernetes.io/name"],
        "pod_container_port_name": port["name"],
        "pod_phase": "Running",
        "namespace": "monitoring",
        "pod_name": "celery-exporter-7d9f-abcde",
    }
    job["static_configs"] = [
        pod_target(free_port(), **exporter),
        pod_target(free_port(), **{**exporter, "pod_container_port_name": "http"}),
        pod_target(free_port(), **{**exporter, "pod_label_app_kubernetes_io_name": "worker"}),
        pod_target(free_port(), **{**exporter, "pod_phase": "Succeeded"}),
    ]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}))
    prometheus = Prometheus(config, tmp_path)
    try:
        prometheus.wait_ready()
        url = f"{prometheus.url}/api/v1/targets"

        def targets() -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=5) as response:
                data: dict[str, Any] = json.load(response)["data"]
                return data

        wait_for(lambda: len(targets()["droppedTargets"]) == 3, 30, "the targets to be relabelled")
        (active,) = targets()["activeTargets"]
    finally:
        prometheus.stop()
    labels = active["labels"]
    assert labels["job"] == "celery-exporter"
    # The labels the shipped rules deduplicate an HA pair by (max without (instance, pod)).
    assert (labels["namespace"], labels["pod"]) == ("monitoring", exporter["pod_name"])
    assert labels["instance"] == job["static_configs"][0]["targets"][0]
