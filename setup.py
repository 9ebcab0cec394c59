"""Optional mypyc build of the state package; everything else is in pyproject.toml.

`CE_MYPYC=1 pip install --no-build-isolation .` (with mypy and a C compiler installed) compiles
src/celery_exporter/state/, the per-event code that is about half of the exporter's CPU on a
busy Redis stream, into C extensions; its measured gain is stated once, in bench/README.md
("The compiled build"). Without CE_MYPYC this is the pure-Python package, the same code; it
counts the same either way (tests/packaging/test_compiled.py runs the unit tests and the
tracker diff against the compiled modules). Not for editable installs: the compiled modules
would shadow the sources being edited.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from setuptools import setup

# The state package: the tracker and the tables it writes, the code run for every event. The
# rest (I/O, HTTP, scrapes, the CLI) gains nothing measurable from compiling and stays pure.
ROOT = Path(__file__).parent
STATE = ROOT / "src" / "celery_exporter" / "state"
# Paths relative to the project, as mypycify wants them; __init__.py holds only a docstring.
COMPILED = sorted(
    str(path.relative_to(ROOT)) for path in STATE.glob("*.py") if path.name != "__init__.py"
)


def ext_modules() -> list[Any]:
    if os.environ.get("CE_MYPYC", "") != "1":
        return []
    from mypyc.build import mypycify  # from mypy: present only for this build

    return list(mypycify(COMPILED, opt_level="3"))


if __name__ == "__main__":  # as setuptools runs it; tests import COMPILED
    setup(ext_modules=ext_modules())
