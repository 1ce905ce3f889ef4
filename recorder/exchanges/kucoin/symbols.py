"""KuCoin spot symbols: names, a small bundled list, a cached full list, one REST look-up.

Names: tables and configs say BTC/USDT (canonical); KuCoin's topics and REST say BTC-USDT.
Configs may use either.

Config validation looks a name up in this order (``lookup_symbol``):

1. the bundled list below (offline, always there);
2. the cache file ``kucoin-symbols.json`` that ``save_symbol_list`` writes (``recorder pairs
   --update`` for KuCoin), in the same folder as Kraken's pair list:
   ``$MARKET_RECORDER_CACHE``, else ``$XDG_CACHE_HOME/market-recorder``, else
   ``~/.cache/market-recorder``;
3. once per process and REST URL, KuCoin's ``GET /api/v2/symbols`` at the configured REST
   endpoint (short timeout). A failure there means "unknown", never an exception: a config
   is refused with a clear message rather than a traceback when offline.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from recorder.core import listcache
from recorder.exchanges.kucoin.common import canonical

CACHE_ENV = listcache.CACHE_ENV
CACHE_NAME = "kucoin-symbols.json"
LOOKUP_TIMEOUT = 5.0


class SymbolListError(Exception):
    """The symbol list could not be fetched, read or written: the message says why."""


@dataclass(frozen=True, slots=True)
class Symbol:
    symbol: str  # canonical, BTC/USDT
    wire: str  # KuCoin's name, BTC-USDT
    base: str
    quote: str
    # Exact decimal text from /api/v2/symbols; None where the bundled list does not know it.
    price_increment: str | None = None
    base_increment: str | None = None
    enabled: bool | None = None  # enableTrading


def _bundled() -> dict[str, Symbol]:
    # Increments: GET /api/v2/symbols entries in ../shared/data/kucoin/rest.json (KuCoin's
    # SDK spec example and ccxt's 2024 market fixture, both BTC-USDT priceIncrement "0.1"
    # baseIncrement "0.00000001"; ETH-USDT "0.01"/"0.0000001"; ADA-USDT "0.0001"/"0.01").
    # The other names are KuCoin spot pairs seen in real frames of that folder or widely
    # traded; their increments are not in any source we hold, so they are left unknown
    # (None) rather than guessed. The cache or the REST look-up knows them.
    known = {"BTC-USDT": ("0.1", "0.00000001"), "ETH-USDT": ("0.01", "0.0000001"),
             "ADA-USDT": ("0.0001", "0.01")}
    names = ("BTC-USDT", "ETH-USDT", "ADA-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT",
             "LTC-USDT", "DOT-USDT", "LINK-USDT", "TRX-USDT", "AVAX-USDT", "KCS-USDT",
             "USDC-USDT", "ETH-BTC", "XRP-BTC", "LTC-BTC", "TRX-BTC", "KCS-BTC", "BTC-USDC",
             "ETH-USDC")
    out = {}
    for name in names:
        base, _, quote = name.rpartition("-")
        price, size = known.get(name, (None, None))
        out[canonical(name)] = Symbol(canonical(name), name, base, quote, price, size)
    return out


BUNDLED: dict[str, Symbol] = _bundled()


def cache_path() -> Path:
    return listcache.cache_path(CACHE_NAME)


def parse_symbols(data: Any) -> dict[str, Symbol]:
    """The ``data`` list of ``GET /api/v2/symbols`` -> symbols by canonical name."""
    if not isinstance(data, list) or not data:
        raise SymbolListError("/api/v2/symbols answered without a list of symbols")
    out: dict[str, Symbol] = {}
    for item in data:
        try:
            name = item["symbol"]
            if not isinstance(name, str) or "-" not in name:
                raise ValueError(name)
            base, _, quote = name.rpartition("-")
            price, size = item.get("priceIncrement"), item.get("baseIncrement")
            enabled = item.get("enableTrading")
            sym = Symbol(canonical(name), name, item.get("baseCurrency") or base,
                         item.get("quoteCurrency") or quote,
                         None if price is None else str(price),
                         None if size is None else str(size),
                         enabled if isinstance(enabled, bool) else None)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SymbolListError(f"/api/v2/symbols entry {item!r:.80}: missing or bad "
                                  "symbol") from None
        out[sym.symbol] = sym
    return out


def fetch_symbols(rest_url: str, timeout: float = 15.0) -> dict[str, Symbol]:
    """``GET /api/v2/symbols`` at ``rest_url`` (KuCoin's, or the simulator's)."""
    from recorder.exchanges.kucoin.rest import KucoinError, KucoinRest

    try:
        return parse_symbols(KucoinRest(rest_url, timeout=timeout).symbols())
    except KucoinError as e:
        raise SymbolListError(str(e)) from None


def save_symbol_list(symbols: dict[str, Symbol], source: str,
                     path: Path | None = None) -> Path:
    """Write the list atomically (a reader never sees half a file)."""
    rows = [[s.wire, s.base, s.quote, s.price_increment, s.base_increment, s.enabled]
            for s in sorted(symbols.values(), key=lambda s: s.symbol)]
    return listcache.save(path or cache_path(), "symbols", rows, source, SymbolListError)


def read_symbol_list(path: Path | None = None
                     ) -> tuple[dict[str, Symbol], dict[str, Any]] | None:
    """The cached list and its metadata (source, fetched_at), or None if there is none."""
    def row(r: list) -> Symbol:
        name, base, quote, price, size, enabled = r
        return Symbol(canonical(name), name, base, quote, price, size, enabled)

    found = listcache.load(path or cache_path(), "symbols", row, SymbolListError)
    if found is None:
        return None
    return {s.symbol: s for s in found[0]}, found[1]


def cached_symbols() -> dict[str, Symbol]:
    """The cached symbols by canonical name (empty without a readable cache)."""
    path = cache_path()
    mtime = listcache.mtime(path)
    if mtime is None:
        return {}
    try:
        return _read_cached(str(path), mtime)
    except SymbolListError:
        return {}


@cache
def _read_cached(path: str, _mtime: int) -> dict[str, Symbol]:
    found = read_symbol_list(Path(path))
    return found[0] if found else {}


_remote: dict[str, dict[str, Symbol]] = {}
_remote_lock = threading.Lock()


def _remote_symbols(rest_url: str) -> dict[str, Symbol]:
    """KuCoin's list at ``rest_url``, fetched once per process (a failure is remembered as
    an empty list: one look-up, not one per unknown name)."""
    with _remote_lock:
        if rest_url not in _remote:
            try:
                _remote[rest_url] = fetch_symbols(rest_url, timeout=LOOKUP_TIMEOUT)
            except (SymbolListError, OSError, ValueError):
                _remote[rest_url] = {}
        return _remote[rest_url]


def find_symbol(name: str, rest_url: str | None = None) -> Symbol | None:
    """The symbol named ``name`` (BTC/USDT or BTC-USDT): bundled, cached, then at
    ``rest_url`` (if given) before giving up."""
    if not isinstance(name, str) or not name.strip():
        return None
    name = name.strip()
    keys = [canonical(name)]
    if keys[0].upper() != keys[0]:
        keys.append(keys[0].upper())
    for table in (BUNDLED, cached_symbols()):
        for key in keys:
            if key in table:
                return table[key]
    if rest_url:
        remote = _remote_symbols(rest_url)
        for key in keys:
            if key in remote:
                return remote[key]
    return None


def lookup_symbol(name: str, rest_url: str | None = None) -> str | None:
    """The canonical name of ``name``, or None if KuCoin does not list it (or, for a name
    in neither local list, ``rest_url`` could not be asked)."""
    found = find_symbol(name, rest_url)
    return found.symbol if found is not None else None


def unknown_symbol_hint() -> str:
    """What to do about a symbol found nowhere, for the config error."""
    found = cached_symbols()
    if found:
        return (f"not in KuCoin's symbol list cached by `recorder pairs --update` "
                f"({len(found)} symbols; run it again if the symbol is new) nor at the "
                "configured REST endpoint")
    return ("not in the bundled list of common KuCoin symbols, and the configured REST "
            "endpoint's /api/v2/symbols did not list it (or could not be reached); "
            "`recorder pairs --update` caches KuCoin's full list")
