"""What ``recorder pairs`` and ``recorder token`` ask of KuCoin (see ExchangeSpec).

- ``list_symbols``: the bundled symbols and those ``recorder pairs --update`` cached;
- ``update_symbols``: ``GET /api/v2/symbols`` at a REST base into that cache;
- ``fetch_token``: a private WebSocket token (``POST /api/v1/bullet-private``, signed with
  the configured key), for a client of one's own.

Messages name endpoints, KuCoin's codes and where a credential came from, never its value.
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from recorder.core.secrets import CredentialError
from recorder.exchanges.base import ExchangeError, SymbolInfo
from recorder.exchanges.kucoin import credentials as creds_mod
from recorder.exchanges.kucoin.common import (
    DEFAULT_KEY_ENV,
    DEFAULT_PASSPHRASE_ENV,
    DEFAULT_SECRET_ENV,
)
from recorder.exchanges.kucoin.symbols import (
    BUNDLED,
    Symbol,
    SymbolListError,
    cache_path,
    fetch_symbols,
    read_symbol_list,
    save_symbol_list,
)

# KuCoin: "Validity period for token: 24 hours" (a token not used to connect by then is
# refused; one connection per token).
TOKEN_LIFETIME = 24 * 3600.0
# Seconds before retry n (then the last one again): rate limits and network trouble.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)


def decimals(increment: str | None) -> int | None:
    """Decimal places of an increment's text ("0.1" -> 1, "0.00000001" -> 8, "1" -> 0)."""
    if increment is None:
        return None
    try:
        value = Decimal(increment)
    except (InvalidOperation, TypeError):
        return None
    if not value.is_finite() or value <= 0:
        return None
    return max(0, -value.normalize().as_tuple().exponent)


def _info(sym: Symbol, source: str) -> SymbolInfo:
    return SymbolInfo(sym.symbol, sym.wire, decimals(sym.price_increment),
                      decimals(sym.base_increment), source)


def list_symbols() -> tuple[list[SymbolInfo], str]:
    """The bundled symbols and the cached ones, and a line saying where the cache is."""
    try:
        found = read_symbol_list()
    except SymbolListError as e:
        raise ExchangeError(str(e)) from None
    known: dict[str, tuple[Symbol, str]] = {s: (sym, "bundled") for s, sym in BUNDLED.items()}
    if found:
        cached, meta = found
        when = dt.datetime.fromtimestamp(meta.get("fetched_at") or 0, dt.UTC)
        line = (f"cache: {cache_path()} ({len(cached)} symbols from {meta.get('source')}, "
                f"{when:%Y-%m-%d %H:%M}Z)")
        for name, sym in cached.items():
            if name in BUNDLED:
                # The cached entry knows the increments the bundled one may not.
                known[name] = (sym, "bundled+cached")
            else:
                known[name] = (sym, "cached")
    else:
        line = (f"cache: none yet ({len(BUNDLED)} bundled symbols); `recorder pairs "
                "--exchange kucoin --update` fetches KuCoin's list")
    return [_info(sym, source) for _, (sym, source) in sorted(known.items())], line


def update_symbols(rest_url: str) -> str:
    """KuCoin's list (``GET /api/v2/symbols`` at ``rest_url``) into the cache."""
    try:
        fetched = fetch_symbols(rest_url)
        path = save_symbol_list(fetched, rest_url)
    except SymbolListError as e:
        raise ExchangeError(str(e)) from None
    return f"{len(fetched)} symbols from {rest_url} cached in {path}"


def _credentials(config: Any) -> creds_mod.KucoinCredentials:
    """The config's credentials; without a config, KUCOIN_API_KEY/_SECRET/_PASSPHRASE."""
    if config is None:
        return creds_mod.from_env((DEFAULT_KEY_ENV, DEFAULT_SECRET_ENV, DEFAULT_PASSPHRASE_ENV))
    return creds_mod.load(config)


def fetch_token(config: Any, rest_url: str, timeout: float, retries: int, *,
                sleep: Any = time.sleep) -> tuple[str, float | None]:
    """A private WebSocket token (``POST /api/v1/bullet-private``) with the config's key.

    Raises CredentialError when the credentials are missing or KuCoin refuses them (fixing
    them is the only cure), ExchangeError for everything else (network, rate limits,
    KuCoin's own trouble, an answer without a token); rate limits and transient failures
    are retried ``retries`` times first."""
    from recorder.exchanges.kucoin.rest import KucoinError, KucoinRest, TransientError

    creds = _credentials(config)  # CredentialError names the variable or the file
    client = KucoinRest(rest_url, creds, timeout=timeout)
    attempt = 0
    while True:
        try:
            data, _ = client.bullet_private()
            return data["token"], TOKEN_LIFETIME
        except TransientError as e:
            if attempt >= retries:
                raise ExchangeError(f"{e} (after {attempt + 1} attempts)") from None
            sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            attempt += 1
        except KucoinError as e:
            # InvalidCredentials is also a CredentialError: let it through as that.
            if isinstance(e, CredentialError):
                raise
            raise ExchangeError(str(e)) from None
