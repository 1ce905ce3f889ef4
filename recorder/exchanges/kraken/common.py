"""What the Kraken v1 and v2 adapters share: what they support and the names they use."""

from __future__ import annotations

from functools import lru_cache

from recorder.core.events import detail, event, new_rows
from recorder.exchanges.base import Control, Subscription
from recorder.exchanges.kraken.pairs import canonical_symbol

__all__ = ["BOOK_DEPTHS", "CHANNELS", "Control", "EXCHANGE", "OHLC_INTERVALS",
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
    if len(text) >= 7 and text[-7] == ".":  # nearly always: six decimals
        return int(text[:-7] + text[-6:])
    seconds, _, frac = text.partition(".")
    return int(seconds) * 1_000_000 + int((frac + "000000")[:6])


@lru_cache(maxsize=4096)
def canonical(name: str) -> str:
    return canonical_symbol(name)
