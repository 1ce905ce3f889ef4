"""Order books kept per symbol to verify every update by the exchange's integrity rule.

Each book holds the exact price and quantity text per level keyed by a numeric sort key.
Updates are applied in wire order, each side is cut back to the depth the rule names (Kraken
sends no delete for levels that fall out of scope), then the rule judges the book: Kraken's
compares a CRC32 of the top 10 levels' wire text (``price_bytes`` + ``qty_bytes``, kept per
level) with the exchange's; KuCoin's trusts the sequence continuity its parser already
checked.

The keeper also hands out checkpoints (``checkpoint_rows``): every kept level of each book
that currently verifies, so a rebuild can start there instead of at the last exchange
snapshot (Kraken sends one only on (re)subscribe; see recorder/analysis/rebuild.py).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Sequence
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
_NO_FAILURES: tuple = ()
# Price texts a text side remembers before it forgets them all. In the real Kraken captures
# 84-89 % of the updates hit with 100 and no more with 4,096, which would cost the 600-pair
# scale job about 1 MB per 5 pairs.
_PRICES_REMEMBERED = 100


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
    """One side of a book for a rule that keeps no text per level (KuCoin's sequence
    rule): levels by sort key, and the keys sorted, best first (bids store negated prices).
    Such books can be deep (thousands of levels), so only the keys are in a list."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.keys: list[float] = []
        self.levels: dict[float, tuple[str, str]] = {}  # price text, qty text

    def apply(self, price: str, qty: str) -> None:
        key = float(price) * self.sign
        levels = self.levels
        # Zero: no digit but 0 before any exponent ("0", "0.00000000", "0E-8"); half the
        # cost of float(qty) == 0.
        if qty.strip("0.")[:1] in "eE":
            if levels.pop(key, None) is not None:
                del self.keys[bisect_left(self.keys, key)]
            return
        levels[key] = (price, qty)
        if len(levels) > len(self.keys):  # a new level
            insort(self.keys, key)

    def truncate(self, depth: int | None) -> None:
        if depth is not None and len(self.keys) > depth:
            levels = self.levels
            for key in self.keys[depth:]:
                del levels[key]
            del self.keys[depth:]

    def top(self, n: int) -> list[tuple[str, str]]:
        """The best ``n`` levels (price text, qty text), best first."""
        return list(map(self.levels.__getitem__, self.keys[:n]))

    def ordered(self) -> list[tuple[str, str]]:
        """Every level, best first."""
        return self.top(len(self.keys))


class _TextSide:
    """One side of a book whose rule has a text per level (Kraken's checksum): the sorted
    keys, and aligned with them each level's (price text, qty text) and its text for the
    rule, so the side's top-10 text is one slice and join. That text is cached (``text``)
    and rebuilt only after a change within the top 10, so an update on one side leaves the
    other side's text as it was. (Kraken's books are at most 1,000 levels deep; lists
    aligned with the keys cost less than a dict beside them at the usual depth of 10.)

    ``prices`` remembers each price text seen on this side with its sort key and its part
    of the level text: parsing the price (``float``) and its text were 40 % of applying a
    level, and a book's levels come back to the same prices all the time (in the real
    Kraken captures 84-89 % of the updates name one of the last 100 prices). It is cleared
    when full (``_PRICES_REMEMBERED``).
    """

    __slots__ = ("keys", "levels", "texts", "sign", "text", "qty_bytes", "price_bytes",
                 "crc", "prices")

    def __init__(self, sign: float, price_bytes: Callable[[str], bytes],
                 qty_bytes: Callable[[str], bytes]) -> None:
        self.sign = sign
        self.price_bytes = price_bytes
        self.qty_bytes = qty_bytes
        self.keys: list[float] = []
        self.levels: list[tuple[str, str]] = []  # price text, qty text
        self.texts: list[bytes] = []  # price_bytes(price) + qty_bytes(qty)
        self.text: bytes | None = None
        # A rule may keep a value computed from ``text`` here (Kraken: the asks' CRC32);
        # None whenever ``text`` is.
        self.crc: int | None = None
        self.prices: dict[str, tuple[float, bytes]] = {}

    def _learn(self, price: str) -> tuple[float, bytes]:
        prices = self.prices
        if len(prices) >= _PRICES_REMEMBERED:
            prices.clear()
        known = prices[price] = (float(price) * self.sign, self.price_bytes(price))
        return known

    def apply(self, price: str, qty: str) -> None:
        known = self.prices.get(price)
        if known is None:
            known = self._learn(price)
        key = known[0]
        keys = self.keys
        i = bisect_left(keys, key)
        found = i < len(keys) and keys[i] == key
        if qty.strip("0.")[:1] in "eE":  # zero: see _Side.apply
            if found:
                del keys[i]
                del self.levels[i]
                del self.texts[i]
                if i < 10:
                    self.text = self.crc = None
            return
        if found:
            self.levels[i] = (price, qty)
            self.texts[i] = known[1] + self.qty_bytes(qty)
        else:
            keys.insert(i, key)
            self.levels.insert(i, (price, qty))
            self.texts.insert(i, known[1] + self.qty_bytes(qty))
        if i < 10:
            self.text = self.crc = None

    def truncate(self, depth: int | None) -> None:
        # Subscribed depths are at least 10, so this never changes the top 10.
        if depth is not None and len(self.keys) > depth:
            del self.keys[depth:]
            del self.levels[depth:]
            del self.texts[depth:]

    def top(self, n: int) -> list[tuple[str, str]]:
        """The best ``n`` levels (price text, qty text), best first."""
        return self.levels[:n]

    def ordered(self) -> list[tuple[str, str]]:
        """Every level, best first."""
        return list(self.levels)

    def top_text(self) -> bytes:
        """The rule's text of the top 10 levels, joined (``text`` holds it until the top
        10 change)."""
        top = self.text
        if top is None:
            top = self.text = b"".join(self.texts[:10])
        return top


@dataclass(slots=True)  # slots: the keeper reads six attributes of a book per message
class Book:
    depth: int | None
    price_bytes: Callable[[str], bytes] | None = None
    qty_bytes: Callable[[str], bytes] | None = None
    asks: _Side | _TextSide = field(init=False)
    bids: _Side | _TextSide = field(init=False)
    # False from a mismatch until the next snapshot: the book is known to be wrong.
    healthy: bool = True
    # The first row of the last message applied if the book verified after it (None when
    # it did not, or there was nothing to compare): a checkpoint is only taken after a
    # verified update.
    last_verified: tuple | None = None
    # update_id of the last checkpoint written: an unchanged book is not written again.
    checkpointed: int | None = None

    def __post_init__(self) -> None:
        if (self.price_bytes is None) != (self.qty_bytes is None):
            raise ValueError("a level text needs both price_bytes and qty_bytes")
        if self.qty_bytes is None:
            self.asks, self.bids = _Side(1.0), _Side(-1.0)
        else:
            self.asks = _TextSide(1.0, self.price_bytes, self.qty_bytes)
            self.bids = _TextSide(-1.0, self.price_bytes, self.qty_bytes)

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        return self.asks.top(n), self.bids.top(n)


class BookKeeper:
    """Books of one connection; verifies and marks the book rows of each message."""

    def __init__(self, rule: BookRule) -> None:
        self.rule = rule
        self._text_rule = (rule.price_bytes, rule.qty_bytes)
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

    def process(self, rows: list[tuple], start: int,
                end: int | None = None) -> Sequence[IntegrityFailure]:
        """Apply the book rows ``rows[start:end]`` of one message, verify, and set
        ``verified``. Returns the books found wrong (the usual empty tuple allocates
        nothing).

        Rows of one message may cover several symbols (v2 ``data`` arrays); each symbol's
        levels are applied in wire order, then its checksum is compared once.
        """
        if end is None:
            end = len(rows)
        first = rows[start]
        symbol = first[_SYMBOL]
        if end - start > 2:
            j = start + 1
            while j < end and rows[j][_SYMBOL] == symbol:
                j += 1
            if j < end:
                return self._by_symbol(rows, start, end)
        elif rows[end - 1][_SYMBOL] != symbol:
            return self._by_symbol(rows, start, end)
        # Nearly always here: a message's rows of one symbol.
        book = self.books.get(symbol)
        if first[_SNAPSHOT]:
            if book is not None and not book.healthy:
                self.recovered.append(symbol)
            self.snapshots.append(symbol)
            book = self.books[symbol] = Book(self.rule.max_depth(first), *self._text_rule)
        elif book is None:
            # An update before any snapshot (e.g. right after a resync request): unusable.
            _mark(rows, start, end, False)
            return _NO_FAILURES
        asks, bids = book.asks, book.bids
        if end - start == 1:  # the usual update: one level
            (asks if first[_SIDE] == "ask" else bids).apply(first[_PRICE], first[_QTY])
        else:
            for k in range(start, end):
                r = rows[k]
                (asks if r[_SIDE] == "ask" else bids).apply(r[_PRICE], r[_QTY])
        depth = book.depth
        if depth is not None:
            if len(asks.keys) > depth:
                asks.truncate(depth)
            if len(bids.keys) > depth:
                bids.truncate(depth)
        failures = _NO_FAILURES
        if not book.healthy:
            verdict = False
            book.last_verified = None
        else:
            verdict = self._verify(book, first)
            if verdict is True:
                self.verified += 1
                book.last_verified = first
            elif verdict is None:
                book.last_verified = None
                return _NO_FAILURES  # nothing to compare: the rows keep what the parser wrote
            else:
                book.healthy = False
                book.last_verified = None
                self.mismatches += 1
                failures = [IntegrityFailure(symbol, self.rule.failure_kind, verdict,
                                             first[_UPDATE_ID])]
                verdict = False
        if end - start == 1:  # the usual: one row (_mark written out)
            if first[_VERIFIED] is not verdict:
                rows[start] = first[:_VERIFIED] + _SUFFIX[verdict]
        else:
            _mark(rows, start, end, verdict)
        return failures

    def _by_symbol(self, rows: list[tuple], start: int,
                   end: int) -> list[IntegrityFailure]:
        """``process`` for each symbol's run of rows in turn."""
        failures: list[IntegrityFailure] = []
        i = start
        while i < end:
            symbol = rows[i][_SYMBOL]
            j = i + 1
            while j < end and rows[j][_SYMBOL] == symbol:
                j += 1
            failures += self.process(rows, i, j)
            i = j
        return failures

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
            last = book.last_verified
            if last is None or not book.healthy:
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
                out.extend(head + (name, *level, n) for level in side.ordered())
        return out
