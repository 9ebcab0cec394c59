"""The container image, built from the repository's Dockerfile and run for real.

Run as Kubernetes runs it (UID 10001, read-only root file system, every capability dropped)
against a real Redis and a real prefork worker on the host: it counts the worker's tasks, its
own HEALTHCHECK follows the exporter's state, SIGTERM ends it promptly and cleanly, and the
image carries only what it needs to run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.exporter_container import MEASURED, ContainerExporter, ContainerFactory
from tests.support.podman import Podman
from tests.support.producer import producer, send
from tests.support.servers import WorkerFactory, pid_alive, wait_for

pytestmark = pytest.mark.container
HOST = socket.gethostname()
SIGTERM_DEADLINE = 2.0  # seconds; Kubernetes' grace period is 30, but rollouts wait on it


def image_config(podman: Podman, image: str) -> dict[str, Any]:
    return podman.inspect(image)


def test_image_runs_as_uid_10001_with_healthcheck_and_entrypoint(
    podman: Podman, exporter_image: str
) -> None:
    config = image_config(podman, exporter_image)
    MEASURED["image size"] = f"{int(config['Size']) / 1e6:.0f} MB (on the debootstrap'd base)"
    assert config["Config"]["User"] == "10001:10001"
    assert config["Config"]["Entrypoint"] == ["celery-exporter"]
    assert "9808/tcp" in config["Config"]["ExposedPorts"]
    test = config["Healthcheck"]["Test"]
    assert test[:2] == ["CMD", "python"] and "/healthz" in test[-1]


# Runs inside the image as root, so that nothing is hidden by permissions.
FIND_LEFTOVERS = r"""
import json, os, re
compiler = re.compile(
    r"^((x86_64|aarch64)-linux-gnu-)?(gcc|g\+\+|cc|c\+\+|clang|cc1|cc1plus|tcc)(-\d+)?$"
)
found = {"files": 0, "sources": [], "caches": [], "compilers": [], "package": []}
for root, dirs, files in os.walk("/"):
    if root in ("/proc", "/sys", "/dev"):
        dirs[:] = []
        continue
    found["files"] += len(files)
    for name in files:
        path = os.path.join(root, name)
        if name == "pyproject.toml":  # the project's own; wheels carry none
            found["sources"].append(path)
        if compiler.match(name):
            found["compilers"].append(path)
    for name in dirs:
        path = os.path.join(root, name)
        if name == "celery_exporter":
            (found["sources"] if root.endswith("/src") else found["package"]).append(path)
        # pip's HTTP and wheel cache, or its build directories left in a temp dir
        if name == "pip" and "/.cache" in path or root in ("/tmp", "/var/tmp"):
            found["caches"].append(path)
for path in ("/src", "/root/.cache", "/home"):
    if os.path.exists(path) and (path != "/home" or os.listdir(path)):
        found["sources" if path == "/src" else "caches"].append(path)
print(json.dumps(found))
"""


def test_image_holds_no_source_tree_pip_cache_or_compiler(
    podman: Podman, exporter_image: str
) -> None:
    result = podman.run(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "python3",
        exporter_image, "-c", FIND_LEFTOVERS,
        timeout=120,
    )  # fmt: skip
    found = json.loads(result.stdout)
    assert found["files"] > 1000, found  # the walk saw the image
    assert found["package"] and all("site-packages" in p for p in found["package"]), found
    assert found["sources"] == [], "source tree in the image"
    assert found["caches"] == [], "pip cache in the image"
    assert found["compilers"] == [], "compiler in the image"


def test_image_runs_the_compiled_tracker(podman: Podman, exporter_image: str) -> None:
    # The Dockerfile's build stage compiles the per-event modules with mypyc (setup.py).
    probe = "import celery_exporter.state.tracker as t, celery_exporter.state.task_events as e; "
    probe += "print(t.__file__, e.__file__)"
    result = podman.run(
        "run", "--rm", "--network", "none", "--entrypoint", "python3", exporter_image, "-c", probe,
        timeout=120,
    )  # fmt: skip
    files = result.stdout.split()
    assert len(files) == 2 and all(f.endswith(".so") for f in files), result.stdout


def first_metrics(container: ContainerExporter, timeout: float = 60.0) -> None:
    def served() -> bool:
        assert container.proc is not None
        if container.proc.poll() is not None:
            raise AssertionError(f"container exited {container.proc.returncode}\n{container.log}")
        try:
            return container.get("/metrics")[0] == 200
        except (OSError, urllib.error.URLError):
            return False

    wait_for(served, timeout, f"first /metrics from the container\n{container.log}", step=0.02)


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_locked_down_container_counts_a_real_workers_tasks(
    redis_url: str, worker_factory: WorkerFactory, container_factory: ContainerFactory
) -> None:
    container = container_factory(redis_url)
    started = time.monotonic()
    container.start(wait=False)
    first_metrics(container)
    MEASURED["start-up to first /metrics"] = f"{time.monotonic() - started:.2f} s from podman run"

    status = proc_status(container.pid())
    assert status["Uid"].split() == ["10001"] * 4
    assert status["Gid"].split() == ["10001"] * 4
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, capabilities
    assert status["NoNewPrivs"] == "1"
    # As root, so that only the read-only mount (not file permissions) can refuse the write.
    probe = container.podman.run(
        "exec", "--user", "0", container.name, "touch", "/probe", check=False
    )
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe.stderr

    queue = f"container-{uuid.uuid4().hex[:8]}"
    worker = worker_factory(redis_url, queues=(queue,))
    container.wait_value(
        "celery_worker_up", {"hostname": HOST, "worker": worker.hostname}, lambda v: v == 1
    )
    send(producer(redis_url), "workload.add", queue, times=5, args=(2, 3))
    labels = {"name": "workload.add", "hostname": HOST, "queue_name": queue}
    container.wait_value("celery_task_succeeded_total", labels, lambda v: v == 5, timeout=30)
    # Summed over queue_name: the first task's received event may beat the producer's first
    # task-sent and then carries the default queue (docs/metrics.md, "Where queue_name comes from").
    received = [
        value
        for (name, label_set), value in container.scrape().items()
        if name == "celery_task_received_total" and ("name", "workload.add") in label_set
    ]
    assert sum(received) == 5
    assert container.value("celery_exporter_broker_up") == 1


def test_healthcheck_follows_the_exporter(
    redis_url: str, container_factory: ContainerFactory
) -> None:
    container = container_factory(redis_url)
    container.start()
    assert container.healthcheck() == 0
    # A stopped (hung) exporter: the check's own timeout must turn it unhealthy.
    pid = container.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        assert container.healthcheck() != 0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert container.healthcheck() == 0


def test_sigterm_stops_it_fast_with_exit_0_and_the_healthcheck_then_fails(
    podman: Podman, exporter_image: str, redis_url: str, container_factory: ContainerFactory
) -> None:
    container = container_factory(redis_url)
    container.start()
    container.wait_value("celery_exporter_broker_up", {}, lambda v: v == 1)
    pid = container.pid()
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)  # what the runtime does on `kubectl delete pod`
    wait_for(lambda: not pid_alive(pid), 30, "the exporter to exit after SIGTERM", step=0.01)
    elapsed = time.monotonic() - started
    MEASURED["SIGTERM to exit"] = f"{elapsed:.2f} s"
    assert container.proc is not None
    assert container.proc.wait(30) == 0, container.log  # podman run returns the exit code
    assert elapsed < SIGTERM_DEADLINE, f"{elapsed:.2f} s\n{container.log}"

    # The image's HEALTHCHECK command, in a fresh container of the image, on the same port.
    test = image_config(podman, exporter_image)["Healthcheck"]["Test"]
    check = podman.run(
        "run", "--rm", "--network", "host", "--env", f"CE_PORT={container.port}",
        "--entrypoint", test[1], exporter_image, *test[2:],
        check=False,
    )  # fmt: skip
    assert check.returncode == 1
    # One line naming the error, not a traceback (podman's own lines carry `level=`).
    said = [line for line in check.stderr.splitlines() if "level=" not in line]
    assert len(said) == 1 and said[0].startswith("unhealthy: "), check.stderr
