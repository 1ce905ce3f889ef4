"""What the Kraken v1 and v2 adapters share: what they support and the names they use."""

from __future__ import annotations

from recorder.core.events import detail, event, new_rows
from recorder.exchanges.base import Control, Subscription
from recorder.exchanges.kraken.pairs import canonical_symbol

__all__ = ["BOOK_DEPTHS", "CANONICAL", "CHANNELS", "Control", "EXCHANGE", "OHLC_INTERVALS",
           "PRIVATE_CHANNELS", "PUBLIC_CHANNELS", "Subscription", "canonical", "detail",
           "epoch_us", "event", "new_rows"]

EXCHANGE = "kraken"

# Kraken's whitelists (docs: book depth, ohlc interval in minutes).
BOOK_DEPTHS = (10, 25, 100, 500, 1000)
OHLC_INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
PUBLIC_CHANNELS = ("trade", "book", "spread", "ohlc", "ticker")
PRIVATE_CHANNELS = ("fills",)
CHANNELS = PUBLIC_CHANNELS + PRIVATE_CHANNELS


def epoch_us(text: str | None) -> int | None:
    """Kraken v1 time text, decimal epoch seconds ("1618678142.557535"), as integer
    microseconds, exactly (digits beyond the microsecond are dropped, as for ISO text)."""
    if text is None:
        return None
    if text[-7:-6] == ".":  # nearly always: six decimals
        return int(text[:-7] + text[-6:])
    seconds, _, frac = text.partition(".")
    return int(seconds) * 1_000_000 + int((frac + "000000")[:6])


# v1 pair name -> canonical symbol. A plain dict: the receive loop reads it for every frame
# (``CANONICAL.get(pair) or canonical(pair)``), and an lru_cache call cost three times more.
CANONICAL: dict[str, str] = {}


def canonical(name: str) -> str:
    symbol = CANONICAL.get(name)
    if symbol is None:
        if len(CANONICAL) >= 4096:  # pairs come from the exchange: bound what it can make us keep
            CANONICAL.clear()
        symbol = CANONICAL[name] = canonical_symbol(name)
    return symbol
