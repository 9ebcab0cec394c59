"""A refusal in an operator's words: which user may not do what, and what to grant.

The user is logged in, but the broker refused one operation: RabbitMQ's 403 ACCESS_REFUSED on
a queue or exchange, Redis's ACL `NOPERM`. RabbitMQ's own text names the user, resource and
vhost, so the words say which permission pattern must match it and the `rabbitmqctl
set_permissions` call that sets it. Redis's text names at most the command, so a client of
ours that knows which commands and keys it used raises `Refused` from the broker's error with
the exact `ACL SETUSER` rules (poll/redis_queues.py does). classify.py classifies; this module
words.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit


class Refused(Exception):
    """Raised from (`raise ... from`) the broker's refusal by a client of ours that knows what
    it asked for: `what` it could not read, and the Redis ACL rules that would allow it."""

    def __init__(self, what: str, rules: Sequence[str] = ()) -> None:
        super().__init__(what)
        self.what = what
        self.rules = tuple(rules)


# RabbitMQ 3.x says `access to queue 'q' in vhost 'v' refused for user 'u'`; some versions
# name the permission first (`configure access to ...`).
AMQP_REFUSED = re.compile(
    r"(?:(?P<method>\w+\.\w+): )?\(403\) ACCESS_REFUSED - (?:(?P<perm>configure|write|read) )?"
    r"access to (?P<kind>queue|exchange) '(?P<name>[^']*)' in vhost '(?P<vhost>[^']*)' "
    r"refused for user '(?P<user>[^']*)'"
)
# Which permission an AMQP method needs on the resource it was refused (RabbitMQ's access
# control table); a passive Queue.declare is refused only by versions that want configure.
AMQP_METHOD_PERMISSION = {
    "Queue.declare": "configure",
    "Queue.delete": "configure",
    "Exchange.declare": "configure",
    "Exchange.delete": "configure",
    "Basic.consume": "read",
    "Basic.get": "read",
    "Queue.purge": "read",
    "Basic.publish": "write",
}
REDIS_COMMAND = re.compile(r"permissions to run the '([^']+)' command", re.I)


def refusal_words(excs: Sequence[BaseException], url: str, broker_error: str) -> str:
    """The refusal in `excs` (an exception chain, outermost first) in words, for the broker at
    `url` (one URL); `broker_error` is the broker's own error in one line."""
    for exc in excs:
        found = AMQP_REFUSED.search(str(exc))
        if found:
            return _amqp(found)
    try:
        parts = urlsplit(url)
        url_user = unquote(parts.username or "")
    except ValueError:
        parts, url_user = None, ""
    if parts is None or not parts.scheme.startswith(("redis", "sentinel")):
        return f"the broker refused this user an operation: {broker_error}"
    user = url_user or "default"  # a URL with only a password logs in as `default`
    refused = next((e for e in excs if isinstance(e, Refused)), None)
    if refused is not None:
        what, rules = f"may not read {refused.what}", refused.rules
    else:
        command = next(filter(None, (REDIS_COMMAND.search(str(e)) for e in excs)), None)
        what, rules = "was refused an operation", (f"+{command.group(1)}",) if command else ()
    grant = (
        f"grant it with ACL SETUSER {user} {' '.join(rules)}"
        if rules
        else "ACL LOG on the server names what was refused"
    )
    return f"Redis user '{user}' {what} ({broker_error}): {grant}"


def _amqp(found: re.Match[str]) -> str:
    vhost, user, kind, name, method = found.group("vhost", "user", "kind", "name", "method")
    permission = found.group("perm") or AMQP_METHOD_PERMISSION.get(method or "")
    pattern = f"its {permission} pattern" if permission else "one of its patterns"
    command = " ".join(shlex.quote(word) for word in ("-p", vhost, user))
    return (
        f"RabbitMQ user '{user}' may not use {kind} '{name}' in vhost '{vhost}' "
        f"({method or 'AMQP'}: 403 ACCESS_REFUSED): let {pattern} match it "
        f"(rabbitmqctl set_permissions {command} CONFIGURE WRITE READ)"
    )
