"""``recorder simulate --exchange kucoin``: options of the shared command, read for KuCoin.

``recorder.cli.simulate.simulate`` parses the options (shared by both exchanges) and hands
them here. An option left at its default keeps KuCoin's own default (the KuCoin demo key, 24 h
tokens, BTC-USDT,ETH-USDT); Kraken-only options are refused.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from recorder.simulator.kucoin.config import (
    BOOK_LEVELS_ENV,
    DEFAULT_SYMBOLS,
    ConfigError,
    KucoinConfig,
    parse_book_levels,
    parse_rest_error,
    parse_symbols,
    parse_weights,
)
from recorder.simulator.kucoin.faults import DROP_MODES, Rule


def run(options: dict, command: Callable) -> int:
    """Validate ``options`` (the shared command's arguments), serve until SIGINT/SIGTERM.
    Returns the exit code: 0, or 2 after one ``recorder simulate: error: ...`` line."""
    logging.basicConfig(
        level=logging.DEBUG if options.get("verbose") else logging.INFO, stream=sys.stderr,
        format="%(asctime)s simulator %(levelname)s %(message)s",
    )
    if not options.get("verbose"):
        logging.getLogger("websockets").setLevel(logging.WARNING)
    defaults = {name: p.default for name, p in inspect.signature(command).parameters.items()}
    try:
        cfg = config_from_options(options, defaults)
        capture = None
        if cfg.replay is not None:
            from recorder.simulator.kucoin.replay import CaptureError, load_capture

            try:
                capture = load_capture(cfg.replay)
            except CaptureError as exc:
                raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        print(f"recorder simulate: error: {exc}", file=sys.stderr)
        return 2
    from recorder.simulator.kucoin.server import serve_forever

    try:
        asyncio.run(serve_forever(cfg, capture))
    except OSError as exc:
        print(f"recorder simulate: error: cannot listen on {cfg.host}:{cfg.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def config_from_options(o: dict, defaults: dict) -> KucoinConfig:
    def given(name: str) -> bool:
        return name in o and o[name] != defaults.get(name)

    from recorder.simulator.registry import ONLY

    for name in ONLY["kraken"]:
        if given(name):
            raise ConfigError(f"--{name.replace('_', '-')} is not supported with "
                              "--exchange kucoin")
    if not 0 <= int(o["port"]) <= 65534:
        raise ConfigError(f"--port must be 0..65534, not {o['port']}")
    for name in ("rate", "stall_seconds", "ping_interval", "ping_timeout"):
        if not float(o[name]) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if not float(o["token_ttl"]) > 0:
        raise ConfigError("--token-ttl must be positive")
    for name in ("max_connection_age", "slow_welcome"):
        if float(o[name]) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
    if not 0 <= float(o["fill_rate"]) <= 1:
        raise ConfigError("--fill-rate must be between 0 and 1")
    if o["drop_mode"] not in DROP_MODES:
        raise ConfigError(f"--drop-mode must be one of {', '.join(DROP_MODES)}")
    for name in ("drop_after_messages", "malformed_after_messages",
                 "corrupt_book_after_messages", "reject_subscribes"):
        if o[name] is not None and int(o[name]) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
    speed_text = str(o["speed"]).strip().lower()
    try:
        speed = float("inf") if speed_text == "max" else float(speed_text)
    except ValueError:
        speed = -1.0
    if not speed > 0:
        raise ConfigError(f"--speed must be a positive number or 'max', not {o['speed']!r}")
    pair_text, weights = parse_weights(str(o["pairs"]) if given("pairs") else DEFAULT_SYMBOLS)
    symbols = parse_symbols(pair_text)
    book_levels = parse_book_levels(os.environ.get(BOOK_LEVELS_ENV))
    rules = _rules(o, symbols[0].name if not given("corrupt_symbol")
                   else str(o["corrupt_symbol"]))
    kw = {}
    if given("api_key"):
        kw["api_key"] = str(o["api_key"]).strip()
    if o.get("api_secret_file") is not None:
        from recorder.core.secrets import CredentialError, read_private_text

        try:
            kw["api_secret"] = read_private_text(Path(str(o["api_secret_file"]))).strip()
        except CredentialError as exc:
            raise ConfigError(f"--api-secret-file: {exc}") from None
    elif given("api_secret"):
        kw["api_secret"] = str(o["api_secret"]).strip()
    if given("api_passphrase"):
        kw["api_passphrase"] = str(o["api_passphrase"]).strip()
    for name, value in kw.items():
        if not value:
            raise ConfigError(f"the {name.replace('_', ' ')} must not be empty")
    replay = o["replay"]
    if replay is not None and not Path(str(replay)).exists():
        raise ConfigError(f"replay file not found: {replay}")
    return KucoinConfig(
        host=str(o["host"]), port=int(o["port"]), replay=replay, speed=speed, seed=o["seed"],
        symbols=symbols, rate=float(o["rate"]),
        token_ttl=float(o["token_ttl"]) if given("token_ttl") else 86400.0,
        fill_rate=float(o["fill_rate"]), ping_interval_ms=int(o["ping_interval"]),
        ping_timeout_ms=int(o["ping_timeout"]),
        max_connection_age=float(o["max_connection_age"]), rules=rules,
        reject_subscribes=int(o["reject_subscribes"]), slow_welcome=float(o["slow_welcome"]),
        rest_errors=[parse_rest_error(t) for t in (o.get("rest_error") or [])],
        invalidate_tokens_after=o["invalidate_tokens_after_seconds"], weights=weights,
        book_levels=book_levels, **kw,
    )


def _rules(o: dict, gap_symbol: str) -> list[Rule]:
    from recorder.simulator.kucoin.symbols import find_symbol

    rules: list[Rule] = []
    if o["drop_after_messages"] is not None:
        rules.append(Rule("drop", mode=str(o["drop_mode"]),
                          after_messages=int(o["drop_after_messages"])))
    if o["drop_after_seconds"] is not None:
        rules.append(Rule("drop", mode=str(o["drop_mode"]),
                          after_seconds=float(o["drop_after_seconds"])))
    if o["stall_after_seconds"] is not None:
        rules.append(Rule("stall", after_seconds=float(o["stall_after_seconds"]),
                          seconds=float(o["stall_seconds"])))
    if o["malformed_after_messages"] is not None:
        rules.append(Rule("malformed", after_messages=int(o["malformed_after_messages"])))
    if o["corrupt_book_after_messages"] is not None:
        sym = find_symbol(gap_symbol)
        if sym is None:
            raise ConfigError(f"--corrupt-symbol: unknown KuCoin symbol {gap_symbol!r}")
        rules.append(Rule("skip_level2", after_messages=int(o["corrupt_book_after_messages"]),
                          symbol=sym.name))
    return rules
