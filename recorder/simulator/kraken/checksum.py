"""The simulator's own book checksum, computed from integer ticks rather than wire text.

Kraken's rule removes the decimal point and leading zeros from each price and quantity; for
fixed-decimal text that is exactly the decimal form of the integer tick count. Tests check the
emitted values with a separate implementation that works on the wire text.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable


def book_checksum(asks: Iterable[tuple[int, int]], bids: Iterable[tuple[int, int]]) -> int:
    """CRC32 over the top 10 (price_ticks, qty_ticks) asks (best first), then bids."""
    parts: list[str] = []
    for side in (asks, bids):
        for n, (price, qty) in enumerate(side):
            if n == 10:
                break
            parts.append(str(price))
            parts.append(str(qty))
    return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF
