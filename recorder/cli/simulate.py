"""``recorder simulate``: the typer command, and ``python -m recorder.simulator``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recorder.simulator.registry import (
    DEMO_API_KEY,
    DEMO_API_SECRET,
    SIM_KEY_ENV,
    SIM_PASSPHRASE_ENV,
    SIM_SECRET_ENV,
)

__all__ = ["SIM_KEY_ENV", "SIM_PASSPHRASE_ENV", "SIM_SECRET_ENV", "main", "simulate"]


def _fail(message: str) -> None:
    typer.echo(f"recorder simulate: error: {message}", err=True)
    raise typer.Exit(2)


def simulate(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        help="WebSocket port (all four endpoints, by path); REST uses port+1. 0: free ports."
    )] = 0,
    replay: Annotated[Path | None, typer.Option(
        help="Replay a capture (cryptofeed, python-kraken-sdk, ndjson, or raw-table Parquet)."
    )] = None,
    speed: Annotated[str, typer.Option(
        help="Time scale: 2 = twice as fast; 'max' = as fast as the client reads."
    )] = "1",
    seed: Annotated[int | None, typer.Option(help="Seed of the synthetic market.")] = None,
    pairs: Annotated[str, typer.Option(help="Synthetic pairs, comma-separated.")] = (
        "BTC/USD,ETH/USD"
    ),
    rate: Annotated[float, typer.Option(
        help="Synthetic market messages per second (all pairs), before --speed."
    )] = 200.0,
    api_key: Annotated[str, typer.Option(
        envvar=SIM_KEY_ENV, show_envvar=True, help="API key accepted by REST."
    )] = DEMO_API_KEY,
    api_secret: Annotated[str, typer.Option(
        envvar=SIM_SECRET_ENV, show_envvar=True,
        help="Its base64 secret. On the command line it shows in the process list: prefer the "
             "environment variable or --api-secret-file for a secret that matters.",
    )] = DEMO_API_SECRET,
    api_secret_file: Annotated[Path | None, typer.Option(
        help="Read the base64 secret from this file (readable by its owner only)."
    )] = None,
    token_ttl: Annotated[float, typer.Option(
        help="Seconds a WebSocket token may wait before its first use."
    )] = 900.0,
    fill_rate: Annotated[float, typer.Option(
        help="Chance that a public trade fills the demo account (private feeds)."
    )] = 0.05,
    trade_snapshot_v1: Annotated[bool, typer.Option(
        help="v1 trade: send the last 50 trades on subscribe (Kraken's newer behaviour)."
    )] = False,
    drop_after_messages: Annotated[int | None, typer.Option(
        help="Fault: drop every connection after this many messages."
    )] = None,
    drop_after_seconds: Annotated[float | None, typer.Option(
        help="Fault: drop every connection after this many seconds."
    )] = None,
    drop_mode: Annotated[str, typer.Option(
        help="How to drop: abort (TCP reset, 1006), close (close frame 1000), eof (FIN only)."
    )] = "abort",
    stall_after_seconds: Annotated[float | None, typer.Option(
        help="Fault: every connection goes silent (no heartbeats) after this many seconds."
    )] = None,
    stall_seconds: Annotated[float, typer.Option(help="Length of that stall.")] = 10.0,
    malformed_after_messages: Annotated[int | None, typer.Option(
        help="Fault: one malformed (non-JSON) frame after this many messages, per connection."
    )] = None,
    corrupt_book_after_messages: Annotated[int | None, typer.Option(
        help="Fault: after this many messages, send one book level wrong (checksum fails)."
    )] = None,
    corrupt_symbol: Annotated[str, typer.Option(
        help="Symbol for --corrupt-book-after-messages."
    )] = "BTC/USD",
    maintenance_after_seconds: Annotated[float | None, typer.Option(
        help="Fault: system status 'maintenance' after this many seconds."
    )] = None,
    maintenance_seconds: Annotated[float, typer.Option(
        help="How long maintenance lasts before 'online' again."
    )] = 5.0,
    invalidate_tokens_after_seconds: Annotated[float | None, typer.Option(
        help="Fault: invalidate every issued token after this many seconds."
    )] = None,
    reject_subscribes: Annotated[int, typer.Option(
        help="Fault: answer the first N subscribe requests with 'Exceeded msg rate'."
    )] = 0,
    exchange: Annotated[str, typer.Option(
        help="kraken, or kucoin (see docs/simulator-kucoin.md for how the options apply)."
    )] = "kraken",
    api_passphrase: Annotated[str, typer.Option(
        envvar=SIM_PASSPHRASE_ENV, show_envvar=True, help="KuCoin: the key's passphrase."
    )] = "",
    ping_interval: Annotated[int, typer.Option(help="KuCoin: bullet pingInterval, ms.")] = 18000,
    ping_timeout: Annotated[int, typer.Option(help="KuCoin: bullet pingTimeout, ms.")] = 10000,
    max_connection_age: Annotated[float, typer.Option(
        help="KuCoin: cut each connection after this many seconds (KuCoin's 24 h); 0 = never."
    )] = 86400.0,
    slow_welcome: Annotated[float, typer.Option(
        help="KuCoin fault: each connection's welcome comes this many seconds late."
    )] = 0.0,
    rest_error: Annotated[list[str] | None, typer.Option(
        help="KuCoin fault: CODE[:N], the next N REST requests fail with CODE (e.g. 429000:3)."
    )] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run a local exchange (Kraken by default; --exchange kucoin) for tests and demos."""
    from recorder.simulator import registry

    if exchange not in registry.names():
        _fail(f"--exchange must be {' or '.join(registry.names())}, not {exchange!r}")
    raise typer.Exit(registry.run(exchange, locals(), simulate))


def main() -> None:
    from recorder.cli.app import run_app

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(simulate)
    run_app(app, "recorder simulate")
