"""Kraken REST request signing (API-Sign) and strictly increasing nonces.

Kraken's rule, exactly: ``API-Sign = base64(HMAC-SHA512(key=base64decode(secret),
msg=uri_path_bytes + SHA256(nonce_string + url_encoded_post_body)))``, where the POST body
itself contains ``nonce=<nonce>``. The nonce must strictly increase per API key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time


def api_sign(uri_path: str, nonce: str, post_body: str | bytes, secret_b64: str) -> str:
    """Return the API-Sign header value for one private REST request."""
    body = post_body if isinstance(post_body, bytes) else post_body.encode()
    digest = hashlib.sha256(nonce.encode() + body).digest()
    mac = hmac.new(base64.b64decode(secret_b64), uri_path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


class NonceSource:
    """Strictly increasing nonces, also across processes started in the same millisecond.

    The nonce is microseconds since the epoch. Within one process a lock and the last value
    guarantee growth; across processes sharing a key, an exclusive lock on a small state file
    (one per key, in the user's runtime directory) serialises them and remembers the last nonce.
    """

    def __init__(self, state_path: str | None = None) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self._state_path = state_path

    def next(self) -> int:
        with self._lock:
            candidate = max(time.time_ns() // 1000, self._last + 1)
            if self._state_path:
                candidate = self._bump_shared(candidate)
            self._last = candidate
            return candidate

    def _bump_shared(self, candidate: int) -> int:
        import fcntl

        fd = os.open(self._state_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 32, 0).strip()
            previous = int(raw) if raw.isdigit() else 0
            value = max(candidate, previous + 1)
            text = str(value).encode().ljust(32)
            os.pwrite(fd, text, 0)
            return value
        finally:
            os.close(fd)
