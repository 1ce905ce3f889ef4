"""``recorder pairs [CONFIG] [--update] [--rest-url URL] [--search TEXT]``: the pairs configs
may name, and fetching Kraken's current list into the cache that config validation reads."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import typer

from recorder.cli.usage import fail
from recorder.core.config import DEFAULT_REST_URL
from recorder.exchanges.kraken.pair_list import (
    PairListError,
    cache_path,
    fetch_asset_pairs,
    parse_asset_pairs,
    read_pair_list,
    save_pair_list,
)
from recorder.exchanges.kraken.pairs import PAIRS, Pair


def _rest_url_of(config: Path) -> str:
    """The config's exchange.rest_url, read without validating the rest of the config (a
    config naming a pair not yet listed is exactly what this command is for)."""
    try:
        doc = tomllib.loads(config.read_text())
    except OSError as e:
        fail(f"{config}: {e.strerror or e}", 2)
    except tomllib.TOMLDecodeError as e:
        fail(f"{config}: not valid TOML: {e}", 2)
    url = (doc.get("exchange") or {}).get("rest_url", DEFAULT_REST_URL)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        fail(f"{config}: exchange.rest_url: {url!r} is not an http(s) URL", 2)
    return url


def pairs(
    config: Path | None = typer.Argument(None, help="Config whose exchange.rest_url to fetch "
                                         "from (default: Kraken)."),
    update: bool = typer.Option(False, "--update", help="Fetch Kraken's AssetPairs and cache "
                                "it; configs may then name every pair it lists."),
    rest_url: str | None = typer.Option(None, "--rest-url", help="REST endpoint, e.g. the "
                                        "simulator's (default: the config's, else "
                                        f"{DEFAULT_REST_URL})."),
    search: str | None = typer.Option(None, "--search", help="Only pairs whose name contains "
                                      "this text (case-insensitive)."),
) -> None:
    """List the pairs configs may name; --update fetches Kraken's current list."""
    url = rest_url or (_rest_url_of(config) if config else DEFAULT_REST_URL)
    try:
        if update:
            fetched = parse_asset_pairs(fetch_asset_pairs(url))
            path = save_pair_list(fetched, url)
            typer.echo(f"{len(fetched)} pairs from {url} cached in {path}", err=True)
        found = read_pair_list()
    except PairListError as e:
        fail(str(e), 1)
    known: dict[str, tuple[Pair, str]] = {s: (p, "bundled") for s, p in PAIRS.items()}
    if found:
        cached, meta = found
        when = dt.datetime.fromtimestamp(meta.get("fetched_at") or 0, dt.UTC)
        typer.echo(f"cache: {cache_path()} ({len(cached)} pairs from {meta.get('source')}, "
                   f"{when:%Y-%m-%d %H:%M}Z)", err=True)
        for symbol, pair in cached.items():
            known[symbol] = (pair, "bundled+cached" if symbol in PAIRS else "cached")
    else:
        typer.echo(f"cache: none yet ({len(PAIRS)} bundled pairs); `recorder pairs --update` "
                   "fetches Kraken's list", err=True)
    needle = (search or "").lower()
    typer.echo(f"{'symbol':<14} {'v1 name':<14} {'price dp':>8} {'qty dp':>6}  source")
    for symbol in sorted(known):
        pair, source = known[symbol]
        if needle in symbol.lower() or needle in pair.wsname.lower():
            typer.echo(f"{symbol:<14} {pair.wsname:<14} {pair.price_decimals:>8} "
                       f"{pair.qty_decimals:>6}  {source}")
