"""KuCoin's REST request signature (docs, "Authentication").

    KC-API-SIGN       = base64(HMAC_SHA256(secret, timestamp + METHOD + path?query + body))
    KC-API-PASSPHRASE = the passphrase itself for key version 1;
                        base64(HMAC_SHA256(secret, passphrase)) for versions 2 and 3

The path is signed with its query string (GET), the body as the exact text sent (POST; ""
when there is none), and the timestamp is the KC-API-TIMESTAMP header's text (ms).
Pure functions: nothing here reads a clock, the environment or the network.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

KEY_VERSIONS = (1, 2, 3)


def sign(secret: str, message: str) -> str:
    """base64 of HMAC-SHA256(secret, message): the signature and the v2/v3 passphrase."""
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def string_to_sign(timestamp: str, method: str, path: str, body: str = "") -> str:
    """What KuCoin signs: the timestamp, the upper-case method, the path with its query
    string, and the exact body text."""
    return f"{timestamp}{method.upper()}{path}{body}"


def passphrase_header(secret: str, passphrase: str, key_version: int) -> str:
    """KC-API-PASSPHRASE: plain for a version 1 key, HMAC-signed for versions 2 and 3 (a
    plain passphrase with a v2 key is KuCoin's 400004 "Invalid KC-API-PASSPHRASE")."""
    if key_version not in KEY_VERSIONS:
        raise ValueError(f"KuCoin API key version must be 1, 2 or 3, not {key_version!r}")
    return passphrase if key_version == 1 else sign(secret, passphrase)


def auth_headers(key: str, secret: str, passphrase: str, key_version: int, method: str,
                 path: str, body: str, timestamp_ms: int) -> dict[str, str]:
    """The KC-API-* headers of one signed request (``path`` with its query string)."""
    ts = str(int(timestamp_ms))
    return {
        "KC-API-KEY": key,
        "KC-API-SIGN": sign(secret, string_to_sign(ts, method, path, body)),
        "KC-API-TIMESTAMP": ts,
        "KC-API-PASSPHRASE": passphrase_header(secret, passphrase, key_version),
        "KC-API-KEY-VERSION": str(key_version),
    }
