"""``recorder simulate`` (--exchange kraken): the options of the shared command, read for the
Kraken simulator; it serves until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from recorder.simulator.kraken.config import (
    ConfigError,
    SimConfig,
    parse_pairs,
    parse_speed,
    parse_weights,
)
from recorder.simulator.kraken.faults import DROP_MODES, Rule

SIM_SECRET_ENV = "RECORDER_SIM_API_SECRET"


def run(options: dict, command: Callable) -> int:
    """Validate ``options`` (the shared command's arguments) and serve; the exit code: 0, or
    2 after one ``recorder simulate: error: ...`` line."""
    from recorder.simulator.registry import foreign_options

    given = foreign_options("kraken", options, command)
    if given:
        return _error(f"{', '.join(given)}: only with --exchange kucoin")
    verbose = bool(options.get("verbose"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s simulator %(levelname)s %(message)s",
    )
    if not verbose:
        logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        cfg = _config(**options)
        capture = None
        if cfg.replay is not None:
            from recorder.simulator.kraken.replay import CaptureError, load_capture

            try:
                capture = load_capture(cfg.replay)
            except CaptureError as exc:
                raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        return _error(str(exc))
    from recorder.simulator.kraken.server import serve_forever

    try:
        asyncio.run(serve_forever(cfg, capture))
    except OSError as exc:
        return _error(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass
    return 0


def _error(message: str) -> int:
    print(f"recorder simulate: error: {message}", file=sys.stderr)
    return 2


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
    pair_text, weights = parse_weights(str(o["pairs"]))
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
        seed=o["seed"], pairs=parse_pairs(pair_text), rate=float(o["rate"]), weights=weights,
        api_key=str(o["api_key"]), api_secret=secret,
        token_ttl=float(o["token_ttl"]), fill_rate=float(o["fill_rate"]),
        trade_snapshot_v1=bool(o["trade_snapshot_v1"]), rules=rules,
        reject_subscribes=int(o["reject_subscribes"]),
        maintenance_after=o["maintenance_after_seconds"],
        maintenance_seconds=float(o["maintenance_seconds"]),
        invalidate_tokens_after=o["invalidate_tokens_after_seconds"],
    )
