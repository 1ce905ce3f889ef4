"""`recorder tail` and `recorder watch`: looking at the data itself, live."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import typer

from recorder.cli.usage import fail


def tail(
    table: str = typer.Argument(..., help="Table to follow (trades, book, spread, ohlc, "
                                "ticker, fills, events, ...)."),
    symbol: str | None = typer.Option(None, "--symbol", help="Only this symbol (BTC/USD; "
                                      "BTC-USDT works too)."),
    data: Path = typer.Option(Path("data"), "--data", help="Data directory being recorded."),
    exchange: str | None = typer.Option(None, "--exchange", help="Only this exchange."),
    lines: int = typer.Option(10, "--lines", "-n", min=0, help="Journaled rows to show "
                              "first."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Keep printing new rows "
                                "(like tail -f) or stop after the first ones."),
) -> None:
    """Follow the rows of TABLE as they are journaled (about a second after they arrive),
    as an aligned table, until Ctrl-C."""
    from recorder.analysis.tail import follow as follow_rows
    from recorder.core.schema import TABLES

    if table not in TABLES:
        fail(f"no table {table!r}; tables: {', '.join(TABLES)}")
    if not data.is_dir():
        fail(f"no data directory {data} (pass the --data of the running `recorder run`)")
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    def write(line: str) -> None:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # `recorder tail ... | head`
            stopping.set()

    follow_rows(data, table, symbol=symbol, exchange=exchange, lines=lines,
                keep_following=follow, write=write, stop=stopping.is_set)


def watch(
    config: Path = typer.Argument(..., help="Config file (TOML)."),
    symbol: list[str] = typer.Option([], "--symbol", help="Only this symbol (repeatable)."),
    table: list[str] = typer.Option([], "--table", help="Only this table (repeatable): "
                                    "trades, book, spread, ohlc, ticker, fills."),
    url: str | None = typer.Option(None, "--url", help="Override the public WebSocket URL."),
    duration: float | None = typer.Option(None, "--duration", min=0.1,
                                          help="Stop after this many seconds."),
    events: bool = typer.Option(True, "--events/--no-events", help="Also print events "
                                "(connected, gaps, resyncs)."),
    private: bool = typer.Option(False, "--private", help="Also connect the private "
                                 "channels (fills) with the configured key."),
    log_level: str = typer.Option("warning", "--log-level", help="debug, info, warning, "
                                  "error."),
) -> None:
    """Connect with CONFIG and print normalized rows live, one line each, recording
    nothing: a quick look at a pair or a config before a long job."""
    from recorder.analysis.tail import canonical_symbol
    from recorder.capture.watch import watch as run_watch
    from recorder.core.config import ConfigError, load_config
    from recorder.core.secrets import CredentialError

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        cfg = load_config(config)
    except ConfigError as e:
        fail(str(e))
    if url and not url.startswith(("ws://", "wss://")):
        fail(f"--url {url!r} is not a WebSocket URL (ws:// or wss://)")

    def write(line: str) -> None:
        sys.stdout.write(line + "\n")

    try:
        run_watch(cfg, url=url, duration=duration, tables=table or None,
                  symbols=[canonical_symbol(s) for s in symbol] or None, events=events,
                  private=private, write=write)
    except (ValueError, CredentialError, RuntimeError) as e:
        fail(str(e))
