"""``recorder simulate``: the typer command, and ``python -m recorder.simulator``."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from recorder.simulator.kraken.config import ConfigError, SimConfig, parse_pairs, parse_speed
from recorder.simulator.kraken.faults import DROP_MODES, Rule
from recorder.simulator.kraken.tokens import DEMO_API_KEY, DEMO_API_SECRET

# Where the key pair can come from without showing on a command line (SimulatorProcess uses
# them: a process title is readable by every local user).
SIM_KEY_ENV = "RECORDER_SIM_API_KEY"
SIM_SECRET_ENV = "RECORDER_SIM_API_SECRET"


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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run a local Kraken-compatible exchange (WebSocket v1/v2, REST) for tests and demos."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s simulator %(levelname)s %(message)s",
    )
    if not verbose:
        logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        cfg = _config(**locals())
        capture = None
        if cfg.replay is not None:
            from recorder.simulator.kraken.replay import CaptureError, load_capture

            try:
                capture = load_capture(cfg.replay)
            except CaptureError as exc:
                raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        _fail(str(exc))
        return
    from recorder.simulator.kraken.server import serve_forever

    try:
        asyncio.run(serve_forever(cfg, capture))
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass


def _config(**o: object) -> SimConfig:
    if not 0 <= int(o["port"]) <= 65534:
        raise ConfigError(f"--port must be 0..65534, not {o['port']}")
    for name in ("rate", "token_ttl", "stall_seconds", "maintenance_seconds"):
        if not float(o[name]) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if not 0 <= float(o["fill_rate"]) <= 1:
        raise ConfigError("--fill-rate must be between 0 and 1")
    if o["drop_mode"] not in DROP_MODES:
        raise ConfigError(f"--drop-mode must be one of {', '.join(DROP_MODES)}")
    for name in ("drop_after_messages", "malformed_after_messages",
                 "corrupt_book_after_messages", "reject_subscribes"):
        if o[name] is not None and int(o[name]) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
    import base64
    import binascii

    secret, where = str(o["api_secret"]), f"--api-secret (or {SIM_SECRET_ENV})"
    if o["api_secret_file"] is not None:
        from recorder.core.secrets import CredentialError, read_private_text

        where = f"--api-secret-file {o['api_secret_file']}"
        try:
            secret = read_private_text(Path(str(o["api_secret_file"]))).strip()
        except CredentialError as exc:
            raise ConfigError(f"--api-secret-file: {exc}") from None
    try:
        if not base64.b64decode(secret, validate=True):
            raise ValueError
    except (binascii.Error, ValueError):
        raise ConfigError(f"the API secret from {where} must be non-empty base64") from None
    corrupt_symbol = parse_pairs(str(o["corrupt_symbol"]), "--corrupt-symbol")[0]
    rules: list[Rule] = []
    if o["drop_after_messages"] is not None or o["drop_after_seconds"] is not None:
        rules.append(Rule("drop", mode=str(o["drop_mode"]),
                          after_messages=o["drop_after_messages"],
                          after_seconds=None if o["drop_after_messages"] is not None
                          else o["drop_after_seconds"]))
        if o["drop_after_messages"] is not None and o["drop_after_seconds"] is not None:
            rules.append(Rule("drop", mode=str(o["drop_mode"]),
                              after_seconds=o["drop_after_seconds"]))
    if o["stall_after_seconds"] is not None:
        rules.append(Rule("stall", after_seconds=o["stall_after_seconds"],
                          seconds=float(o["stall_seconds"])))
    if o["malformed_after_messages"] is not None:
        rules.append(Rule("malformed", after_messages=o["malformed_after_messages"]))
    if o["corrupt_book_after_messages"] is not None:
        rules.append(Rule("corrupt_book", after_messages=o["corrupt_book_after_messages"],
                          symbol=corrupt_symbol))
    replay = o["replay"]
    if replay is not None:
        path = Path(str(replay))
        if not path.exists():
            raise ConfigError(f"replay file not found: {path}")
    return SimConfig(
        host=str(o["host"]), port=int(o["port"]), replay=replay, speed=parse_speed(str(o["speed"])),
        seed=o["seed"], pairs=parse_pairs(str(o["pairs"])), rate=float(o["rate"]),
        api_key=str(o["api_key"]), api_secret=secret,
        token_ttl=float(o["token_ttl"]), fill_rate=float(o["fill_rate"]),
        trade_snapshot_v1=bool(o["trade_snapshot_v1"]), rules=rules,
        reject_subscribes=int(o["reject_subscribes"]),
        maintenance_after=o["maintenance_after_seconds"],
        maintenance_seconds=float(o["maintenance_seconds"]),
        invalidate_tokens_after=o["invalidate_tokens_after_seconds"],
    )


def main() -> None:
    from recorder.cli.main import run_app

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(simulate)
    run_app(app, "recorder simulate")
