"""The two tracker versions the tool compares: the current sources, and a baseline copied
from another checkout's src/ under another package name, in either package layout.

The layout changed with the subpackages: the tracker moved from celery_exporter.tracker to
celery_exporter.state.tracker, the arrivals from the top level into poll/, and some names
changed (release_held -> release_deferred, the snapshot's holdings -> held_tasks). Everything
here reads a version by today's names and falls back to the old ones. Import-time only; no
threads.
"""

from __future__ import annotations

import importlib
import inspect
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

BASELINE_PACKAGE = "celery_exporter_baseline"


def tracker_of(package: str) -> ModuleType:
    """`package`'s tracker module: state.tracker, else (an older layout) tracker."""
    try:
        return importlib.import_module(f"{package}.state.tracker")
    except ModuleNotFoundError as exc:
        if exc.name not in (f"{package}.state", f"{package}.state.tracker"):
            raise  # a missing dependency, not the older layout
        return importlib.import_module(f"{package}.tracker")


def current() -> ModuleType:
    return tracker_of("celery_exporter")


def load_baseline(src: Path) -> ModuleType:
    """The baseline's tracker module, as package `celery_exporter_baseline` (it imports only
    relatively, so a renamed copy is a second, independent package)."""
    if not (src / "celery_exporter").is_dir():
        raise SystemExit(f"--baseline-src {src}: no celery_exporter package in it")
    root = Path(tempfile.mkdtemp(prefix="tracker-baseline-"))
    shutil.copytree(src / "celery_exporter", root / BASELINE_PACKAGE)
    sys.path.insert(0, str(root))
    return tracker_of(BASELINE_PACKAGE)


def exporter_module(tracker: ModuleType, name: str, old_name: str | None = None) -> ModuleType:
    """A module of the package `tracker` belongs to (current or baseline): `name` in today's
    layout, else `old_name` in a baseline from before the subpackages."""
    root = tracker.__name__.split(".")[0]
    try:
        return importlib.import_module(f"{root}.{name}")
    except ModuleNotFoundError:
        return importlib.import_module(f"{root}.{old_name or name}")


def build(module: ModuleType, clock: Callable[[], float] = time.time, **config: Any) -> Any:
    """A Tracker of that version, wired as app.py wires it (with the worker arrivals)."""
    settings = exporter_module(module, "config").Config(broker_url="redis://localhost", **config)
    try:
        takes_arrivals = "arrivals" in inspect.signature(module.Tracker).parameters
    except ValueError:  # a mypyc-compiled Tracker (setup.py) has no signature; it takes them
        takes_arrivals = True
    if not takes_arrivals:  # a baseline from before the worker arrivals
        return module.Tracker(settings, clock=clock)
    arrivals = exporter_module(module, "poll.arrivals", "arrivals").WorkerArrivals(clock)
    return module.Tracker(settings, clock=clock, arrivals=arrivals)


def releaser(tracker: Any) -> Callable[[], object]:
    """The tracker's call that releases the events it defers (release_held before)."""
    release = getattr(tracker, "release_deferred", None) or getattr(tracker, "release_held", None)
    return release if release is not None else lambda: None


def held_tasks(state: dict[str, Any]) -> dict[str, Any]:
    """A snapshot's fields under today's names (`holdings` was `held_tasks`' old name)."""
    if "holdings" in state:
        state["held_tasks"] = state.pop("holdings")
    return state
