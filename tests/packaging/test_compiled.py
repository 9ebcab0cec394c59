"""The mypyc build (setup.py, CE_MYPYC=1) counts what the pure-Python package counts.

Builds the wheel as a user would (`CE_MYPYC=1 pip wheel --no-build-isolation`), from a copy of
the package's files so the checkout gains no build/ directory, unpacks it, and runs against the
compiled modules: the unit tests (every one, as they run on the sources) and `bench.tracker diff`
(the compiled tracker against the sources, on corrupted and disordered streams). mypyc turns
type annotations into run-time checks, so an annotation that lies would show here as a
difference in what is counted or as a failed test. A minute or two of CPU, most of it the C
compiler.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT

PACKAGE_FILES = ("pyproject.toml", "setup.py", "README.md", "src")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the compiled build of the package, importable by PYTHONPATH."""
    root = tmp_path_factory.mktemp("mypyc")
    source = root / "source"
    source.mkdir()
    for name in PACKAGE_FILES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check"]
    build = subprocess.run(
        [*pip_wheel, "--no-build-isolation", "--no-deps", "-w", str(root / "dist"), str(source)],
        env={**os.environ, "CE_MYPYC": "1"},
        cwd=source,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (root / "dist").glob("*.whl")
    site = root / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def run_compiled(site: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        env={**os.environ, "PYTHONPATH": os.pathsep.join((str(site), str(REPO_ROOT)))},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_the_event_path_is_compiled(compiled: Path) -> None:
    import setup as build_script  # the repository's setup.py: its list of compiled modules

    names = sorted(Path(path).stem for path in build_script.COMPILED)
    state = compiled / "celery_exporter" / "state"
    built = sorted(path.name.split(".")[0] for path in state.glob("*.so"))
    assert built == names
    # ... and what runs from that directory is the compiled code, not the sources beside it.
    probe = "import celery_exporter.state.tracker as t; print(t.__file__)"
    assert run_compiled(compiled, "-c", probe).stdout.strip().endswith(".so")


def test_unit_tests_pass_on_the_compiled_build(compiled: Path) -> None:
    result = run_compiled(compiled, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit")
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout.splitlines()[-1]


def test_compiled_tracker_counts_what_the_sources_count(compiled: Path) -> None:
    src = REPO_ROOT / "src"
    result = run_compiled(compiled, "-m", "bench.tracker", "diff", "--baseline-src", str(src))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "of 10 runs counted the same" in result.stdout
