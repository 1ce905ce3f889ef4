"""Kraken's book integrity rule: a CRC32 over the top 10 levels' wire text of each side.

Kraken sends no delete for levels that fall below the subscribed depth, so a book is cut
back to its depth after every message (``max_depth``); the checksum Kraken sends with each
update is compared with the one computed from the kept levels (``verify``).
"""

from __future__ import annotations

from typing import Any

try:
    # ISA-L's CRC32 (same polynomial as zlib): 40 ns on a book's ~150 bytes of checksum
    # text where zlib takes 190, and the keeper computes one or two per update.
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - a platform without isal's wheels: same values
    from zlib import crc32

from recorder.core.schema import column_index
from recorder.exchanges.kraken.checksum import digits

_CHECKSUM = column_index("book", "checksum")
_DEPTH = column_index("book", "depth")


class ChecksumRule:
    failure_kind = "checksum_mismatch"
    # A level's text: its price's digits then its quantity's.
    price_bytes = qty_bytes = staticmethod(digits)

    def max_depth(self, first_row: tuple) -> int:
        return first_row[_DEPTH] or 1000

    def verify(self, book: Any, first_row: tuple) -> bool | None | dict:
        expected = first_row[_CHECKSUM]
        if expected is None:
            return None
        asks, bids = book.asks, book.bids
        # Each side's joined top-10 text is cached (``text``) until its top 10 changes;
        # CRC32 chains over the asks' text then the bids', so the asks' part is kept too.
        seed = asks.crc
        if seed is None:
            seed = asks.crc = crc32(asks.text or asks.top_text())
        computed = crc32(bids.text or bids.top_text(), seed)
        if computed != expected:
            return {"expected": expected, "computed": computed}
        return True


RULE = ChecksumRule()
