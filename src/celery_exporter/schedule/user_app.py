"""Loading the user's Celery app from `-A/--app`, once, at start-up, in the main thread.

The value follows the Celery CLI's own convention (`celery -A proj worker`): `module`,
`module:attribute` or `module.attribute`, found by celery's own `find_app`, with the current
directory importable as it is for `celery -A`. Importing it runs the user's code, which may
raise anything: every failure becomes one ConfigError line naming the option (exit 2).
"""

from __future__ import annotations

from celery import Celery
from celery.app.utils import find_app

from ..config import ConfigError


def load_app(spec: str) -> Celery:
    """The Celery app that `spec` names, or ConfigError."""
    try:
        found = find_app(spec)
    except Exception as exc:  # the user's module runs here: any error is a bad --app
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
