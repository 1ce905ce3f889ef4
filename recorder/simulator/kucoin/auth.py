"""KuCoin REST authentication (KC-API-* headers) and single-use bullet tokens.

Signed requests are checked in this order, each failure with KuCoin's code and text:
400001 a header is missing, 400002 the timestamp is not within 5 s of the server's clock,
400003 unknown key, 400006 the client's address is not on the key's whitelist (if it has one),
400004 wrong passphrase (or the wrong passphrase form for the key's version), 400005 wrong
signature, 400007 the key may not use this endpoint.

A bullet token is good for one connection: KuCoin refuses a second connection with the same
token (``{"type":"error","code":401,"data":"token is expired"}``), and a token never used
expires after ``token_ttl`` seconds (24 h on KuCoin).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import unquote

# The key, secret and passphrase of KuCoin's published signing example (KDOC §Authentication,
# see ../shared/reference/kucoin-protocol.md 1.2): the documented KC-API-SIGN for its string
# to sign verifies against the simulator as it is. Not secrets: never reuse them.
DEMO_API_KEY = "5c2db93503aa674c74a31734"
DEMO_API_SECRET = "f03a5284-5c39-4aaa-9b20-dea10bdcf8e3"
DEMO_API_PASSPHRASE = "QWIxMjM0NTY3OCkoKiZeJSQjQA=="

# code -> (HTTP status, msg). Texts seen in real answers where known (kucoin-protocol.md 1.2).
ERRORS: dict[str, tuple[int, str]] = {
    "400001": (401, "Please check the header of your request for KC-API-KEY, KC-API-SIGN, "
                    "KC-API-TIMESTAMP, KC-API-PASSPHRASE"),
    "400002": (400, "Invalid KC-API-TIMESTAMP"),
    "400003": (401, "KC-API-KEY not exists"),
    "400004": (401, "Invalid KC-API-PASSPHRASE"),
    "400005": (401, "Invalid KC-API-SIGN"),
    "400006": (401, "The requested ip address is not in the api whitelist"),
    "400007": (403, "Access Denied"),
    "400100": (400, "Invalid Parameter."),
    "404000": (404, "Url Not Found"),
    "405000": (405, "Method Not Allowed"),
    "415000": (415, "Unsupported Media Type"),
    "429000": (429, "Too Many Requests"),
    "500000": (500, "Internal Server Error"),
    "503000": (503, "Service Unavailable"),
    "900001": (400, "symbol not exists"),
}
MAX_SKEW_MS = 5000
_HEADERS = ("kc-api-key", "kc-api-sign", "kc-api-timestamp", "kc-api-passphrase")


def sign(secret: str, text: str) -> str:
    """base64(HMAC-SHA256(secret, text)): KC-API-SIGN, and the v2/v3 KC-API-PASSPHRASE."""
    mac = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def signed_headers(key: str, secret: str, passphrase: str, method: str, target: str,
                   body: str = "", version: str = "2", now_ms: int | None = None) -> dict:
    """The KC-API-* headers of a request (for the simulator's own tests and examples)."""
    ts = str(int(time.time() * 1000) if now_ms is None else now_ms)
    return {
        "KC-API-KEY": key,
        "KC-API-SIGN": sign(secret, ts + method.upper() + target + body),
        "KC-API-TIMESTAMP": ts,
        "KC-API-PASSPHRASE": passphrase if version == "1" else sign(secret, passphrase),
        "KC-API-KEY-VERSION": version,
    }


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison that also takes non-ASCII header text."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


@dataclass(slots=True)
class TokenInfo:
    created: float
    private: bool
    used: bool = False
    valid: bool = True


@dataclass
class Auth:
    api_key: str
    api_secret: str = field(repr=False)
    api_passphrase: str = field(repr=False)
    token_ttl: float = 86400.0
    key_version: int = 2
    ip_whitelist: list[str] = field(default_factory=list)
    access_denied: bool = False
    tokens: dict[str, TokenInfo] = field(default_factory=dict, repr=False)

    def check(self, method: str, target: str, headers: dict[str, str], body: bytes,
              client_ip: str) -> str | None:
        """None if the signed request is authentic and allowed, else KuCoin's error code."""
        if any(not headers.get(h) for h in _HEADERS):
            return "400001"
        ts = headers["kc-api-timestamp"]
        if not ts.isdigit() or abs(int(time.time() * 1000) - int(ts)) > MAX_SKEW_MS:
            return "400002"
        if not _same(headers["kc-api-key"], self.api_key):
            return "400003"
        if self.ip_whitelist and client_ip not in self.ip_whitelist:
            return "400006"
        version = headers.get("kc-api-key-version", "1").strip() or "1"
        if self.key_version == 1:
            ok_version, expected = version == "1", self.api_passphrase
        else:
            ok_version = version in ("2", "3")
            expected = sign(self.api_secret, self.api_passphrase)
        if not ok_version or not _same(headers["kc-api-passphrase"], expected):
            return "400004"
        text = body.decode("utf-8", "replace")
        given = headers["kc-api-sign"]
        # KuCoin's SDKs sign the query as raw k=v text while sending it URL-encoded: accept
        # the target as it arrived and its decoded form.
        targets = {target, unquote(target)}
        if not any(_same(given, sign(self.api_secret, ts + method + t + text))
                   for t in targets):
            return "400005"
        if self.access_denied:
            return "400007"
        return None

    # -- bullet tokens --------------------------------------------------------------------

    def issue(self, private: bool) -> str:
        # Shaped like KuCoin's: URL-safe base64 text, "=.", then a base64 tail.
        body = secrets.token_urlsafe(120).rstrip("=")
        tail = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()
        token = f"2neAiuYvAU{'7' if private else '6'}{body}=.{tail}"
        now = time.monotonic()
        if len(self.tokens) >= 10_000:  # a token past its TTL is refused whether kept or not
            self.tokens = {t: i for t, i in self.tokens.items()
                           if now - i.created <= self.token_ttl}
        self.tokens[token] = TokenInfo(now, private)
        return token

    def take(self, token: str | None) -> TokenInfo | None:
        """The token's info if it may open this connection (and mark it used), else None."""
        info = self.tokens.get(token) if token else None
        if info is None or info.used or not info.valid:
            return None
        if time.monotonic() - info.created > self.token_ttl:
            info.valid = False
            return None
        info.used = True
        return info

    def invalidate_all(self) -> int:
        n = 0
        for info in self.tokens.values():
            if info.valid and not info.used:
                n += 1
            info.valid = False
        return n
