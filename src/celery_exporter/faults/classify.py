"""Broker errors in an operator's words: what is wrong and which setting to look at.

The same fault reaches each thread wrapped differently (on the event thread kombu's
OperationalError around redis-py's ConnectionError around ssl's error; on the poll thread the
client's own error), so a fault is recognised from the whole exception chain, by type and text,
and gets a `kind`: two reports of one kind are one problem, which faults/outages.py logs once. The
kinds are broad on purpose: while a broker restarts one thread may see "refused" and another
"reset", and in a TLS 1.3 handshake the same rejected certificate may surface as an alert or as
an EOF. That is still one outage.

No client library is imported: their errors are recognised by class name and text (only the
standard library's socket and ssl errors by type), so this works whichever transport is
installed. No password reaches the text: every one in the URL is replaced.

A refusal (the user is logged in but may not do what was asked) names the user and what to
grant: for RabbitMQ the `rabbitmqctl set_permissions` call, for Redis the `ACL SETUSER` rules,
which our own clients work out from the commands and keys they used (refusals.py). The daemon's
log and the `check` command both print outages.py's `fault_line()`, so they say one thing.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .refusals import refusal_words

UNREACHABLE = "unreachable"  # nothing answers there: down, wrong port, unknown host, timeout
TLS = "tls"  # a TLS handshake failed, on either side's certificate
AUTH = "auth"  # the broker refused the credentials
VHOST = "vhost"  # RabbitMQ: the vhost is missing or the user may not use it
PERMISSION = "permission"  # connected, but the user may not do what was asked
# The kinds that keep every thread off the broker: "cannot connect" problems.
CONNECTION_KINDS = frozenset({UNREACHABLE, TLS, AUTH, VHOST})

UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}", re.I
)
CHAIN_LIMIT = 8  # exceptions wrapping exceptions: how deep to look

DNS_FAILURES = (
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "no address associated with hostname",
)
CONNECTION_CLOSED = (
    "connection closed by server",
    "broken pipe",
    "socket closed",
    "server closed the connection",
    "connection lost",
)
# TLS alerts by which a server says it does not accept our client certificate.
CLIENT_CERT_ALERT = re.compile(
    r"ALERT_(UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_UNKNOWN|CERTIFICATE_EXPIRED|"
    r"CERTIFICATE_REVOKED|UNSUPPORTED_CERTIFICATE)"
)


@dataclass(frozen=True)
class Fault:
    """One broker problem: its kind (what makes two reports the same) and its words."""

    kind: str
    description: str
    # Worth saying only if the broker never answered (a setup problem, not an outage).
    setup_hint: str = ""

    @property
    def key(self) -> str:
        """What makes two reports one problem. Refusals of different things are different
        problems (the poll refused LLEN, the event stream refused a channel; or, once LLEN is
        granted, the keys): each is news. Ids in names (`celeryev.<uuid>`, a new one on every
        reconnect) do not make a refusal new."""
        if self.kind != PERMISSION:
            return self.kind
        return f"{self.kind}: {UUID.sub('<id>', self.description)}"


def passwords(url: str) -> list[str]:
    """Every password in a (possibly `;`-separated) broker URL, to scrub from error text."""
    found = []
    for part in url.split(";"):
        try:
            password = urlsplit(part).password
        except ValueError:
            continue
        if password:
            found += [password, unquote(password)]
    return found


def chain(exc: BaseException) -> list[BaseException]:
    """The exception and those it wraps (`raise ... from`, or raised while handling)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < CHAIN_LIMIT and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class FaultDescriber:
    """Turns a broker exception into a Fault that names this exporter's flags."""

    def __init__(self, broker_url: str, ssl_options: Mapping[str, Any] | None = None) -> None:
        self.first_url = broker_url.split(";", maxsplit=1)[0]
        self.scheme = urlsplit(self.first_url).scheme
        self.ssl_options = dict(ssl_options) if isinstance(ssl_options, Mapping) else {}
        self.secrets = sorted(set(passwords(broker_url)), key=len, reverse=True)

    def __call__(self, exc: BaseException) -> Fault:
        fault = self._describe(chain(exc))
        return Fault(fault.kind, self.scrub(fault.description), fault.setup_hint)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def _describe(self, excs: list[BaseException]) -> Fault:
        text = " | ".join(f"{type(e).__name__}: {e}" for e in excs)
        lowered = text.lower()
        known = (
            self._tls(excs, text)
            or _credentials(lowered)
            or _vhost(text)
            or self._permission(excs, lowered)
            or self._unreachable(excs, lowered)
        )
        if known is not None:
            return known
        # Unknown: the same text from two threads is one problem, whatever wraps it.
        lines = str(excs[0]).strip().splitlines()
        return Fault(f"other: {lines[0] if lines else type(excs[0]).__name__}", first_line(excs[0]))

    def _unreachable(self, excs: list[BaseException], lowered: str) -> Fault | None:
        def seen(kinds: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
            return any(isinstance(e, kinds) for e in excs)

        if seen(socket.gaierror) or any(words in lowered for words in DNS_FAILURES):
            return Fault(
                UNREACHABLE, "unknown host: the host name in --broker-url does not resolve"
            )
        if seen(ConnectionRefusedError) or "connection refused" in lowered:
            return Fault(UNREACHABLE, "connection refused: no broker listens at that host and port")
        if seen((TimeoutError, socket.timeout)) or "timed out" in lowered:
            hint = "or it does not speak TLS on that port" if self._uses_tls() else ""
            words = "connection timed out: the broker did not answer within --broker-timeout"
            return Fault(UNREACHABLE, words, hint)
        if "no master found" in lowered:
            words = "no Redis Sentinel answers, or none knows a master by that name"
            return Fault(UNREACHABLE, words)
        if seen(ConnectionResetError) or "connection reset" in lowered:
            # What a TLS-only port does to a plain client at once.
            hint = (
                "" if self._uses_tls() else "if it speaks only TLS there: use rediss:// or amqps://"
            )
            return Fault(UNREACHABLE, "the broker reset the connection", hint)
        if any(words in lowered for words in CONNECTION_CLOSED):
            return Fault(UNREACHABLE, "the broker closed the connection")
        if seen(OSError):
            return Fault(UNREACHABLE, first_line(excs[0]))
        return None

    def _tls(self, excs: list[BaseException], text: str) -> Fault | None:
        upper = text.upper()
        verify = next((e for e in excs if isinstance(e, ssl.SSLCertVerificationError)), None)
        if verify is not None or "CERTIFICATE_VERIFY_FAILED" in upper:
            reason = getattr(verify, "verify_message", None) or _after(
                text, "certificate verify failed: "
            )
            return Fault(TLS, self._verify_failed(str(reason or "")))
        certfile, keyfile = self._key("certfile"), self._key("keyfile")
        if "CERTIFICATE_REQUIRED" in upper:
            return Fault(
                TLS,
                "TLS: the broker wants a client certificate: give it with "
                f"--broker-ssl-option {certfile}=PATH and {keyfile}=PATH",
            )
        alert = CLIENT_CERT_ALERT.search(upper)
        if alert:
            why = alert.group(1).lower().replace("_", " ")
            given = self.ssl_options.get(certfile)
            return Fault(
                TLS,
                f"TLS: the broker rejected the client certificate in --broker-ssl-option "
                f"{certfile}={given or ''} ({why})",
            )
        ssl_error = next((e for e in excs if isinstance(e, ssl.SSLError)), None)
        if ssl_error is None and "[SSL" not in upper:
            return None
        detail = _ssl_reason(str(ssl_error) if ssl_error is not None else text)
        if "WRONG_VERSION_NUMBER" in upper or "RECORD_LAYER_FAILURE" in upper:
            return Fault(
                TLS, f"TLS handshake failed ({detail}): does the broker speak TLS on that port?"
            )
        if "EOF" in upper:
            given = self.ssl_options.get(certfile)
            which = f"the one in --broker-ssl-option {certfile}={given}" if given else "none"
            return Fault(
                TLS,
                f"TLS handshake failed ({detail}): the broker hung up, as it does when it "
                f"wants a client certificate (--broker-ssl-option {certfile}) and gets {which}",
            )
        return Fault(TLS, f"TLS handshake failed ({detail})")

    def _verify_failed(self, reason: str) -> str:
        lowered = reason.lower()
        if "mismatch" in lowered or "hostname" in lowered:
            return (
                "TLS hostname mismatch: the broker's certificate is not valid for the host in "
                f"--broker-url ({reason})"
            )
        if "expired" in lowered or "not yet valid" in lowered:
            return f"TLS certificate verify failed: the broker's certificate {reason}"
        ca_key = self._key("ca_certs")
        ca = self.ssl_options.get(ca_key)
        if ca:
            signer = f"the CA in --broker-ssl-option {ca_key}={ca}"
        else:
            signer = f"a CA this machine trusts (name it with --broker-ssl-option {ca_key}=PATH)"
        detail = f" ({reason})" if reason else ""
        return (
            "TLS certificate verify failed: the broker's certificate is not signed by "
            f"{signer}{detail}"
        )

    def _permission(self, excs: list[BaseException], lowered: str) -> Fault | None:
        """Connected and logged in, but refused one operation (a RabbitMQ or Redis ACL)."""
        if "access_refused" not in lowered and "noperm" not in lowered:
            return None
        return Fault(PERMISSION, refusal_words(excs, self.first_url, first_line(excs[-1])))

    def _uses_tls(self) -> bool:
        return bool(self.ssl_options) or self.scheme in {"rediss", "amqps", "sentinels"}

    def _key(self, name: str) -> str:
        """The option's name as the user spelled it, else as this transport spells it:
        kombu's Redis transport takes `ssl_ca_certs`, py-amqp takes `ca_certs`."""
        for key in (f"ssl_{name}", name):
            if key in self.ssl_options:
                return key
        return f"ssl_{name}" if self.scheme.startswith(("redis", "sentinel")) else name


def _credentials(lowered: str) -> Fault | None:
    if any(
        words in lowered
        for words in ("invalid username-password", "wrongpass", "login was refused")
    ):
        return Fault(
            AUTH, "authentication failed: the broker refused the user and password in --broker-url"
        )
    if "authentication required" in lowered or "noauth" in lowered:
        return Fault(
            AUTH, "authentication failed: the broker wants a password and --broker-url has none"
        )
    return None


def _vhost(text: str) -> Fault | None:
    missing = re.search(r"vhost '?([^' ]*)'? not found", text)
    if missing:
        return Fault(
            VHOST,
            f"RabbitMQ has no vhost '{missing.group(1)}': check the path at the end of "
            "--broker-url (`//` is the default vhost '/')",
        )
    refused = re.search(r"access to vhost '([^']*)' refused for user '([^']*)'", text)
    if refused:
        vhost, user = refused.groups()
        return Fault(
            VHOST,
            f"RabbitMQ user '{user}' may not use vhost '{vhost}' "
            f"(rabbitmqctl set_permissions -p {vhost} {user} ...)",
        )
    return None


def _after(text: str, marker: str) -> str:
    """What follows `marker` in `text`, up to an OpenSSL location like ` (_ssl.c:1006)`."""
    index = text.find(marker)
    if index < 0:
        return ""
    return re.split(r" \(_ssl\.c|[|]", text[index + len(marker) :], maxsplit=1)[0].strip()


def _ssl_reason(text: str) -> str:
    """`[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)` -> the words."""
    found = re.search(r"\[SSL(?:: [A-Z0-9_]+)?\] ([^(|]+)", text)
    if found:
        return found.group(1).strip()
    return re.sub(r"\s*\(_ssl\.c:\d+\)\.?", "", text.split("|", maxsplit=1)[0]).strip()
