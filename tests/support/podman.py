"""Build and run the project's Dockerfile with podman, without a Docker engine or a registry.

No image registry is reachable from these machines, so the base image is made here: Debian's
own packages, unpacked by `debootstrap` and imported into podman. The image is then built from
the repository's Dockerfile on that base (`--build-arg BASE_IMAGE=...`), exactly as users build
it on the official python image.

Both are cached in podman's own image store, tagged by what went into them: the base by its
recipe, the image by the bytes of its build context and the base it was built on. A second run
with nothing changed builds nothing; a fresh machine builds both from nothing. A file lock per
tag keeps concurrent test runs from building the same thing twice.

podman runs rootful with the `runc` runtime and cgroupfs, and with a containers.conf that sets
no default ulimits: these sandboxes cannot raise RLIMIT_NOFILE/NPROC (see facts.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import REPO_ROOT

CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"
# pip inside the build reaches the package index through this machine's TLS-intercepting
# egress only with the host's CA bundle; it is mounted for RUN steps, never stored in a layer.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

BASE_REPOSITORY = "localhost/celery-exporter-test-base"
BASE_SUITE = "bookworm"  # python3 is 3.11 there, as in the Dockerfile's default python:3.11-slim
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# The build stage's base (the Dockerfile's BUILD_IMAGE): the same, plus what mypyc compiles with.
BUILD_BASE_REPOSITORY = "localhost/celery-exporter-test-build-base"
BUILD_BASE_PACKAGES = (*BASE_PACKAGES, "gcc", "libc6-dev", "python3-dev")
BASE_MIRROR = os.environ.get("CE_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What debootstrap leaves that no image needs: downloaded .debs and package lists (~95 MB).
BASE_TRIM = ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*")

IMAGE_REPOSITORY = "localhost/celery-exporter-test"
IMAGES_KEPT = 3  # older test images of this repository are removed after a build

CACHE_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "celery-exporter-tests"
)


def missing_requirements() -> str | None:
    """Why this machine cannot build the image, or None if it can."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install podman runc debootstrap)"
    if os.geteuid() != 0:
        return "debootstrap and rootful podman need root"
    return None


class BuildError(RuntimeError):
    """debootstrap, import or build failed; the message ends with the tool's output."""


@dataclass(frozen=True)
class Podman:
    """The podman command line that works in these sandboxes."""

    conf: Path

    @classmethod
    def create(cls, directory: Path) -> Podman:
        conf = directory / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        return cls(conf)

    def command(self, *args: str) -> list[str]:
        # `env` execs podman, so the PID a caller signals is podman's own.
        return [
            "env", f"CONTAINERS_CONF={self.conf}",
            "podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", *args,
        ]  # fmt: skip

    def run(
        self, *args: str, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise BuildError(f"podman {args[0]} exited {result.returncode}:\n{_tail(result)}")
        return result

    def exists(self, image: str) -> bool:
        return self.run("image", "exists", image, check=False).returncode == 0

    def inspect(self, what: str) -> dict[str, object]:
        found: list[dict[str, object]] = json.loads(self.run("inspect", what).stdout)
        return found[0]


def _tail(result: subprocess.CompletedProcess[str], lines: int = 40) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


def _digest(parts: Sequence[bytes]) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(hashlib.sha256(part).digest())
    return sha.hexdigest()[:16]


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def base_image_ref(
    repository: str = BASE_REPOSITORY, packages: Sequence[str] = BASE_PACKAGES
) -> str:
    recipe = json.dumps([BASE_SUITE, list(packages), BASE_MIRROR, BASE_TRIM]).encode()
    return f"{repository}:{BASE_SUITE}-{_digest([recipe])}"


def ensure_base_image(
    podman: Podman, repository: str = BASE_REPOSITORY, packages: Sequence[str] = BASE_PACKAGES
) -> str:
    """A Debian base image with `packages`, debootstrapped and imported unless the store
    already has it."""
    ref = base_image_ref(repository, packages)
    with _locked(ref.rpartition(":")[2]):
        if podman.exists(ref):
            return ref
        with tempfile.TemporaryDirectory(prefix="ce-base-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            result = subprocess.run(
                [
                    "debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
                    BASE_SUITE, str(rootfs), BASE_MIRROR,
                ],
                capture_output=True, text=True, timeout=1200, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise BuildError(f"debootstrap exited {result.returncode}:\n{_tail(result)}")
            for pattern in BASE_TRIM:
                for path in rootfs.glob(pattern):
                    if not path.is_dir():  # apt's `partial/` directories stay
                        path.unlink()
            tarball = Path(tmp) / "rootfs.tar"
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
            podman.run("import", str(tarball), ref, timeout=600)
    return ref


def context_files(repo: Path = REPO_ROOT) -> list[Path]:
    """The files `.dockerignore` lets into the build context (its `*`, `!path`, `**/name`)."""
    lines = [
        line.strip()
        for line in (repo / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    ignored = [line.removeprefix("**/") for line in lines if line not in ("*",) and line[0] != "!"]
    files: list[Path] = []
    for root in allowed:
        path = repo / root
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for candidate in candidates:
            parts = candidate.relative_to(repo).parts
            if not any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in ignored):
                files.append(candidate)
    return files


def image_ref(podman: Podman, base: str, build_base: str, repo: Path = REPO_ROOT) -> str:
    """The tag for an image of this context on these bases: same inputs, same tag."""
    parts = [
        podman.run("image", "inspect", "--format", "{{.Id}}", image).stdout.strip().encode()
        for image in (base, build_base)
    ]
    for path in [repo / "Dockerfile", repo / ".dockerignore", *context_files(repo)]:
        parts += [str(path.relative_to(repo)).encode(), path.read_bytes()]
    return f"{IMAGE_REPOSITORY}:{_digest(parts)}"


def ensure_image(podman: Podman, base: str, build_base: str, repo: Path = REPO_ROOT) -> str:
    """The exporter image built from the repository's Dockerfile on `base` (its build stage on
    `build_base`), unless cached."""
    ref = image_ref(podman, base, build_base, repo)
    with _locked(ref.rpartition(":")[2]):
        if podman.exists(ref):
            return ref
        mounts = []
        if HOST_CA_BUNDLE.exists():
            mounts = ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        # --format docker: the OCI format has no HEALTHCHECK, and podman would drop it.
        # No layer cache: the whole image is cached by its inputs, and the one costly step
        # (pip install) changes whenever they do.
        podman.run(
            "build", "--format", "docker", "--layers=false", "--network", "host", *mounts,
            "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"BUILD_IMAGE={build_base}",
            "--tag", ref, str(repo),
            timeout=1200,
        )  # fmt: skip
    _remove_old_images(podman, base, keep=ref)
    return ref


def _remove_old_images(podman: Podman, base: str, keep: str) -> None:
    """Keep the newest few test images, and no untagged build stages on the test base.

    Only images built on our own base are touched; one in use by a container stays (no force).
    """
    listed = podman.run(
        "images", "--format", "{{.Repository}}:{{.Tag}}", "--sort", "created", IMAGE_REPOSITORY
    ).stdout.split()
    stale = [ref for ref in listed if ref != keep][IMAGES_KEPT - 1 :]
    for ref in stale:
        podman.run("rmi", ref, check=False)
    base_layer = _layers(podman, base)[0]
    dangling = podman.run("images", "--quiet", "--filter", "dangling=true").stdout.split()
    for image in dangling:
        if _layers(podman, image)[:1] == [base_layer]:
            podman.run("rmi", image, check=False)


def _layers(podman: Podman, image: str) -> list[str]:
    found = podman.run(
        "image", "inspect", "--format", "{{json .RootFS.Layers}}", image, check=False
    )
    layers: list[str] = json.loads(found.stdout or "[]") or []
    return layers
