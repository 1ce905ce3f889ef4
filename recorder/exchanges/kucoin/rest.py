"""A small client for the KuCoin REST endpoints the recorder needs.

- ``POST /api/v1/bullet-public`` / ``bullet-private`` (signed): a WebSocket token and the
  servers to connect to, fetched before every (re)connect;
- ``GET /api/v1/timestamp``: KuCoin's clock, so that signed requests carry a timestamp
  within its 5 s tolerance even when this machine's clock is off;
- ``GET /api/v1/market/orderbook/level2_100`` (public) and ``GET
  /api/v3/market/orderbook/level2`` (signed, full depth): the snapshots a level2 book is
  synced from;
- ``GET /api/v2/symbols``: the symbol list configs are validated against.

urllib only: a few calls per connection do not justify a dependency. KuCoin answers
``{"code": "200000", "data": ...}`` on success and ``{"code": "400100", "msg": ...}`` on
failure, sometimes with HTTP 200, so only the code decides. Failures are sorted into
credential errors (``InvalidCredentials``, a ``CredentialError``: retrying cannot help),
rate limits (``RateLimited``), other transient trouble (``TransientError``: network, 5xx)
and the rest (``KucoinError``). Messages name the endpoint, KuCoin's code and text, and the
variable or file a credential came from, never a credential's value.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec

from recorder.core.secrets import CredentialError
from recorder.exchanges.kucoin.credentials import KucoinCredentials
from recorder.exchanges.kucoin.signer import auth_headers

USER_AGENT = "market-recorder/0.1 (KuCoin; urllib)"
DEFAULT_TIMEOUT = 10.0
# Re-measure the clock offset after this long: clocks drift, KuCoin allows 5 s.
CLOCK_RESYNC_SECONDS = 3600.0

BULLET_PUBLIC = "/api/v1/bullet-public"
BULLET_PRIVATE = "/api/v1/bullet-private"
TIMESTAMP = "/api/v1/timestamp"
BOOK_PUBLIC = "/api/v1/market/orderbook/level2_100"
BOOK_FULL = "/api/v3/market/orderbook/level2"
SYMBOLS = "/api/v2/symbols"
# Levels per side of the public snapshot: beyond them a book synced from it is unknown.
PUBLIC_BOOK_DEPTH = 100

SUCCESS = "200000"
# KuCoin's codes for "this credential is wrong", and what to check ({key}, {secret},
# {passphrase}: where each value came from, never the value).
_CREDENTIAL_CODES: dict[str, str] = {
    "400003": "KuCoin does not know the API key in {key}: check that it holds the key (not "
              "the secret) of an API key that still exists",
    "400004": "KuCoin refused the API passphrase: check that {passphrase} holds the "
              "passphrase chosen when the key was created and that credentials.key_version "
              "matches the key (now {version}: version 1 sends the passphrase plain, 2 and 3 "
              "sign it with the secret, so with those a wrong secret in {secret} also shows "
              "here)",
    "400005": "KuCoin refused the request signature: the API secret in {secret} does not "
              "belong to the key in {key}",
    "400006": "KuCoin refused this machine's IP address: it is not in the API key's IP "
              "whitelist (edit the key's IP restriction on KuCoin)",
    "400007": "KuCoin denied access with this API key: it lacks the permission the endpoint "
              "needs (\"General\" for full book snapshots and private tokens)",
}
# Rate limits: 429000 (resource pool used up / overloaded), 200002 (older per-endpoint
# limit), 1015 (Cloudflare's IP limit).
_RATE_LIMIT_CODES = frozenset({"429000", "200002", "1015"})
_CLOCK_CODE = "400002"


class KucoinError(Exception):
    """KuCoin answered with an error code, or with something unexpected."""

    def __init__(self, message: str, *, endpoint: str = "", code: str | None = None,
                 msg: str | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.code = code
        self.msg = msg
        self.http_status = http_status


class TransientError(KucoinError):
    """A network failure, a server error or a broken answer: retry later."""


class RateLimited(TransientError):
    """KuCoin's rate limit (code 429000 or HTTP 429): retry later, more slowly."""


class ClockSkew(KucoinError):
    """KC-API-TIMESTAMP refused (400002): this machine's clock is too far from KuCoin's."""


class InvalidCredentials(CredentialError, KucoinError):
    """KuCoin refused the key, the passphrase, the signature, the IP or the permission."""


class _Envelope(msgspec.Struct):
    code: Any = None
    msg: Any = None
    # Kept as the exact bytes KuCoin sent: a book snapshot is recorded as received.
    data: msgspec.Raw = msgspec.Raw(b"null")


_decode_envelope = msgspec.json.Decoder(_Envelope).decode
# float_hook=str keeps every number's text; ints stay exact Python ints.
decode_exact = msgspec.json.Decoder(float_hook=str).decode


def opener_for(rest_url: str) -> urllib.request.OpenerDirector:
    """An opener that bypasses any proxy for a local endpoint (the simulator, tests)."""
    host = urlsplit(rest_url).hostname or ""
    proxies = {} if host in ("localhost", "127.0.0.1", "::1") else None
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies))


def classify(code: str, msg: str | None, http_status: int, endpoint: str,
             credentials: KucoinCredentials | None = None) -> KucoinError:
    """The exception for KuCoin's error envelope ``{"code": code, "msg": msg}``."""
    said = f"(KuCoin code {code}: {msg})" if msg else f"(KuCoin code {code})"
    kw = {"endpoint": endpoint, "code": code, "msg": msg, "http_status": http_status}
    if code in _CREDENTIAL_CODES:
        text = _CREDENTIAL_CODES[code].format(
            key=_where(credentials, 0), secret=_where(credentials, 1),
            passphrase=_where(credentials, 2),
            version=credentials.key_version if credentials is not None else "?")
        return InvalidCredentials(f"{endpoint}: {text} {said}", **kw)
    if code in _RATE_LIMIT_CODES or http_status == 429:
        return RateLimited(f"{endpoint}: rate limited by KuCoin, retry later {said}", **kw)
    if code == _CLOCK_CODE:
        return ClockSkew(f"{endpoint}: KuCoin refused the request timestamp: this machine's "
                         f"clock differs from KuCoin's by more than 5 s {said}", **kw)
    if http_status >= 500 or code.startswith("5"):
        return TransientError(f"{endpoint}: KuCoin server error, retry later {said}", **kw)
    return KucoinError(f"{endpoint}: KuCoin refused the request {said}", **kw)


def _where(credentials: KucoinCredentials | None, which: int) -> str:
    if credentials is None:
        return "the configured credentials"
    name = credentials.names[which]
    if credentials.source.startswith("environment"):
        return f"environment variable {name}"
    return f"{credentials.source} ({name})"


class KucoinRest:
    """Calls to one REST base URL (KuCoin's, or the simulator's); thread-safe.

    Signed calls need ``credentials``; their timestamps are corrected by the offset to
    KuCoin's clock, measured (``GET /api/v1/timestamp``) before the first signed call, again
    every hour, and again once when KuCoin refuses a timestamp (400002).
    """

    def __init__(self, rest_url: str, credentials: KucoinCredentials | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, user_agent: str = USER_AGENT,
                 clock: Callable[[], float] = time.time) -> None:
        self.rest_url = rest_url.rstrip("/")
        self._credentials = credentials
        self.timeout = timeout
        self.user_agent = user_agent
        self._clock = clock
        self._opener = opener_for(self.rest_url)
        self._lock = threading.Lock()
        self._offset_ms: float | None = None
        self._offset_at = 0.0

    def __repr__(self) -> str:
        return f"KucoinRest({self.rest_url!r}, {self._credentials!r})"

    @property
    def signed(self) -> bool:
        return self._credentials is not None

    @property
    def clock_offset_ms(self) -> float | None:
        """KuCoin's clock minus ours, as last measured (None: not measured yet)."""
        return self._offset_ms

    # -- endpoints ------------------------------------------------------------------------

    def bullet_public(self) -> tuple[dict, str]:
        """A public WebSocket token: (KuCoin's data, the answer text with the token
        replaced by "<redacted>", fit for the raw table)."""
        return self._bullet(BULLET_PUBLIC, signed=False)

    def bullet_private(self) -> tuple[dict, str]:
        """A private WebSocket token (signed; the key needs the "General" permission)."""
        return self._bullet(BULLET_PRIVATE, signed=True)

    def server_time(self) -> int:
        """KuCoin's clock, ms since the epoch."""
        data = decode_exact(self.call("GET", TIMESTAMP))
        if isinstance(data, bool) or not isinstance(data, int):
            raise KucoinError(f"GET {TIMESTAMP}: expected an integer time, got {data!r:.80}",
                              endpoint=f"GET {TIMESTAMP}")
        return data

    def sync_clock(self) -> float:
        """Measure the offset to KuCoin's clock (ms, half the round trip corrected)."""
        t0 = self._clock()
        server = self.server_time()
        t1 = self._clock()
        offset = server - (t0 + t1) * 500.0
        with self._lock:
            self._offset_ms, self._offset_at = offset, t1
        return offset

    def book_snapshot(self, symbol: str, full: bool) -> tuple[str, bytes]:
        """A level2 snapshot of ``symbol`` (KuCoin's name, BTC-USDT): (endpoint, the exact
        bytes of KuCoin's ``data``). ``full``: the signed v3 full book; else the public top
        100 levels a side."""
        path = BOOK_FULL if full else BOOK_PUBLIC
        return f"GET {path}", self.call("GET", path, {"symbol": symbol}, signed=full)

    def symbols(self) -> list[dict]:
        """Every spot symbol KuCoin lists (``GET /api/v2/symbols``)."""
        data = decode_exact(self.call("GET", SYMBOLS))
        if not isinstance(data, list):
            raise KucoinError(f"GET {SYMBOLS}: expected a list of symbols",
                              endpoint=f"GET {SYMBOLS}")
        return data

    # -- the request --------------------------------------------------------------------

    def call(self, method: str, path: str, params: dict[str, str] | None = None, *,
             signed: bool = False, body: str = "") -> bytes:
        """One request; the exact bytes of ``data`` of a successful answer, else raises."""
        try:
            return self._call(method, path, params, signed, body)
        except ClockSkew:
            if not signed:
                raise
            self.sync_clock()  # the clock moved: measure again and retry once
            return self._call(method, path, params, signed, body)

    def _call(self, method: str, path: str, params: dict[str, str] | None, signed: bool,
              body: str) -> bytes:
        # Signed text and sent URL agree: plain names like BTC-USDT need no escaping.
        query = urlencode(params) if params else ""
        full_path = f"{path}?{query}" if query else path
        endpoint = f"{method} {full_path}"
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if method != "GET":
            headers["Content-Type"] = "application/json"
        if signed:
            creds = self._credentials
            if creds is None:
                raise CredentialError(f"{endpoint}: needs KuCoin API credentials (set "
                                      "api_key_env, api_secret_env and api_passphrase_env in "
                                      "[credentials])")
            headers.update(auth_headers(creds.key, creds.secret, creds.passphrase,
                                        creds.key_version, method, full_path, body,
                                        self._timestamp_ms()))
        data = body.encode() if method != "GET" else None
        request = urllib.request.Request(self.rest_url + full_path, data=data, method=method,
                                         headers=headers)
        status, payload = self._send(request, endpoint)
        return self._data(status, payload, endpoint)

    def _timestamp_ms(self) -> int:
        now = self._clock()
        with self._lock:
            fresh = (self._offset_ms is not None
                     and now - self._offset_at < CLOCK_RESYNC_SECONDS)
        if not fresh:
            self.sync_clock()
            now = self._clock()
        return int(now * 1000 + (self._offset_ms or 0.0))

    def _send(self, request: urllib.request.Request, endpoint: str) -> tuple[int, bytes]:
        # Messages name the endpoint only: the request carries the key and signature.
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            try:
                payload = e.read()
            except (OSError, http.client.HTTPException):
                payload = b""
            return e.code, payload
        except http.client.InvalidURL as e:
            raise KucoinError(f"{endpoint}: {self.rest_url} is not a usable URL: {e}",
                              endpoint=endpoint) from None
        except http.client.HTTPException as e:
            raise TransientError(f"{endpoint}: broken answer from {self.rest_url}: "
                                 f"{type(e).__name__}", endpoint=endpoint) from None
        except urllib.error.URLError as e:
            raise TransientError(f"{endpoint}: cannot reach {self.rest_url}: "
                                 f"{_reason(e.reason)}", endpoint=endpoint) from None
        except TimeoutError:
            raise TransientError(f"{endpoint}: no answer from {self.rest_url} within "
                                 f"{self.timeout:g} s", endpoint=endpoint) from None
        except (OSError, ValueError) as e:
            raise TransientError(f"{endpoint}: request to {self.rest_url} failed: "
                                 f"{_reason(e)}", endpoint=endpoint) from None

    def _data(self, status: int, payload: bytes, endpoint: str) -> bytes:
        try:
            env = _decode_envelope(payload)
        except msgspec.MsgspecError:
            env = None
        if env is None or env.code is None:
            if status == 429:
                raise RateLimited(f"{endpoint}: rate limited by KuCoin (HTTP 429), retry "
                                  "later", endpoint=endpoint, http_status=status)
            if status >= 500:
                raise TransientError(f"{endpoint}: HTTP {status} from {self.rest_url}",
                                     endpoint=endpoint, http_status=status)
            raise KucoinError(f"{endpoint}: unexpected answer from {self.rest_url} (HTTP "
                              f"{status}, {len(payload)} bytes, no KuCoin code)",
                              endpoint=endpoint, http_status=status)
        code = str(env.code)
        if code == SUCCESS:
            return bytes(env.data)
        msg = env.msg if isinstance(env.msg, str) else None
        raise classify(code, msg, status, endpoint, self._credentials)

    def _bullet(self, path: str, signed: bool) -> tuple[dict, str]:
        endpoint = f"POST {path}"
        data = decode_exact(self.call("POST", path, signed=signed))
        servers = data.get("instanceServers") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("token"), str) or not servers:
            raise KucoinError(f"{endpoint}: the answer has no token or no instanceServers",
                              endpoint=endpoint)
        redacted = {**data, "token": "<redacted>"}
        text = msgspec.json.encode({"code": SUCCESS, "data": redacted}).decode()
        return data, text


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
