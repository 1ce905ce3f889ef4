"""Kraken's current pair list: REST ``AssetPairs``, fetched on request and cached on disk.

The bundled table in ``pairs.py`` is a small snapshot, enough for the simulator and the
common pairs. Kraken lists hundreds more and adds new ones every month, so config validation
also accepts every pair of the cached list that ``recorder pairs --update`` fetched. Nothing
here runs on its own: validating a config never touches the network (it must work offline
and in tests), it only reads the cache file.

Cache: ``$MARKET_RECORDER_CACHE/kraken-asset-pairs.json`` if that variable is set, else
``$XDG_CACHE_HOME/market-recorder/...``, else ``~/.cache/market-recorder/...``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from recorder.core import listcache
from recorder.exchanges.kraken.pairs import Pair, canonical_symbol, find_pair

CACHE_ENV = listcache.CACHE_ENV
CACHE_NAME = "kraken-asset-pairs.json"
ASSET_PAIRS_PATH = "/0/public/AssetPairs"


class PairListError(Exception):
    """The pair list could not be fetched or read: the message says from where and why."""


def cache_path() -> Path:
    return listcache.cache_path(CACHE_NAME)


def parse_asset_pairs(payload: dict[str, Any]) -> dict[str, Pair]:
    """An AssetPairs response -> pairs by canonical symbol.

    Entries without a ``wsname`` (Kraken's dark-pool ``.d`` pairs) have no WebSocket feed and
    are left out.
    """
    if not isinstance(payload, dict) or payload.get("error"):
        errors = payload.get("error") if isinstance(payload, dict) else None
        raise PairListError(f"AssetPairs answered with errors: {errors or payload!r:.200}")
    result = payload.get("result")
    if not isinstance(result, dict) or not result:
        raise PairListError("AssetPairs answered without a result")
    out: dict[str, Pair] = {}
    for rest_id, info in result.items():
        wsname = info.get("wsname") if isinstance(info, dict) else None
        if not wsname:
            continue
        try:
            pair = Pair(canonical_symbol(wsname), wsname, rest_id,
                        str(info.get("altname", rest_id)), int(info["pair_decimals"]),
                        int(info["lot_decimals"]), str(info.get("ordermin", "0")))
        except (KeyError, TypeError, ValueError) as e:
            raise PairListError(f"AssetPairs entry {rest_id}: missing or bad field {e}") from None
        out[pair.symbol] = pair
    return out


def fetch_asset_pairs(rest_url: str, timeout: float = 15.0) -> dict[str, Any]:
    """GET AssetPairs from ``rest_url`` (Kraken's, or the simulator's)."""
    from recorder.exchanges.kraken.rest import KrakenError, public_get

    try:
        return public_get(rest_url, ASSET_PAIRS_PATH, timeout)
    except KrakenError as e:
        raise PairListError(str(e)) from None


def save_pair_list(pairs: dict[str, Pair], source: str, path: Path | None = None) -> Path:
    """Write the list atomically (a reader never sees half a file)."""
    rows = [[p.wsname, p.rest_id, p.altname, p.price_decimals, p.qty_decimals, p.ordermin]
            for p in sorted(pairs.values(), key=lambda p: p.symbol)]
    return listcache.save(path or cache_path(), "pairs", rows, source, PairListError)


def read_pair_list(path: Path | None = None) -> tuple[dict[str, Pair], dict[str, Any]] | None:
    """The cached list and its metadata (source, fetched_at), or None if there is none."""
    def row(r: list) -> Pair:
        wsname, rest_id, altname, pdec, qdec, ordermin = r
        return Pair(canonical_symbol(wsname), wsname, rest_id, altname, int(pdec), int(qdec),
                    str(ordermin))

    found = listcache.load(path or cache_path(), "pairs", row, PairListError)
    if found is None:
        return None
    return {p.symbol: p for p in found[0]}, found[1]


def cached_pairs() -> dict[str, Pair]:
    """The cached pairs by canonical symbol and by v1 wsname (empty without a cache)."""
    path = cache_path()
    mtime = listcache.mtime(path)
    return {} if mtime is None else _indexed(str(path), mtime)


@cache
def _indexed(path: str, _mtime: int) -> dict[str, Pair]:
    found = read_pair_list(Path(path))
    if found is None:
        return {}
    pairs = found[0]
    return {**{p.wsname: p for p in pairs.values()}, **pairs}


def lookup_pair(name: str) -> Pair | None:
    """A pair by canonical/v2 name or v1 wsname: the bundled table first, then the cache."""
    cached = cached_pairs()
    return find_pair(name) or cached.get(name) or cached.get(canonical_symbol(name))


def unknown_pair_hint() -> str:
    """What to do about a pair missing from both lists, for the config error."""
    found = cached_pairs()
    if found:
        return ("not in Kraken's pair list fetched by `recorder pairs --update` "
                f"({len({p.symbol for p in found.values()})} pairs; run it again if the pair "
                "is new)")
    return ("not in the bundled pair list; `recorder pairs --update` fetches Kraken's "
            "current list")


_remote: dict[str, dict[str, Pair]] = {}


def lookup_remote(name: str, rest_url: str, timeout: float = 5.0) -> Pair | None:
    """A pair missing from the bundled table and the cache, looked up once per process in
    ``rest_url``'s AssetPairs (a config may name a pair listed since the last update). A
    failure to ask means "not found": the config error then says how to update the list."""
    pairs = _remote.get(rest_url)
    if pairs is None:
        try:
            fetched = parse_asset_pairs(fetch_asset_pairs(rest_url, timeout))
        except (PairListError, OSError, ValueError):
            fetched = {}
        pairs = _remote[rest_url] = {**{p.wsname: p for p in fetched.values()}, **fetched}
    return pairs.get(name) or pairs.get(canonical_symbol(name))

