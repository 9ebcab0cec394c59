"""JSON and text over HTTP with a timeout, for the operator commands; standard library only.

Every failure becomes one HttpError whose message is one line an operator can act on
(connection refused, timed out, HTTP 404 with the server's own message), never a traceback.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from typing import Any


class HttpError(RuntimeError):
    """A request failed; `status` is the HTTP status when the server answered, else None."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def join(base: str, path: str, **params: str) -> str:
    url = base.rstrip("/") + path
    return f"{url}?{urllib.parse.urlencode(params)}" if params else url


def get_text(url: str, timeout: float, headers: dict[str, str] | None = None) -> str:
    """GET `url` and return the body as text; HttpError on any failure."""
    return get_response(url, timeout, headers)[0]


def get_response(
    url: str, timeout: float, headers: dict[str, str] | None = None
) -> tuple[str, Message]:
    """GET `url`: (body as text, response headers); HttpError on any failure."""
    request = urllib.request.Request(
        url, headers={"User-Agent": "celery-exporter", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read().decode("utf-8", errors="replace"), response.headers
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode("utf-8", errors="replace")
        body: Any = raw
        detail = raw.strip().splitlines()[0][:200] if raw.strip() else exc.reason
        try:
            body = json.loads(raw)
            if isinstance(body, dict):
                detail = str(body.get("error") or body.get("message") or detail)
        except ValueError:
            pass
        raise HttpError(f"HTTP {exc.code} from {_where(url)}: {detail}", exc.code, body) from None
    except TimeoutError:
        raise HttpError(f"no answer from {_where(url)} within {timeout:g}s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise HttpError(f"no answer from {_where(url)} within {timeout:g}s") from None
        text = getattr(reason, "strerror", None) or str(reason)
        raise HttpError(f"cannot reach {_where(url)}: {text}") from None
    except (OSError, ValueError) as exc:
        raise HttpError(f"cannot reach {_where(url)}: {exc}") from None


def get_json(url: str, timeout: float, headers: dict[str, str] | None = None) -> Any:
    """GET `url` and decode JSON; HttpError on any failure, including a body that is not JSON."""
    text = get_text(url, timeout, headers)
    try:
        return json.loads(text)
    except ValueError:
        raise HttpError(f"{_where(url)} did not answer JSON") from None


def _where(url: str) -> str:
    """The URL without query string or credentials, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
