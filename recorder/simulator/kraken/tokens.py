"""REST key checks (API-Sign, per-key nonces) and WebSocket tokens with Kraken's lifetime rule.

A token must be presented within its TTL; once a private subscription succeeded with it, it
stays valid on that connection for as long as the connection lives.
"""

from __future__ import annotations

import hmac
import secrets
import string
import time
from dataclasses import dataclass, field

from recorder.exchanges.kraken.signer import api_sign

# The documented demo key pair. The secret is the one from Kraken's published API-Sign test
# vector, so the vector's signature verifies against the simulator as it is.
DEMO_API_KEY = "SIM-DEMO-KEY-0000000000000000000000000000000000000000000000000"
DEMO_API_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
_TOKEN_ALPHABET = string.ascii_letters + string.digits


@dataclass(slots=True)
class TokenInfo:
    created: float
    valid: bool = True
    bound: set[int] = field(default_factory=set)  # connection ids that subscribed with it


class Auth:
    def __init__(self, api_key: str, api_secret: str, token_ttl: float) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.token_ttl = token_ttl
        self._nonces: dict[str, int] = {}
        self.tokens: dict[str, TokenInfo] = {}

    def check_request(self, path: str, headers: dict[str, str], body: bytes) -> str | None:
        """None when the private request is authentic, else Kraken's error string."""
        key = headers.get("api-key", "")
        if not key or not hmac.compare_digest(key, self.api_key):
            return "EAPI:Invalid key"
        fields = _form(body)
        nonce = fields.get("nonce", "")
        if not nonce.isdigit():
            return "EAPI:Invalid nonce"
        try:
            expected = api_sign(path, nonce, body, self.api_secret)
        except ValueError:
            return "EAPI:Invalid signature"
        if not hmac.compare_digest(headers.get("api-sign", ""), expected):
            return "EAPI:Invalid signature"
        value = int(nonce)
        if value <= self._nonces.get(key, -1):
            return "EAPI:Invalid nonce"
        self._nonces[key] = value
        return None

    def issue(self) -> str:
        token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(43))
        self.tokens[token] = TokenInfo(time.monotonic())
        return token

    def token_ok(self, token: object, conn_id: int) -> bool:
        info = self.tokens.get(token) if isinstance(token, str) else None
        if info is None or not info.valid:
            return False
        return conn_id in info.bound or time.monotonic() - info.created < self.token_ttl

    def bind(self, token: str, conn_id: int) -> None:
        self.tokens[token].bound.add(conn_id)

    def release(self, conn_id: int) -> None:
        for info in self.tokens.values():
            info.bound.discard(conn_id)

    def invalidate_all(self) -> int:
        n = 0
        for info in self.tokens.values():
            n += info.valid
            info.valid = False
        return n


def _form(body: bytes) -> dict[str, str]:
    from urllib.parse import parse_qsl

    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        return {}
