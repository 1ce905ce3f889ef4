"""What the Kraken v1 and v2 adapters share: what they support, the row buffer and the
control signals they hand back to the collector."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import msgspec

from recorder.core.schema import TABLES
from recorder.exchanges.kraken.pairs import canonical_symbol

EXCHANGE = "kraken"

# Kraken's whitelists (docs: book depth, ohlc interval in minutes).
BOOK_DEPTHS = (10, 25, 100, 500, 1000)
OHLC_INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
PUBLIC_CHANNELS = ("trade", "book", "spread", "ohlc", "ticker")
PRIVATE_CHANNELS = ("fills",)
CHANNELS = PUBLIC_CHANNELS + PRIVATE_CHANNELS

_encode = msgspec.json.encode


def detail(**fields: object) -> str:
    """Event detail as compact JSON text."""
    return _encode({k: v for k, v in fields.items() if v is not None}).decode()


@lru_cache(maxsize=4096)
def canonical(name: str) -> str:
    return canonical_symbol(name)


def new_rows() -> dict[str, list[tuple]]:
    """An empty row buffer with one list per table."""
    return {name: [] for name in TABLES}


@dataclass(slots=True)
class Control:
    """What the collector must know about a non-data frame.

    kind: ``heartbeat``, ``pong``, ``status`` (value = system status), ``subscribed``,
    ``unsubscribed``, ``subscribe_error`` (value = Kraken's error text), ``error``.
    """

    kind: str
    value: str | None = None
    channel: str | None = None
    symbol: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One configured subscription, as the collector hands it to an adapter."""

    channel: str  # trade | book | spread | ohlc | ticker | fills
    symbols: tuple[str, ...]  # canonical names
    depth: int | None = None
    interval: int | None = None
