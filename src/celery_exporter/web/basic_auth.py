"""HTTP basic auth for the web endpoints: bcrypt hashes from the web config, checked per request.

Safe across the HTTP threads. A bcrypt check costs ~100 ms, too much per scrape, so good
credentials are remembered under a keyed hash of user:password (never the plaintext) in a
bounded LRU; wrong ones are never cached.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping

import bcrypt

REALM = "celery-exporter"
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'

Verify = Callable[[bytes, bytes], bool]


class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes; safe across threads.

    A bcrypt check costs ~100 ms, too much per scrape, so good credentials are remembered under
    a keyed hash of user:password (never the plaintext) in a bounded LRU.
    """

    def __init__(
        self, users: Mapping[str, bytes], *, verify: Verify = bcrypt.checkpw, cache_size: int = 256
    ) -> None:
        self._users = dict(users)
        self._verify = verify
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        # Unknown users are checked against a real hash of the most common cost, so the time
        # an answer takes does not tell which user names exist.
        costs = Counter(hashed[4:6] for hashed in self._users.values())
        common = costs.most_common(1)[0][0] if costs else b""
        self._dummy = next((h for h in self._users.values() if h[4:6] == common), b"")

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def check(self, authorization_header: str | None) -> bool:
        """True if auth is off or the header carries good credentials."""
        if not self._users:
            return True
        credentials = _basic_credentials(authorization_header)
        if credentials is None:
            return False
        user_bytes, colon, password = credentials.partition(b":")
        if not colon:
            return False
        digest = hmac.new(self._key, credentials, hashlib.sha256).digest()
        with self._lock:
            if digest in self._cache:
                self._cache.move_to_end(digest)
                return True
        try:
            stored = self._users.get(user_bytes.decode("utf-8"))
        except UnicodeDecodeError:
            stored = None
        matched = self._safe_verify(password, self._dummy if stored is None else stored)
        if not matched or stored is None:
            return False
        with self._lock:
            self._cache[digest] = None
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return True

    def _safe_verify(self, password: bytes, hashed: bytes) -> bool:
        try:
            return self._verify(password, hashed)
        except ValueError:  # bcrypt refuses passwords over 72 bytes
            return False


def _basic_credentials(header: str | None) -> bytes | None:
    """The decoded `user:password` bytes of a Basic authorization header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
