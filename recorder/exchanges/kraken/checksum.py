"""Kraken's order-book checksum (WS v1 and v2), computed from the exact wire text.

The rule, as Kraken documents it for both API versions:

1. After applying every level of a message and truncating each side to the subscribed
   depth, take the best 10 asks in ascending price order, then the best 10 bids in
   descending price order.
2. For each level, take the price text and the quantity text exactly as sent, remove the
   decimal point, then remove leading zeros; append price then quantity.
3. The checksum is CRC32 (zlib/IEEE polynomial) of the ASCII concatenation, as an unsigned
   32-bit integer. v1 sends it as a decimal string in ``"c"`` of the message's last object;
   v2 sends it as an integer ``checksum`` on snapshots and updates.

Because trailing zeros are part of the input ("0.00100000" -> "100000"), the text must be
the wire text; a value that went through a binary float cannot be checksummed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable


def digits(text: str) -> bytes:
    """A price's or a quantity's part of a level's text, as ASCII bytes:
    ``"0.00000500"`` -> ``b"500"``."""
    return text.replace(".", "").lstrip("0").encode()


def level_text(price: str, qty: str) -> str:
    """One level's contribution: ``"0.05005", "0.00000500"`` -> ``"5005500"``."""
    return (digits(price) + digits(qty)).decode()


def book_checksum(asks: Iterable[tuple[str, str]], bids: Iterable[tuple[str, str]]) -> int:
    """CRC32 of the top 10 asks (best first) then the top 10 bids (best first).

    ``asks`` and ``bids`` yield ``(price_text, qty_text)`` already in best-first order; only
    the first 10 of each are used.
    """
    parts: list[str] = []
    for side in (asks, bids):
        for n, (price, qty) in enumerate(side):
            if n == 10:
                break
            parts.append(level_text(price, qty))
    return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF
