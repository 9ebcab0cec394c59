"""The exporter image run the way Kubernetes runs it, driven like the exporter subprocess.

`podman run` stays in the foreground, so the test's ExporterProcess machinery (log file,
/healthz wait, scrapes, SIGTERM on stop, which podman passes on to the container) works
unchanged. The container gets the deployment's securityContext: UID/GID 10001, read-only root
file system with no writable tmpfs at all, every capability dropped, no privilege escalation.
Host networking, listening on loopback only, reaches the Redis and workers the tests start.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from tests.support.exporter_process import ExporterProcess
from tests.support.podman import (
    Podman,
)

SECURITY_CONTEXT = (
    "--user", "10001:10001",
    "--read-only", "--read-only-tmpfs=false",
    "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges",
)  # fmt: skip


class ContainerExporter(ExporterProcess):
    """The image's entrypoint in a locked-down container, configured by CE_* variables."""

    def __init__(self, podman: Podman, image: str, broker_url: str, log_dir: Path) -> None:
        super().__init__(broker_url, log_dir)
        self.podman = podman
        self.image = image
        self.name = f"ce-test-{uuid.uuid4().hex[:10]}"

    def command(self) -> list[str]:
        return self.podman.command(
            "run", "--rm", "--name", self.name, "--network", "host", *SECURITY_CONTEXT,
            "--env", f"CE_BROKER_URL={self.broker_url}",
            "--env", f"CE_PORT={self.port}",
            "--env", "CE_HOST=127.0.0.1",
            self.image,
        )  # fmt: skip

    def pid(self) -> int:
        """The host PID of the container's PID 1: the exporter itself."""
        state = self.podman.inspect(self.name)["State"]
        assert isinstance(state, dict)
        pid = int(state["Pid"])
        assert pid > 0, state
        return pid

    def healthcheck(self, timeout: float = 30.0) -> int:
        """Run the image's HEALTHCHECK in the container now; podman's exit code (0 healthy)."""
        result = self.podman.run("healthcheck", "run", self.name, timeout=timeout, check=False)
        return result.returncode

    def remove(self) -> None:
        """Make sure the container is gone even if podman itself was killed."""
        self.podman.run("rm", "--force", "--ignore", self.name, check=False)


ContainerFactory = Callable[[str], ContainerExporter]


MEASURED: dict[str, str] = {}
