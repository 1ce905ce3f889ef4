"""Order books kept per symbol to verify Kraken's checksum on every update.

Each book holds the exact price and quantity text per level (the checksum is defined over
the wire text) keyed by a numeric sort key. Updates are applied in wire order, each side is
cut back to the subscribed depth (Kraken sends no delete for levels that fall out of scope),
then the top 10 of each side are checksummed (see recorder.kraken.checksum).

The keeper also hands out checkpoints (``checkpoint_rows``): every kept level of each book
that currently verifies, so a rebuild can start there instead of at the last exchange
snapshot (Kraken sends one only on (re)subscribe; see recorder/rebuild.py).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from recorder.exchanges.kraken.checksum import checksum_of_top_texts, level_bytes
from recorder.core.schema import TABLES, column_index

_EXCHANGE = column_index("book", "exchange")
_SYMBOL = column_index("book", "symbol")
_TS_RECV = column_index("book", "ts_recv")
_SIDE = column_index("book", "side")
_PRICE = column_index("book", "price")
_QTY = column_index("book", "qty")
_SNAPSHOT = column_index("book", "is_snapshot")
_CHECKSUM = column_index("book", "checksum")
_UPDATE_ID = column_index("book", "update_id")
_DEPTH = column_index("book", "depth")
_VERIFIED = column_index("book", "verified")
# process() rewrites rows as row[:_VERIFIED] + (flag,), so verified must be the last column.
assert _VERIFIED == len(TABLES["book"]) - 1


class _Side:
    """One side of a book, best level first (bids store negated keys).

    The checksum text of the side's top 10 is cached and rebuilt only after a change
    within the top 10, so an update on one side leaves the other side's text as it was.
    """

    __slots__ = ("keys", "levels", "sign", "_top")

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.keys: list[float] = []
        # price text, qty text, and the level's checksum text (computed once per change).
        self.levels: dict[float, tuple[str, str, bytes]] = {}
        self._top: bytes | None = None

    def apply(self, price: str, qty: str) -> None:
        key = float(price) * self.sign
        keys, levels = self.keys, self.levels
        if float(qty) == 0.0:
            if levels.pop(key, None) is not None:
                i = bisect_left(keys, key)
                del keys[i]
                if i < 10:
                    self._top = None
            return
        if key in levels:
            if len(keys) <= 10 or key <= keys[9]:
                self._top = None
        else:
            i = bisect_left(keys, key)
            keys.insert(i, key)
            if i < 10:
                self._top = None
        levels[key] = (price, qty, level_bytes(price, qty))

    def truncate(self, depth: int) -> None:
        # Subscribed depths are at least 10, so this never changes the top 10.
        if len(self.keys) > depth:
            for key in self.keys[depth:]:
                del self.levels[key]
            del self.keys[depth:]

    def top(self, n: int) -> list[tuple[str, str]]:
        levels = self.levels
        return [levels[k][:2] for k in self.keys[:n]]

    def top_text(self) -> bytes:
        top = self._top
        if top is None:
            levels = self.levels
            top = self._top = b"".join([levels[k][2] for k in self.keys[:10]])
        return top


@dataclass
class Book:
    depth: int
    asks: _Side = field(default_factory=lambda: _Side(1.0))
    bids: _Side = field(default_factory=lambda: _Side(-1.0))
    # False from a checksum mismatch until the next snapshot: the book is known to be wrong.
    healthy: bool = True
    # The first row of the last message applied and what its checksum said (True, False,
    # None = nothing to compare): a checkpoint is only taken after a verified update.
    last: tuple | None = None
    last_ok: bool | None = None
    # update_id of the last checkpoint written: an unchanged book is not written again.
    checkpointed: int | None = None

    def checksum(self) -> int:
        return checksum_of_top_texts(self.asks.top_text(), self.bids.top_text())

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        return self.asks.top(n), self.bids.top(n)


@dataclass(frozen=True, slots=True)
class Mismatch:
    symbol: str
    expected: int
    computed: int
    update_id: int


class BookKeeper:
    """Books of one connection; verifies and marks the book rows of each message."""

    def __init__(self) -> None:
        self.books: dict[str, Book] = {}
        self.verified = 0
        self.mismatches = 0
        # Symbols whose broken book was just replaced by a fresh snapshot (a finished
        # resync); the collector drains this list into events.
        self.recovered: list[str] = []

    def reset(self, symbol: str | None = None) -> None:
        """Forget one symbol's book (a resync) or all of them (a new connection)."""
        if symbol is None:
            self.books.clear()
        else:
            self.books.pop(symbol, None)

    def process(self, rows: list[tuple], start: int) -> list[Mismatch]:
        """Apply the book rows ``rows[start:]`` of one message, verify, and set ``verified``.

        Rows of one message may cover several symbols (v2 ``data`` arrays); each symbol's
        levels are applied in wire order, then its checksum is compared once.
        """
        mismatches: list[Mismatch] = []
        end = len(rows)
        i = start
        symbol = rows[start][_SYMBOL]
        if rows[end - 1][_SYMBOL] == symbol:  # nearly always: one symbol per message
            result = self._apply(rows, start, end, symbol)
            if result is None:
                return mismatches
            if result.__class__ is Mismatch:
                mismatches.append(result)
                result = False
            for k in range(start, end):
                rows[k] = rows[k][:_VERIFIED] + (result,)
            return mismatches
        while i < end:
            symbol = rows[i][_SYMBOL]
            j = i
            while j < end and rows[j][_SYMBOL] == symbol:
                j += 1
            result = self._apply(rows, i, j, symbol)
            if isinstance(result, Mismatch):
                mismatches.append(result)
                verified = False
            else:
                verified = result
            if verified is not None:
                for k in range(i, j):
                    rows[k] = rows[k][:_VERIFIED] + (verified,)
            i = j
        return mismatches

    def _apply(self, rows: list[tuple], i: int, j: int, symbol: str) -> bool | None | Mismatch:
        first = rows[i]
        book = self.books.get(symbol)
        if first[_SNAPSHOT]:
            if book is not None and not book.healthy:
                self.recovered.append(symbol)
            book = self.books[symbol] = Book(first[_DEPTH] or 1000)
        elif book is None:
            # An update before any snapshot (e.g. right after a resync request): unusable.
            return False
        asks, bids = book.asks, book.bids
        for k in range(i, j):
            r = rows[k]
            (asks if r[_SIDE] == "ask" else bids).apply(r[_PRICE], r[_QTY])
        asks.truncate(book.depth)
        bids.truncate(book.depth)
        book.last = first
        book.last_ok = False
        if not book.healthy:
            return False
        expected = first[_CHECKSUM]
        if expected is None:
            book.last_ok = None
            return None
        computed = book.checksum()
        if computed != expected:
            book.healthy = False
            self.mismatches += 1
            return Mismatch(symbol, expected, computed, first[_UPDATE_ID])
        self.verified += 1
        book.last_ok = True
        return True

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
                out.extend(head + (name, levels[k][0], levels[k][1], n) for k in side.keys)
        return out
