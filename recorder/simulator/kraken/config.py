"""The simulator's settings, validated once, whether they came from the CLI or from code."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from recorder.exchanges.kraken.pairs import find_pair
from recorder.simulator.kraken.faults import Rule
from recorder.simulator.kraken.synthetic import synthetic_pair
from recorder.simulator.kraken.tokens import DEMO_API_KEY, DEMO_API_SECRET


class ConfigError(ValueError):
    """Bad input to the simulator itself: reported as one line, exit code 2."""


@dataclass(slots=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    replay: Path | None = None
    speed: float = 1.0  # math.inf means as fast as possible
    seed: int | None = None
    pairs: list[str] = field(default_factory=lambda: ["BTC/USD", "ETH/USD"])
    rate: float = 200.0
    api_key: str = DEMO_API_KEY
    api_secret: str = DEMO_API_SECRET
    token_ttl: float = 900.0
    fill_rate: float = 0.05
    trade_snapshot_v1: bool = False
    rules: list[Rule] = field(default_factory=list)
    reject_subscribes: int = 0
    maintenance_after: float | None = None
    maintenance_seconds: float = 5.0
    invalidate_tokens_after: float | None = None
    # How often each pair is chosen for a market step, relative to 1 (``--pairs`` entries
    # ``NAME*N``): a few busy pairs in a whole-exchange scale run.
    weights: dict[str, int] = field(default_factory=dict)

    @property
    def max_speed(self) -> bool:
        return math.isinf(self.speed)


def parse_speed(text: str) -> float:
    if text.strip().lower() == "max":
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--speed must be a positive number or 'max', not {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise ConfigError(f"--speed must be a positive number or 'max', not {text!r}")
    return value


def parse_weights(text: str, flag: str = "--pairs") -> tuple[str, dict[str, int]]:
    """``A/USD*10,B/USD`` -> (``A/USD,B/USD``, {"A/USD": 10}): a pair followed by ``*N``
    takes N times its share of the market steps."""
    names: list[str] = []
    weights: dict[str, int] = {}
    for item in (p.strip() for p in text.split(",")):
        name, star, count = item.partition("*")
        name = name.strip()
        if star:
            if not count.strip().isdigit() or int(count) < 1:
                raise ConfigError(f"{flag}: {item!r}: the weight after * must be a whole "
                                  "number of at least 1")
            pair = find_pair(name) or synthetic_pair(name)
            if pair is not None:
                weights[pair.symbol] = int(count)
        names.append(name)
    return ",".join(names), weights


def parse_pairs(text: str, flag: str = "--pairs") -> list[str]:
    """Pair names (BTC/USD or XBT/USD); ``SYN<n>/USD`` adds a synthetic pair."""
    out = []
    for name in (p.strip() for p in text.split(",")):
        if not name:
            continue
        pair = find_pair(name) or synthetic_pair(name)
        if pair is None:
            raise ConfigError(f"{flag}: unknown pair {name!r}")
        if pair.symbol not in out:
            out.append(pair.symbol)
    if not out:
        raise ConfigError(f"{flag}: give at least one pair, e.g. BTC/USD,ETH/USD")
    return out
