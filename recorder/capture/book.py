"""Order books kept per symbol to verify every update by the exchange's integrity rule.

Each book holds the exact price and quantity text per level keyed by a numeric sort key.
Updates are applied in wire order, each side is cut back to the depth the rule names (Kraken
sends no delete for levels that fall out of scope), then the rule judges the book: Kraken's
compares a CRC32 of the top 10 levels' wire text (``level_bytes``, cached per level) with
the exchange's; KuCoin's trusts the sequence continuity its parser already checked.

The keeper also hands out checkpoints (``checkpoint_rows``): every kept level of each book
that currently verifies, so a rebuild can start there instead of at the last exchange
snapshot (Kraken sends one only on (re)subscribe; see recorder/analysis/rebuild.py).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass, field

from recorder.core.schema import TABLES, column_index
from recorder.exchanges.base import BookRule, IntegrityFailure

_EXCHANGE = column_index("book", "exchange")
_SYMBOL = column_index("book", "symbol")
_TS_RECV = column_index("book", "ts_recv")
_SIDE = column_index("book", "side")
_PRICE = column_index("book", "price")
_QTY = column_index("book", "qty")
_SNAPSHOT = column_index("book", "is_snapshot")
_UPDATE_ID = column_index("book", "update_id")
_DEPTH = column_index("book", "depth")
_VERIFIED = column_index("book", "verified")
# process() rewrites rows as row[:_VERIFIED] + (flag,), so verified must be the last column.
assert _VERIFIED == len(TABLES["book"]) - 1


_SUFFIX = {True: (True,), False: (False,)}


def _mark(rows: list[tuple], i: int, j: int, verified: bool) -> None:
    """Set ``verified`` on ``rows[i:j]``. Parsers write what the frame claims (e.g. True
    when it carries a checksum), so a row is only rebuilt when the keeper's verdict differs:
    a tuple rebuilt per row was a tenth of the recorder's CPU at full speed."""
    suffix = _SUFFIX[verified]
    for k in range(i, j):
        r = rows[k]
        if r[_VERIFIED] is not verified:
            rows[k] = r[:_VERIFIED] + suffix


class _Side:
    """One side of a book, best level first (bids store negated keys).

    When the rule has a text per level (Kraken's checksum), ``texts`` holds it in key order,
    so the side's top-10 text is one slice and join; it is cached (``text``) and rebuilt
    only after a change within the top 10, so an update on one side leaves the other
    side's text as it was.
    """

    __slots__ = ("keys", "levels", "texts", "sign", "text", "level_bytes", "crc")

    def __init__(self, sign: float, level_bytes: Callable[[str, str], bytes] | None) -> None:
        self.sign = sign
        self.level_bytes = level_bytes
        self.keys: list[float] = []
        self.levels: dict[float, tuple[str, str]] = {}  # price text, qty text
        # The level's text for the rule, aligned with ``keys``; computed once per change.
        self.texts: list[bytes] | None = [] if level_bytes is not None else None
        self.text: bytes | None = None
        # A rule may keep a value computed from ``text`` here (Kraken: the asks' CRC32);
        # None whenever ``text`` is.
        self.crc: int | None = None

    def apply(self, price: str, qty: str) -> None:
        key = float(price) * self.sign
        levels = self.levels
        texts = self.texts
        # Zero: no digit but 0 before any exponent ("0", "0.00000000", "0E-8"); half the
        # cost of float(qty) == 0.
        if qty.strip("0.")[:1] in "eE":
            if levels.pop(key, None) is not None:
                keys = self.keys
                i = bisect_left(keys, key)
                del keys[i]
                if texts is not None:
                    del texts[i]
                if i < 10:
                    self.text = self.crc = None
            return
        levels[key] = (price, qty)
        if texts is None:
            if len(levels) > len(self.keys):  # a new level
                insort(self.keys, key)
            return
        keys = self.keys
        i = bisect_left(keys, key)
        if len(levels) > len(keys):
            keys.insert(i, key)
            texts.insert(i, self.level_bytes(price, qty))
        else:
            texts[i] = self.level_bytes(price, qty)
        if i < 10:
            self.text = self.crc = None

    def truncate(self, depth: int | None) -> None:
        # Subscribed depths are at least 10, so this never changes the top 10.
        if depth is not None and len(self.keys) > depth:
            levels = self.levels
            for key in self.keys[depth:]:
                del levels[key]
            del self.keys[depth:]
            if self.texts is not None:
                del self.texts[depth:]

    def top(self, n: int) -> list[tuple[str, str]]:
        return list(map(self.levels.__getitem__, self.keys[:n]))

    def top_text(self) -> bytes:
        """The rule's text of the top 10 levels, joined (``text`` holds it until the top
        10 change)."""
        top = self.text
        if top is None:
            texts = self.texts
            top = self.text = b"".join(texts[:10]) if texts is not None else b""
        return top


@dataclass(slots=True)  # slots: the keeper reads six attributes of a book per message
class Book:
    depth: int | None
    level_bytes: Callable[[str, str], bytes] | None = None
    asks: _Side = field(init=False)
    bids: _Side = field(init=False)
    # False from a mismatch until the next snapshot: the book is known to be wrong.
    healthy: bool = True
    # The first row of the last message applied and what its checksum said (True, False,
    # None = nothing to compare): a checkpoint is only taken after a verified update.
    last: tuple | None = None
    last_ok: bool | None = None
    # update_id of the last checkpoint written: an unchanged book is not written again.
    checkpointed: int | None = None

    def __post_init__(self) -> None:
        self.asks = _Side(1.0, self.level_bytes)
        self.bids = _Side(-1.0, self.level_bytes)

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        return self.asks.top(n), self.bids.top(n)


class BookKeeper:
    """Books of one connection; verifies and marks the book rows of each message."""

    def __init__(self, rule: BookRule) -> None:
        self.rule = rule
        self._level_bytes = rule.level_bytes
        self._verify = rule.verify
        self.books: dict[str, Book] = {}
        self.verified = 0
        self.mismatches = 0
        # Symbols whose broken book was just replaced by a fresh snapshot (a finished
        # resync); the collector drains this list into events.
        self.recovered: list[str] = []
        # Symbols that received a snapshot (any: first, resync, resubscribe) since the
        # collector last looked; it ends a resync waiting for one.
        self.snapshots: list[str] = []

    def reset(self, symbol: str | None = None) -> None:
        """Forget one symbol's book (a resync) or all of them (a new connection)."""
        if symbol is None:
            self.books.clear()
        else:
            self.books.pop(symbol, None)

    def depth_of(self, symbol: str) -> int | None:
        book = self.books.get(symbol)
        return book.depth if book is not None else None

    def process(self, rows: list[tuple], start: int) -> list[IntegrityFailure]:
        """Apply the book rows ``rows[start:]`` of one message, verify, and set ``verified``.

        Rows of one message may cover several symbols (v2 ``data`` arrays); each symbol's
        levels are applied in wire order, then its checksum is compared once.
        """
        mismatches: list[IntegrityFailure] = []
        end = len(rows)
        i = start
        while i < end:
            first = rows[i]
            symbol = first[_SYMBOL]
            if end - i <= 2 and rows[end - 1][_SYMBOL] == symbol:
                j = end  # nearly always: the message's one or two rows, one symbol
            else:
                j = i + 1
                while j < end and rows[j][_SYMBOL] == symbol:
                    j += 1
            result = self._apply(rows, i, j, first, symbol)
            if result is True and j - i == 1:  # the usual: one row, verified (_mark inlined)
                if first[_VERIFIED] is not True:
                    rows[i] = first[:_VERIFIED] + _SUFFIX[True]
            elif result is not None:
                if result.__class__ is IntegrityFailure:
                    mismatches.append(result)
                    result = False
                _mark(rows, i, j, result)
            i = j
        return mismatches

    def _apply(self, rows: list[tuple], i: int, j: int, first: tuple,
               symbol: str) -> bool | None | IntegrityFailure:
        book = self.books.get(symbol)
        if first[_SNAPSHOT]:
            if book is not None and not book.healthy:
                self.recovered.append(symbol)
            self.snapshots.append(symbol)
            book = self.books[symbol] = Book(self.rule.max_depth(first), self._level_bytes)
        elif book is None:
            # An update before any snapshot (e.g. right after a resync request): unusable.
            return False
        asks, bids = book.asks, book.bids
        if j - i == 1:  # the usual update: one level
            (asks if first[_SIDE] == "ask" else bids).apply(first[_PRICE], first[_QTY])
        else:
            for k in range(i, j):
                r = rows[k]
                (asks if r[_SIDE] == "ask" else bids).apply(r[_PRICE], r[_QTY])
        depth = book.depth
        if depth is not None:
            if len(asks.keys) > depth:
                asks.truncate(depth)
            if len(bids.keys) > depth:
                bids.truncate(depth)
        book.last = first
        book.last_ok = False
        if not book.healthy:
            return False
        verdict = self._verify(book, first)
        if verdict is True:
            self.verified += 1
            book.last_ok = True
            return True
        if verdict is None:
            book.last_ok = None
            return None
        book.healthy = False
        self.mismatches += 1
        return IntegrityFailure(symbol, self.rule.failure_kind, verdict, first[_UPDATE_ID])

    def checkpoint_rows(self) -> list[tuple]:
        """Rows of the ``book_checkpoints`` table: every kept level (both sides, up to the
        subscribed depth, price and qty text as received) of each book whose last update
        verified its checksum and that changed since its last checkpoint.

        Never for a book known to be wrong or not checked (a mismatch awaiting its resync
        snapshot, a v1 snapshot with no update yet): a rebuild seeded from a checkpoint must
        equal one folded from the snapshot. An empty book is not written (nothing would
        mark it); a rebuild then starts from an earlier checkpoint or the snapshot.
        """
        out: list[tuple] = []
        for symbol, book in self.books.items():
            last = book.last
            if last is None or not book.healthy or book.last_ok is not True:
                continue
            update_id = last[_UPDATE_ID]
            if update_id == book.checkpointed:
                continue
            n = len(book.asks.keys) + len(book.bids.keys)
            if n == 0:
                continue
            book.checkpointed = update_id
            head = (last[_EXCHANGE], symbol, last[_TS_RECV], update_id, book.depth)
            for name, side in (("ask", book.asks), ("bid", book.bids)):
                levels = side.levels
                out.extend(head + (name, *levels[k], n) for k in side.keys)
        return out
