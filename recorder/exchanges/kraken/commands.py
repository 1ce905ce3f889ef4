"""What ``recorder pairs`` and ``recorder token`` ask of Kraken (see ExchangeSpec)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from recorder.exchanges.base import ExchangeError, SymbolInfo
from recorder.exchanges.kraken.pair_list import (
    PairListError,
    cache_path,
    fetch_asset_pairs,
    parse_asset_pairs,
    read_pair_list,
    save_pair_list,
)
from recorder.exchanges.kraken.pairs import PAIRS


def list_symbols() -> tuple[list[SymbolInfo], str]:
    """The bundled pairs and the cached ones, and a line saying where the cache is."""
    try:
        found = read_pair_list()
    except PairListError as e:
        raise ExchangeError(str(e)) from None
    known = {s: (p, "bundled") for s, p in PAIRS.items()}
    if found:
        cached, meta = found
        when = dt.datetime.fromtimestamp(meta.get("fetched_at") or 0, dt.UTC)
        line = (f"cache: {cache_path()} ({len(cached)} pairs from {meta.get('source')}, "
                f"{when:%Y-%m-%d %H:%M}Z)")
        for symbol, pair in cached.items():
            known[symbol] = (pair, "bundled+cached" if symbol in PAIRS else "cached")
    else:
        line = (f"cache: none yet ({len(PAIRS)} bundled pairs); `recorder pairs --update` "
                "fetches Kraken's list")
    return [SymbolInfo(s, p.wsname, p.price_decimals, p.qty_decimals, source)
            for s, (p, source) in sorted(known.items())], line


def update_symbols(rest_url: str) -> str:
    try:
        fetched = parse_asset_pairs(fetch_asset_pairs(rest_url))
        path = save_pair_list(fetched, rest_url)
    except PairListError as e:
        raise ExchangeError(str(e)) from None
    return f"{len(fetched)} pairs from {rest_url} cached in {path}"


def fetch_token(config: Any, rest_url: str, timeout: float,
                retries: int) -> tuple[str, float | None]:
    """A WebSocket token (GetWebSocketsToken) with the config's key, or the environment's."""
    from recorder.core import secrets
    from recorder.exchanges.kraken.token import TokenError, TokenHelper

    creds = secrets.load(config) if config is not None else secrets.from_env()
    helper = TokenHelper(rest_url, credentials=creds, timeout=timeout, retries=retries)
    try:
        value = helper.fresh()
    except TokenError as e:
        raise ExchangeError(str(e)) from None
    return value, helper.expires_in()
