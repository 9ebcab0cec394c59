"""Optional mypyc build of the event path; everything else about the package is in pyproject.toml.

`CE_MYPYC=1 pip install --no-build-isolation .` (with mypy and a C compiler installed) compiles
the tracker, the per-event code that is about half of the exporter's CPU on a busy Redis
stream, into C extensions: 1.4x the tracker's pure-Python speed and 1.16x the whole drain
(bench/README.md). Without CE_MYPYC this is the pure-Python package, the same code; it counts
the same either way (tests/packaging/test_compiled.py runs the unit tests and bench.tracker_diff
against the compiled modules). Not for editable installs: the compiled modules would shadow
the sources being edited.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import setup

# The tracker and the tables it writes: the code run for every event. The rest (I/O, HTTP,
# scrapes, the CLI) gains nothing measurable from compiling and stays pure Python.
COMPILED = [
    f"src/celery_exporter/{name}.py"
    for name in (
        "events",
        "held",
        "holding",
        "in_flight",
        "late_sends",
        "missed",
        "queue_age",
        "series",
        "task_events",
        "task_labels",
        "tracker",
        "workers",
    )
]


def ext_modules() -> list[Any]:
    if os.environ.get("CE_MYPYC", "") != "1":
        return []
    from mypyc.build import mypycify  # from mypy: present only for this build

    return list(mypycify(COMPILED, opt_level="3"))


if __name__ == "__main__":  # as setuptools runs it; tests import COMPILED
    setup(ext_modules=ext_modules())
