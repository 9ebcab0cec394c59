"""Loading the user's Celery app from `-A/--app`, once, at start-up, in the main thread.

The value follows the Celery CLI's own convention (`celery -A proj worker`): `module`,
`module:attribute` or `module.attribute`, found by celery's own `find_app`, with the current
directory importable as it is for `celery -A`. Importing it runs the user's code, which may
raise anything: every failure becomes one ConfigError line naming the option (exit 2).
"""

from __future__ import annotations

import importlib
import os
import sys

from celery import Celery
from celery.app.utils import find_app

from ..config import ConfigError

_MISSING = object()


def load_app(spec: str) -> Celery:
    """The Celery app that `spec` names, or ConfigError."""
    if os.getcwd() not in sys.path and "" not in sys.path:  # as `celery -A` does
        sys.path.insert(0, os.getcwd())
    module, colon, attribute = spec.partition(":")
    try:
        if colon:  # find_app would report a missing attribute as a missing module
            found = getattr(importlib.import_module(module), attribute, _MISSING)
            if found is _MISSING:
                raise ConfigError(f"--app {spec!r}: module {module!r} has no {attribute!r}")
        else:
            found = find_app(spec)
    except ConfigError:
        raise
    except (Exception, SystemExit) as exc:  # the user's module runs here: any error is bad
        raise ConfigError(f"--app {spec!r}: cannot load it: {_one_line(exc)}") from None
    if not isinstance(found, Celery):
        raise ConfigError(
            f"--app {spec!r}: names a {type(found).__name__}, not a Celery app "
            "(want module:attribute, as for celery -A)"
        )
    return found


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"
