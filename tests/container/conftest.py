"""Fixtures of the container tier: podman, the image (built or taken from the cache) and
locked-down containers of it. Without podman, runc, debootstrap or root the whole tier fails
with one reason under CI=true or CE_CONTAINER_REQUIRED=1 (scripts/test.sh's full run sets it;
TEST_SKIP_TIERS=container opts out there); elsewhere, as in a local subset run, it is skipped
with that reason and the rest of the suite runs.

What the tier measures (image size, build time, start-up time) is printed in the terminal
summary so the numbers in docs/container.md can be checked against a run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exporter_container import MEASURED, ContainerExporter, ContainerFactory
from tests.support.podman import (
    BUILD_BASE_PACKAGES,
    BUILD_BASE_REPOSITORY,
    Podman,
    ensure_base_image,
    ensure_image,
    missing_requirements,
)


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    reason = missing_requirements()
    if reason is not None:
        # A CI run, or a full run, must not pass green on a tier that never ran.
        if os.environ.get("CI") == "true" or os.environ.get("CE_CONTAINER_REQUIRED") == "1":
            pytest.fail(f"container tier cannot run: {reason} (opt out: TEST_SKIP_TIERS=container)")
        pytest.skip(f"container tier not run: {reason}")
    return Podman.create(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="session")
def exporter_image(podman: Podman) -> str:
    started = time.monotonic()
    base = ensure_base_image(podman)
    MEASURED["base image"] = f"{base} ({time.monotonic() - started:.1f} s)"
    started = time.monotonic()
    build_base = ensure_base_image(podman, BUILD_BASE_REPOSITORY, BUILD_BASE_PACKAGES)
    MEASURED["build stage's base image"] = f"{build_base} ({time.monotonic() - started:.1f} s)"
    started = time.monotonic()
    image = ensure_image(podman, base, build_base)
    MEASURED["exporter image"] = f"{image} ({time.monotonic() - started:.1f} s)"
    return image


@pytest.fixture
def container_factory(
    podman: Podman, exporter_image: str, tmp_path: Path
) -> Iterator[ContainerFactory]:
    """Start containers of the image against a broker URL; all stopped and removed at teardown."""
    started: list[ContainerExporter] = []

    def start(broker_url: str) -> ContainerExporter:
        container = ContainerExporter(podman, exporter_image, broker_url, tmp_path / "container")
        started.append(container)
        return container

    try:
        yield start
    finally:
        for container in started:
            container.stop()
            container.remove()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASURED:
        terminalreporter.section("container image")
        for what, value in MEASURED.items():
            terminalreporter.write_line(f"{what}: {value}")
