"""The KuCoin simulator's settings, validated once, whether they came from the CLI or code."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from recorder.simulator.kucoin.auth import DEMO_API_KEY, DEMO_API_PASSPHRASE, DEMO_API_SECRET
from recorder.simulator.kucoin.faults import RestError, Rule
from recorder.simulator.kucoin.symbols import Symbol, find_symbol

DEFAULT_SYMBOLS = "BTC-USDT,ETH-USDT"


class ConfigError(ValueError):
    """Bad input to the simulator itself: reported as one line, exit code 2."""


@dataclass(slots=True)
class KucoinConfig:
    host: str = "127.0.0.1"
    port: int = 0
    replay: Path | None = None
    speed: float = 1.0  # math.inf: as fast as the client reads
    seed: int | None = None
    symbols: list[Symbol] = field(default_factory=lambda: parse_symbols(DEFAULT_SYMBOLS))
    rate: float = 200.0
    api_key: str = DEMO_API_KEY
    api_secret: str = field(default=DEMO_API_SECRET, repr=False)
    api_passphrase: str = field(default=DEMO_API_PASSPHRASE, repr=False)
    key_version: int = 2
    token_ttl: float = 86400.0
    fill_rate: float = 0.05
    ping_interval_ms: int = 18000
    ping_timeout_ms: int = 10000
    max_connection_age: float = 86400.0  # KuCoin cuts every connection after 24 h; 0 = never
    age_cut_mode: str = "close"
    rules: list[Rule] = field(default_factory=list)
    reject_subscribes: int = 0
    slow_welcome: float = 0.0
    rest_errors: list[RestError] = field(default_factory=list)
    invalidate_tokens_after: float | None = None
    uplink_limit: int = 100  # client messages per 10 s
    topics_per_request: int = 100
    topics_per_session: int = 300
    # How often each symbol is chosen for a market step, relative to 1 (``--pairs`` entries
    # ``NAME*N``): a few busy symbols in a whole-exchange scale run.
    weights: dict[str, int] = field(default_factory=dict)
    # Levels a side in each symbol's book (it moves within about 1/7 of this); None: 350
    # (300..400). Set by RECORDER_SIM_KUCOIN_BOOK_LEVELS (bench: a 5,000-level book).
    book_levels: int | None = None

    @property
    def max_speed(self) -> bool:
        return math.isinf(self.speed)

    @property
    def idle_timeout(self) -> float:
        """Seconds without any client message before the server drops the connection."""
        return (self.ping_interval_ms + self.ping_timeout_ms) / 1000.0


BOOK_LEVELS_ENV = "RECORDER_SIM_KUCOIN_BOOK_LEVELS"


def parse_weights(text: str, flag: str = "--pairs") -> tuple[str, dict[str, int]]:
    """``A-USDT*10,B-USDT`` -> (``A-USDT,B-USDT``, {"A-USDT": 10}): a symbol followed by
    ``*N`` takes N times its share of the market steps."""
    names: list[str] = []
    weights: dict[str, int] = {}
    for item in (p.strip() for p in text.split(",")):
        name, star, count = item.partition("*")
        name = name.strip()
        if star:
            if not count.strip().isdigit() or int(count) < 1:
                raise ConfigError(f"{flag}: {item!r}: the weight after * must be a whole "
                                  "number of at least 1")
            sym = find_symbol(name)
            if sym is not None:
                weights[sym.name] = int(count)
        names.append(name)
    return ",".join(names), weights


def parse_book_levels(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    if not text.strip().isdigit() or not 20 <= int(text) <= 100_000:
        raise ConfigError(f"{BOOK_LEVELS_ENV} must be a whole number of levels a side "
                          f"between 20 and 100000, not {text!r}")
    return int(text)


def parse_symbols(text: str, flag: str = "--pairs") -> list[Symbol]:
    out: list[Symbol] = []
    for name in (p.strip() for p in text.split(",")):
        if not name:
            continue
        sym = find_symbol(name)
        if sym is None:
            from recorder.simulator.kucoin.symbols import SYMBOLS

            raise ConfigError(f"{flag}: unknown KuCoin symbol {name!r} (built in: "
                              f"{', '.join(SYMBOLS)})")
        if sym not in out:
            out.append(sym)
    if not out:
        raise ConfigError(f"{flag}: give at least one symbol, e.g. {DEFAULT_SYMBOLS}")
    return out


def parse_rest_error(text: str) -> RestError:
    """``CODE[:N]``: the next N REST requests (default 1; -1 = all) fail with CODE."""
    from recorder.simulator.kucoin.faults import FaultError
    from recorder.simulator.kucoin.faults import parse_rest_error as parse

    code, _, count = text.partition(":")
    try:
        return parse({"code": code.strip(), "count": int(count) if count.strip() else 1})
    except (FaultError, ValueError) as exc:
        raise ConfigError(f"--rest-error {text!r}: {exc}") from None
