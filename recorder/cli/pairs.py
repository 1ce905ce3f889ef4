"""``recorder pairs [CONFIG] [--exchange NAME] [--update] [--rest-url URL] [--search TEXT]``:
the pairs configs may name, and fetching an exchange's current list into the cache that
config validation reads."""

from __future__ import annotations

import tomllib
from pathlib import Path

import typer

from recorder import exchanges
from recorder.cli.usage import fail
from recorder.exchanges.base import ExchangeError, ExchangeSpec


def _exchange_of(config: Path | None, name: str | None) -> tuple[ExchangeSpec, str | None]:
    """The exchange and the config's rest_url, read without validating the rest of the
    config (a config naming a pair not yet listed is exactly what this command is for)."""
    url = None
    if config is not None:
        try:
            doc = tomllib.loads(config.read_text())
        except OSError as e:
            fail(f"{config}: {e.strerror or e}", 2)
        except tomllib.TOMLDecodeError as e:
            fail(f"{config}: not valid TOML: {e}", 2)
        section = doc.get("exchange") or {}
        name = name or section.get("name")
        url = section.get("rest_url")
        if url is not None and (not isinstance(url, str)
                                or not url.startswith(("http://", "https://"))):
            fail(f"{config}: exchange.rest_url: {url!r} is not an http(s) URL", 2)
    try:
        spec = exchanges.get(name or exchanges.DEFAULT_EXCHANGE)
    except KeyError as e:
        fail(str(e.args[0]), 2)
    return spec, url


def pairs(
    config: Path | None = typer.Argument(None, help="Config whose exchange and rest_url to "
                                         "use (default: Kraken's)."),
    exchange: str | None = typer.Option(None, "--exchange", help="kraken or kucoin (default: "
                                        "the config's, else kraken)."),
    update: bool = typer.Option(False, "--update", help="Fetch the exchange's pair list "
                                "(Kraken AssetPairs, KuCoin /api/v2/symbols) and cache it; "
                                "configs may then name every pair it lists."),
    rest_url: str | None = typer.Option(None, "--rest-url", help="REST endpoint, e.g. the "
                                        "simulator's (default: the config's, else the "
                                        "exchange's)."),
    search: str | None = typer.Option(None, "--search", help="Only pairs whose name contains "
                                      "this text (case-insensitive)."),
) -> None:
    """List the pairs configs may name; --update fetches the exchange's current list."""
    spec, config_url = _exchange_of(config, exchange)
    url = rest_url or config_url or spec.default_rest_url
    if spec.list_symbols is None:
        fail(f"{spec.name} has no pair list", 2)
    try:
        if update:
            typer.echo(spec.update_symbols(url), err=True)
        symbols, cache_line = spec.list_symbols()
    except ExchangeError as e:
        fail(str(e), 1)
    typer.echo(cache_line, err=True)
    needle = (search or "").lower()
    label = spec.wire_name_label
    typer.echo(f"{'symbol':<14} {label:<14} {'price dp':>8} {'qty dp':>6}  source")
    for info in symbols:
        if needle in info.symbol.lower() or needle in info.wire_name.lower():
            pdp = "" if info.price_decimals is None else info.price_decimals
            qdp = "" if info.qty_decimals is None else info.qty_decimals
            typer.echo(f"{info.symbol:<14} {info.wire_name:<14} {pdp:>8} {qdp:>6}  "
                       f"{info.source}")
