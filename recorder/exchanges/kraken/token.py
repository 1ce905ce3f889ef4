"""WebSocket tokens for Kraken's private channels: fetch, cache, refresh, retry.

Kraken's rule: a token from ``GetWebSocketsToken`` must be used within its lifetime
(``expires``, 900 s) and stays valid while a private subscription made with it lives; but
Kraken can invalidate tokens at any time (``ESession:Invalid session``), so a private
connection asks for a fresh one before every (re)connect (``fresh``). ``token`` serves
callers that just need a usable one: cached, refetched ahead of expiry.

Thread safety: one lock guards the cache and one serialises fetches, so concurrent callers
share a fetch instead of each making one (Kraken rate-limits private REST calls).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from recorder.core.secrets import CredentialError, Credentials, check_secret
from recorder.exchanges.kraken.rest import (
    DEFAULT_TIMEOUT,
    KrakenError,
    PrivateClient,
    TransientError,
)

log = logging.getLogger("recorder.exchanges.kraken.token")

METHOD = "GetWebSocketsToken"


class TokenError(Exception):
    """No token could be had (after retries); the message says why, never the secret."""


@dataclass(frozen=True, slots=True)
class Token:
    value: str = ""
    ttl: float = 0.0  # seconds, as Kraken said
    fetched_at: float = 0.0  # by the helper's clock, when the request was *sent*
    serial: int = 0  # which fetch produced it

    def __repr__(self) -> str:
        # A token grants the private feed of the account for 15 minutes: keep it out of logs.
        return f"Token(ttl={self.ttl:g}, fetched_at={self.fetched_at:.3f}, serial={self.serial})"


class TokenHelper:
    """Fetches and caches WebSocket tokens for one API key.

    ``retries`` extra attempts are made on rate limits and network errors, ``backoff_initial``
    doubling up to ``backoff_max`` seconds, with jitter; credential errors are raised at once.
    """

    def __init__(self, rest_url: str, key: str | None = None, secret: str | None = None, *,
                 credentials: Credentials | None = None, refresh_margin: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None, retries: int = 3,
                 backoff_initial: float = 0.5, backoff_max: float = 8.0,
                 timeout: float = DEFAULT_TIMEOUT, client: PrivateClient | None = None,
                 rng: random.Random | None = None) -> None:
        if credentials is None:
            if not key or not secret:
                raise CredentialError("TokenHelper needs an API key and secret")
            check_secret(secret, "the secret given to TokenHelper")
            credentials = Credentials(key, secret, "arguments")
        self.rest_url = rest_url
        self.refresh_margin = refresh_margin
        self.retries = retries
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.fetches = 0  # requests that returned a token
        self._client = client or PrivateClient(rest_url, credentials, timeout=timeout)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._state = threading.Lock()
        self._fetching = threading.Lock()
        self._current: Token | None = None
        self._started = 0  # fetches begun, so waiters can tell a newer token from theirs

    def __repr__(self) -> str:
        return f"TokenHelper({self.rest_url!r}, fetches={self.fetches})"

    # -- public -------------------------------------------------------------------------

    def token(self) -> str:
        """A token with at least ``refresh_margin`` seconds of its lifetime left."""
        with self._state:
            if self._usable(self._current):
                return self._current.value  # type: ignore[union-attr]
            wanted = self._started
        return self._fetch_after(wanted, need_usable=True)

    def fresh(self) -> str:
        """A token fetched after this call began (before every private connect)."""
        with self._state:
            wanted = self._started
        return self._fetch_after(wanted, need_usable=False)

    def invalidate(self) -> None:
        """Forget the cached token (e.g. after ``ESession:Invalid session``)."""
        with self._state:
            self._current = None

    def expires_in(self) -> float | None:
        """Seconds until the cached token's lifetime ends, or None without one."""
        with self._state:
            cur = self._current
        return None if cur is None else cur.fetched_at + cur.ttl - self._clock()

    # -- internals ----------------------------------------------------------------------

    def _usable(self, tok: Token | None) -> bool:
        if tok is None:
            return False
        # A short-lived token (a test server's) still gets half its life as cache time.
        margin = min(self.refresh_margin, tok.ttl / 2)
        return self._clock() < tok.fetched_at + tok.ttl - margin

    def _fetch_after(self, wanted: int, need_usable: bool) -> str:
        with self._fetching:
            with self._state:
                cur = self._current
                # Someone fetched while we waited for the lock: theirs may be good enough.
                if cur is not None and (self._usable(cur) if need_usable
                                        else cur.serial > wanted):
                    return cur.value
                self._started += 1
                serial = self._started
            tok = self._fetch_with_retries(serial)
            with self._state:
                self._current = tok
            return tok.value

    def _fetch_with_retries(self, serial: int) -> Token:
        attempt = 0
        while True:
            try:
                return self._fetch_once(serial)
            except TransientError as e:
                if attempt >= self.retries:
                    tries = f"{attempt + 1} attempts" if attempt else "1 attempt"
                    raise TokenError(f"no WebSocket token after {tries}: {e}") from None
                delay = self._delay(attempt)
                attempt += 1
                log.warning("WebSocket token request failed (%s); retry %d/%d in %.1f s",
                            e, attempt, self.retries, delay)
                (self._sleep or time.sleep)(delay)

    def _fetch_once(self, serial: int) -> Token:
        sent = self._clock()
        try:
            result = self._client.call(METHOD)
        except (CredentialError, TransientError):
            raise  # InvalidCredentials is a KrakenError too: keep its class
        except KrakenError as e:
            raise TokenError(f"no WebSocket token: {e}") from None
        token = result.get("token") if isinstance(result, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenError("no WebSocket token: Kraken's answer has no token")
        try:
            ttl = float(result.get("expires", 900))
        except (TypeError, ValueError):
            ttl = 900.0
        with self._state:
            self.fetches += 1
        log.info("fetched a WebSocket token (valid for %g s)", ttl)
        return Token(token, ttl, sent, serial)

    def _delay(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** attempt)
        return self._rng.uniform(self.backoff_initial, max(self.backoff_initial, ceiling))
