"""Shape checks of the web config file, shared by web_config.py and tls.py: mappings, known
keys, strings, and the error that names what is wrong (load_web_config adds the file name)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Known toolkit keys we cannot honour; accepting them silently would weaken what the file says.
UNSUPPORTED = {
    "rate_limit": "rate_limit is not supported",
    "tls_server_config.client_allowed_sans": "client_allowed_sans is not supported; "
    "issue client certificates from a CA used only for scraping instead",
    "tls_server_config.curve_preferences": "curve_preferences is not supported",
}


class FileError(Exception):
    """A problem in the file; load_web_config prefixes the file name."""


def mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FileError(f"{where} must be a mapping, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise FileError(f"{where}: key {key!r} is not a string (quote it)")
    return value


def check_keys(mapping: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in mapping:
        where = f"{prefix}{key}"
        if where in UNSUPPORTED:
            raise FileError(UNSUPPORTED[where])
        if key not in allowed:
            raise FileError(f"unknown key {where!r}")


def string(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = mapping.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FileError(f"{where}.{key} must be a string")
    return value
