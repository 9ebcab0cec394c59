"""The TLS part of the web config file: the server's certificate and key, client certificate
authentication, protocol versions and cipher suites, built into one ssl.SSLContext at start.

Names and defaults are the exporter-toolkit's (Go's), mapped onto Python's ssl module; what
Python cannot honour is refused or logged, never silently weakened.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .config_checks import FileError, check_keys, string

log = logging.getLogger(__name__)

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# The toolkit takes Go's (IANA) names; OpenSSL knows the same suites by other names.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
}
# TLS 1.3 suites cannot be narrowed in Go either; naming them is accepted and changes nothing.
TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
TLS_KEYS = frozenset(
    {
        "cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file",
        "client_auth_type", "min_version", "max_version", "cipher_suites",
        "prefer_server_cipher_suites",
    }
)  # fmt: skip


def ssl_context(tls: dict[str, Any], base: Path) -> ssl.SSLContext | None:
    if not tls:
        return None
    check_keys(tls, TLS_KEYS, "tls_server_config.")
    text_keys = TLS_KEYS - {"cipher_suites", "prefer_server_cipher_suites"}
    get = {key: string(tls, key, "tls_server_config") for key in text_keys}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _tls_version(get["min_version"] or "TLS12", "min_version")
    context.maximum_version = _tls_version(get["max_version"] or "TLS13", "max_version")
    if context.minimum_version > context.maximum_version:
        raise FileError("tls_server_config: min_version is above max_version")
    _load_server_cert(context, get, base)
    _client_auth(context, get, base)
    _ciphers(context, tls.get("cipher_suites"))
    prefer = tls.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise FileError("tls_server_config.prefer_server_cipher_suites must be true or false")
    if not prefer:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _tls_version(name: str, key: str) -> ssl.TLSVersion:
    if name not in TLS_VERSIONS:
        raise FileError(f"tls_server_config.{key} {name!r}: want TLS12 or TLS13")
    return TLS_VERSIONS[name]


class _Pem(NamedTuple):
    text: str  # "" when the config names neither key
    what: str  # how messages name it: "tls_server_config.cert" or "cert_file /path"
    path: Path | None  # the file it was read from; None when inline


def _pem(get: Mapping[str, str], inline: str, file_key: str, base: Path) -> _Pem:
    """The PEM text from the inline key or the file key; empty if neither."""
    if get[inline] and get[file_key]:
        raise FileError(f"tls_server_config: give {inline} or {file_key}, not both")
    if get[inline]:
        what = f"tls_server_config.{inline}"
        if not get[inline].isascii():
            raise FileError(f"{what} is not PEM text")
        return _Pem(get[inline], what, None)
    if not get[file_key]:
        return _Pem("", "", None)
    path = base / get[file_key]
    try:
        return _Pem(path.read_text(encoding="ascii"), f"{file_key} {path}", path)
    except OSError as exc:
        raise FileError(f"cannot read {file_key} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise FileError(f"{file_key} {path} is not PEM text") from None


def _load_server_cert(context: ssl.SSLContext, get: Mapping[str, str], base: Path) -> None:
    cert = _pem(get, "cert", "cert_file", base)
    key = _pem(get, "key", "key_file", base)
    if not cert.text or not key.text:
        raise FileError("tls_server_config needs cert_file and key_file (or cert and key)")
    if "-----BEGIN CERTIFICATE-----" not in cert.text:
        raise FileError(f"{cert.what} holds no PEM certificate")
    if "PRIVATE KEY-----" not in key.text:
        raise FileError(f"{key.what} holds no PEM private key")
    if cert.path is not None and key.path is not None:
        # Straight from the files: no scratch copy, so a read-only root needs no /tmp.
        _load_cert_chain(context, cert, key, cert.path, key.path)
        return
    # load_cert_chain reads only files; inline PEM goes through a private temporary directory.
    inline = [pem.what for pem in (cert, key) if pem.path is None]
    try:
        scratch = tempfile.TemporaryDirectory(prefix="celery-exporter-tls-")
    except OSError as exc:
        raise _no_scratch(inline, exc) from None
    with scratch:
        cert_path, key_path = cert.path, key.path
        try:
            if cert_path is None:
                cert_path = Path(scratch.name) / "cert.pem"
                cert_path.write_text(cert.text, encoding="ascii")
            if key_path is None:
                key_path = Path(scratch.name) / "key.pem"
                key_path.touch(mode=0o600)
                key_path.write_text(key.text, encoding="ascii")
        except OSError as exc:
            raise _no_scratch(inline, exc) from None
        _load_cert_chain(context, cert, key, cert_path, key_path)


def _load_cert_chain(
    context: ssl.SSLContext, cert: _Pem, key: _Pem, cert_path: Path, key_path: Path
) -> None:
    def no_password() -> bytes:
        # OpenSSL would otherwise prompt on the terminal and a daemon would hang there.
        raise FileError(f"{key.what} is encrypted; the exporter needs an unencrypted key")

    try:
        context.load_cert_chain(cert_path, key_path, password=no_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise FileError(f"{cert.what} does not match {key.what}") from None
        raise FileError(f"{cert.what} / {key.what}: unusable ({exc.reason or exc})") from None
    except OSError as exc:  # e.g. a Secret rotated away between reading and loading
        raise FileError(f"{cert.what} / {key.what}: cannot load ({exc.strerror or exc})") from None


def _no_scratch(inline: list[str], exc: OSError) -> FileError:
    where = f": {exc.filename}" if exc.filename else ""
    verb = "needs" if len(inline) == 1 else "need"
    return FileError(
        f"inline {' and '.join(inline)} {verb} a writable temporary directory "
        f"({exc.strerror or exc}{where}); set TMPDIR, or use cert_file and key_file"
    )


def _client_auth(context: ssl.SSLContext, get: Mapping[str, str], base: Path) -> None:
    auth_type = get["client_auth_type"] or "NoClientCert"
    if auth_type == "RequireClientCert":  # the toolkit's old name for it
        auth_type = "RequireAnyClientCert"
    if auth_type not in CLIENT_AUTH_TYPES:
        raise FileError(
            f"tls_server_config.client_auth_type {auth_type!r}: want one of "
            + ", ".join(CLIENT_AUTH_TYPES)
        )
    ca, ca_what, _ = _pem(get, "client_ca", "client_ca_file", base)
    if ca and auth_type == "NoClientCert":
        raise FileError(
            "client_ca_file is set but client_auth_type is NoClientCert; "
            "set client_auth_type: RequireAndVerifyClientCert"
        )
    if auth_type in ("NoClientCert", "RequestClientCert"):
        # The exporter never reads an unverified certificate, so asking for one changes nothing.
        context.verify_mode = ssl.CERT_NONE
    elif not ca:
        raise FileError(f"client_auth_type {auth_type} needs client_ca_file (or client_ca)")
    elif auth_type == "VerifyClientCertIfGiven":
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        if auth_type == "RequireAnyClientCert":
            log.warning(
                "web config: Python's ssl verifies every client certificate it requires, so "
                "RequireAnyClientCert is enforced as RequireAndVerifyClientCert"
            )
        context.verify_mode = ssl.CERT_REQUIRED
    if ca:
        if "-----BEGIN CERTIFICATE-----" not in ca:
            raise FileError(f"{ca_what} holds no PEM certificate")
        try:
            context.load_verify_locations(cadata=ca)
        except ssl.SSLError as exc:
            raise FileError(f"{ca_what}: unusable CA ({exc.reason or exc})") from None


def _ciphers(context: ssl.SSLContext, suites: Any) -> None:
    if suites is None or suites == []:
        return
    if not isinstance(suites, list) or not all(isinstance(s, str) for s in suites):
        raise FileError("tls_server_config.cipher_suites must be a list of names")
    names = []
    for suite in suites:
        if suite in TLS13_SUITES:
            continue
        if suite not in CIPHER_SUITES:
            raise FileError(f"tls_server_config.cipher_suites: unknown or insecure suite {suite!r}")
        names.append(CIPHER_SUITES[suite])
    if names:
        try:
            context.set_ciphers(":".join(names))
        except ssl.SSLError:
            raise FileError(
                "tls_server_config.cipher_suites: OpenSSL offers none of them"
            ) from None
