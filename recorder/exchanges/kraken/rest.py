"""A minimal signed client for Kraken's private REST API (``POST /0/private/<Method>``).

urllib only: one call every few minutes does not justify a dependency. Kraken answers errors
with HTTP 200 and ``{"error": ["EAPI:Invalid key"]}``; they are sorted here into credential
errors (retrying cannot help), transient ones (retry later) and the rest.

Nonces: Kraken wants them strictly increasing per key, as *received*. Two processes sharing
a key can draw nonces in one order and deliver the requests in the other; so each request
holds a per-key lock (threads and processes) from drawing its nonce until the answer is
back, and the nonce itself comes from a state file shared by all processes using the key.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from recorder.core.secrets import PERMISSION_HINT, CredentialError, Credentials
from recorder.exchanges.kraken.signer import NonceSource, api_sign

USER_AGENT = "market-recorder/0.1 (Kraken WebSocket token helper; urllib)"
DEFAULT_TIMEOUT = 10.0

# Kraken's answers that mean "the key, the secret or its permissions are wrong".
_CREDENTIAL_ERRORS = {
    "EAPI:Invalid key": "Kraken refused the API key (EAPI:Invalid key): check that the key "
                        "variable holds the key's public part and that the key still exists",
    "EAPI:Invalid signature": "Kraken refused the request signature (EAPI:Invalid signature): "
                              "the API secret does not belong to this key",
    "EGeneral:Permission denied": "Kraken refused the request (EGeneral:Permission denied): "
                                  + PERMISSION_HINT,
}
# Answers after which the same request, a little later, can succeed.
_TRANSIENT_PREFIXES = ("EAPI:Rate limit exceeded", "EAPI:Invalid nonce", "EService:",
                       "EGeneral:Temporary lockout", "EGeneral:Internal error")


class KrakenError(Exception):
    """Kraken answered with an error array (``errors``), or with something unexpected."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors or [])


class TransientError(KrakenError):
    """Rate limit, nonce race, service trouble or a network failure: retry with backoff."""


class InvalidCredentials(CredentialError, KrakenError):
    """Kraken refused the key, the signature or the key's permissions."""


def classify(errors: list[str], path: str) -> KrakenError:
    """The exception for Kraken's error array (the first known meaning wins)."""
    for err in errors:
        for known, message in _CREDENTIAL_ERRORS.items():
            if err.startswith(known):
                return InvalidCredentials(message, errors)
    text = ", ".join(errors)
    if any(err.startswith(_TRANSIENT_PREFIXES) for err in errors):
        return TransientError(f"{path}: {text}", errors)
    return KrakenError(f"{path}: {text}", errors)


def nonce_state_path(key: str) -> str | None:
    """A per-key file in a per-user private directory; the name is a hash, not the key.

    None (nonces shared within this process only) when no such directory can be had.
    """
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = Path(base) / f"market-recorder-{uid}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.lstat()
    except OSError:
        return None
    # In a shared /tmp, someone else could have made the folder first.
    if not folder.is_dir() or folder.is_symlink() or st.st_uid != uid or st.st_mode & 0o077:
        return None
    digest = hashlib.sha256(b"market-recorder nonce " + key.encode()).hexdigest()[:24]
    return str(folder / f"nonce-{digest}")


class _KeyLock:
    """Held from nonce to answer: a threading lock in-process, flock across processes."""

    _locks: dict[str, threading.Lock] = {}
    _guard = threading.Lock()

    def __init__(self, path: str | None) -> None:
        self.path = path + ".lock" if path else None
        with self._guard:
            self.lock = self._locks.setdefault(self.path or "", threading.Lock())

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.lock:
            if self.path is None:
                yield
                return
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock


def opener_for(rest_url: str) -> urllib.request.OpenerDirector:
    host = urlsplit(rest_url).hostname or ""
    # A proxy from the environment must not capture calls to a local simulator.
    proxies = {} if host in ("localhost", "127.0.0.1", "::1") else None
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies))


def send(opener: urllib.request.OpenerDirector, request: urllib.request.Request,
         rest_url: str, path: str, timeout: float) -> tuple[int, bytes]:
    """One HTTP exchange: (status, body), or TransientError for a network failure (to retry)
    and KrakenError for a URL that cannot work."""
    # Messages name the path only: the request object carries the key and signature.
    try:
        with opener.open(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        try:
            data = e.read()
        except (OSError, http.client.HTTPException):
            data = b""
        return e.code, data
    except http.client.InvalidURL as e:
        raise KrakenError(f"{path}: {rest_url} is not a usable URL: {e}") from None
    except http.client.HTTPException as e:
        # A truncated body (IncompleteRead), a garbled status line: the connection broke
        # mid-answer, which is a network failure like any other.
        raise TransientError(f"{path}: broken answer from {rest_url}: "
                             f"{_protocol_reason(e)}") from None
    except urllib.error.URLError as e:
        raise TransientError(f"{path}: cannot reach {rest_url}: "
                             f"{_reason(e.reason)}") from None
    except TimeoutError:
        raise TransientError(f"{path}: no answer from {rest_url} within "
                             f"{timeout:g} s") from None
    except (OSError, ValueError) as e:
        raise TransientError(f"{path}: request to {rest_url} failed: "
                             f"{_reason(e)}") from None


def public_get(rest_url: str, path: str, timeout: float = DEFAULT_TIMEOUT, *,
               exact: bool = False) -> Any:
    """GET a public endpoint (``/0/public/AssetPairs``); the decoded JSON document.
    ``exact``: JSON numbers with a fraction come back as their text (a float would round
    the last digits of Kraken's times)."""
    rest_url = rest_url.rstrip("/")
    request = urllib.request.Request(rest_url + path, headers={
        "User-Agent": USER_AGENT, "Accept": "application/json"})
    status, payload = send(opener_for(rest_url), request, rest_url, path, timeout)
    try:
        return json.loads(payload, parse_float=str) if exact else json.loads(payload)
    except ValueError:
        raise KrakenError(f"{path}: {rest_url} answered HTTP {status}, not JSON") from None


class PrivateClient:
    """Signed POSTs to ``<rest_url>/0/private/<method>``; returns Kraken's ``result``."""

    def __init__(self, rest_url: str, credentials: Credentials, *,
                 timeout: float = DEFAULT_TIMEOUT, user_agent: str = USER_AGENT,
                 nonce_state: str | None = "auto") -> None:
        self.rest_url = rest_url.rstrip("/")
        self._credentials = credentials
        self.timeout = timeout
        self.user_agent = user_agent
        state = nonce_state_path(credentials.key) if nonce_state == "auto" else nonce_state
        self._nonces = NonceSource(state)
        self._key_lock = _KeyLock(state)
        self._opener = opener_for(self.rest_url)

    def __repr__(self) -> str:
        return f"PrivateClient({self.rest_url!r}, {self._credentials!r})"

    def call(self, method: str, fields: dict[str, str] | None = None, *,
             exact: bool = False) -> Any:
        """``exact``: JSON numbers with a fraction come back as their text (a trade's
        ``time``, 1688667796.8802), not as binary floats."""
        path = f"/0/private/{method}"
        with self._key_lock.held():
            nonce = str(self._nonces.next())
            body = urlencode({"nonce": nonce, **(fields or {})})
            request = urllib.request.Request(
                self.rest_url + path, data=body.encode(), method="POST",
                headers={
                    "API-Key": self._credentials.key,
                    "API-Sign": api_sign(path, nonce, body, self._credentials.secret),
                    "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                    "User-Agent": self.user_agent,
                    "Accept": "application/json",
                })
            status, payload = self._send(request, path)
        return self._result(status, payload, path, exact)

    def _send(self, request: urllib.request.Request, path: str) -> tuple[int, bytes]:
        return send(self._opener, request, self.rest_url, path, self.timeout)

    def _result(self, status: int, payload: bytes, path: str, exact: bool = False) -> Any:
        try:
            doc = json.loads(payload, parse_float=str) if exact else json.loads(payload)
        except ValueError:
            doc = None
        errors = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(errors, list) and errors:
            raise classify([str(e) for e in errors], path)
        if status >= 500 or status == 429:
            raise TransientError(f"{path}: HTTP {status} from {self.rest_url}")
        if status != 200 or not isinstance(doc, dict) or "result" not in doc:
            raise KrakenError(f"{path}: unexpected answer from {self.rest_url} "
                              f"(HTTP {status}, {len(payload)} bytes)")
        return doc["result"]


def _protocol_reason(e: http.client.HTTPException) -> str:
    if isinstance(e, http.client.IncompleteRead):
        expected = f", {e.expected} more expected" if e.expected is not None else ""
        return f"truncated response ({len(e.partial)} bytes read{expected})"
    # The class name only: BadStatusLine quotes the line it got, which is the server's text.
    return type(e).__name__


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
