"""deploy/kubernetes rendered by the real `kubectl kustomize`, and ways to find objects in it.

Shared by the Kubernetes test modules (test_kubernetes*.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
BROKER_SECRET = ("celery-exporter-broker", "broker-url")

Obj = dict[str, Any]


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


def objects(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[Obj], kind: str, name: str | None = None) -> Obj:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(matches) == 1, f"want one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def exporter_deployment(docs: list[Obj]) -> Obj:
    """The exporter's Deployment, whatever namePrefix an overlay gave it."""
    found = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name")
        == "celery-exporter"
    ]
    assert len(found) == 1, f"want one exporter Deployment, found {len(found)}"
    return found[0]


def exporter_container(docs: list[Obj]) -> Obj:
    containers = exporter_deployment(docs)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "celery-exporter")


def render_all() -> dict[str, str]:
    """kustomization dir (relative to deploy/kubernetes, "." for the top) -> rendered YAML."""
    return {str(d.relative_to(K8S)): render(d) for d in KUSTOMIZATIONS}
