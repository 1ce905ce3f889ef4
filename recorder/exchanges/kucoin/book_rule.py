"""KuCoin's book integrity rule for the runtime's book keeper (recorder/capture/book.py).

KuCoin sends no checksum: a level2 book is right when its sequence is continuous, and the
parser (``book_sync``) already checked that before writing any row. So the rule only
passes on the parser's verdict, which it wrote into the ``verified`` column of the
message's first row: True for a synced level2 message, None (nothing to compare) for the
top-N snapshots of level2Depth5/50. It never reports a mismatch itself: a gap is recorded
by the parser (``sequence_gap``), which also asks for the resync.

Depth: the top-N streams are cut to their N levels; an incremental book is never cut, not
even one synced from the public top-100 snapshot, because levels beyond 100 that changes
create later are real (the rows' ``depth`` 100 tells a rebuild where the book is partial).
"""

from __future__ import annotations

from typing import Any

from recorder.core.schema import column_index

_DEPTH = column_index("book", "depth")
_SEQUENCE = column_index("book", "sequence")
_VERIFIED = column_index("book", "verified")


class SequenceRule:
    failure_kind = "sequence_gap"
    price_bytes = qty_bytes = None

    def max_depth(self, first_row: tuple) -> int | None:
        """N for a top-N snapshot row (it has no sequence); None for a level2 book."""
        return first_row[_DEPTH] if first_row[_SEQUENCE] is None else None

    def verify(self, book: Any, first_row: tuple) -> bool | None:
        """The parser's continuity verdict: True, or None when there is none."""
        return True if first_row[_VERIFIED] is True else None


RULE = SequenceRule()
