"""The hash-pinned locks in requirements/ against the ranges in pyproject.toml.

pyproject.toml keeps the ranges a library user gets; requirements/*.txt (scripts/lock.sh) pin
one release of everything, with hashes, for the image, the demo and the test runs. They must
agree: every direct dependency is pinned, inside its range, with a hash, and a package pinned
in two locks has one version. A lock that drifts from pyproject.toml (a range raised, a
dependency added without `scripts/lock.sh`) fails here with the package named. Pure file
reading; no network.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"
# What scripts/lock.sh resolves for (uv's --python-version 3.11, x86_64 Linux): a dependency's
# environment marker is read for that machine, not for the one running the test.
LOCK_ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)\s*$")


def read_lock(text: str) -> tuple[dict[str, str], list[str]]:
    """{canonical name: version} of a lock, and its lines that are not hash-pinned."""
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    pins: dict[str, str] = {}
    problems = []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        if match is None or not match.group(3):
            problems.append(f"not pinned with a hash: {line}")
            continue
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins, problems


def disagreements(requirements: list[str], lock_text: str) -> list[str]:
    """What is wrong between these requirement strings (pyproject.toml's) and a lock."""
    pins, problems = read_lock(lock_text)
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate(LOCK_ENVIRONMENT):
            continue
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name}: in pyproject.toml, not in the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
    return problems


# mypy reads the project as Python 3.10, which has no tomllib: it checks the other branch.
if sys.version_info >= (3, 11):
    import tomllib

    def pyproject() -> dict[str, Any]:
        project: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
        return project

else:

    def pyproject() -> dict[str, Any]:
        pytest.fail("reading pyproject.toml needs tomllib (Python 3.11, what the locks are for)")


def build_in() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in (REQUIREMENTS / "build.in").open())
    return [line for line in lines if line]


def locks() -> dict[str, list[str]]:
    """Each lock and the requirements it is compiled from (scripts/lock.sh)."""
    project = pyproject()
    dependencies: list[str] = project["dependencies"]
    return {
        "runtime.txt": dependencies,
        "build.txt": [*dependencies, *build_in()],
        "test.txt": [*dependencies, *project["optional-dependencies"]["test"]],
    }


@pytest.mark.parametrize("lock", sorted(locks()))
def test_lock_pins_every_direct_dependency_inside_its_range(lock: str) -> None:
    problems = disagreements(locks()[lock], (REQUIREMENTS / lock).read_text())
    assert not problems, (
        f"requirements/{lock} disagrees with pyproject.toml (run scripts/lock.sh):\n"
        + "\n".join(problems)
    )


def test_a_package_in_two_locks_has_one_version() -> None:
    pinned = {lock: read_lock((REQUIREMENTS / lock).read_text())[0] for lock in locks()}
    runtime = pinned["runtime.txt"]
    for lock in ("build.txt", "test.txt"):
        # The runtime set is the base of the others: what the tests run is what the image ships.
        assert runtime.items() <= pinned[lock].items(), {
            name: (version, pinned[lock].get(name))
            for name, version in runtime.items()
            if pinned[lock].get(name) != version
        }
    # The mypy that compiles the image's state package is the one tests/packaging compiles with.
    for name in ("mypy", "setuptools"):
        assert pinned["build.txt"][name] == pinned["test.txt"][name], name


def test_a_drifted_pyproject_is_reported_by_package() -> None:
    """The check above can fail: a raised range, a new dependency and an unhashed pin."""
    text = (REQUIREMENTS / "runtime.txt").read_text()
    celery = read_lock(text)[0]["celery"]
    problems = disagreements(
        [f"celery[redis]>{celery}", "no-such-dependency>=1", "click>=8.1"], text
    )
    assert problems == [
        f"celery=={celery} is outside >{celery}",
        "no-such-dependency: in pyproject.toml, not in the lock",
    ]
    # A marker for another platform is not the lock's business; an unhashed pin is.
    assert disagreements(["pywin32>=1; sys_platform == 'win32'"], text) == []
    assert disagreements([], "click==8.1.0\n") == ["not pinned with a hash: click==8.1.0"]
