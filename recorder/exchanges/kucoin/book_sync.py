"""KuCoin's level2 calibration: an incremental book kept in step with a REST snapshot.

``/market/level2`` sends only changes; the book they change comes from a REST snapshot
taken while the changes are already flowing (KuCoin docs, "Level-2 Market Data"). Per
connection and symbol, a small state machine decides which changes become book rows:

``new``      no update yet. The first one is buffered and the runtime is asked for a
             snapshot (``Control("snapshot_needed")``, once).
``waiting``  updates are buffered (at most ``buffer_limit`` per symbol) until a snapshot
             with sequence S arrives. Its rows come first (``is_snapshot``); then the buffer is
             replayed: messages with ``sequenceEnd <= S`` are dropped (the snapshot has them),
             the rest must be continuous.
``synced``   messages the snapshot already covers (``sequenceEnd <= S``: the REST answer
             may be ahead of the stream) are dropped until one continues it; from then on
             each message must continue the last: ``sequenceStart <= last + 1`` and
             ``sequenceEnd > last``. Within a message, a change is applied only if its own
             sequence is above the book's sequence before the message (a price's change
             sequence is that price's last change, so it can lie anywhere below
             ``sequenceEnd``); a change with price "0" only advances the sequence (no row);
             size "0" deletes the level (a qty "0" row). The book's sequence is then
             ``sequenceEnd``. A snapshot arriving now replaces the book if it is not older
             than the book (a runtime's deliberate refresh), else it is ignored with an
             ``events`` row ``snapshot_ignored`` (a late answer to an earlier request).

A message that does not continue the book is a gap: an ``events`` row ``sequence_gap``
(expected and got sequences), back to ``waiting`` with that message buffered, and
``Control("resync")`` so the runtime fetches a fresh snapshot. Nothing is marked verified
until that snapshot, because no row is written until then. A full buffer (a snapshot that
never comes) is treated the same way. Once a message has continued the book, a message
that repeats its range exactly (a re-delivery) is dropped, but any other message at or
below the book's sequence is a gap too: KuCoin's sequences restart after maintenance, and
a book that silently dropped every later message would stall without a trace.

Rows: every row of one call shares the ``update_id`` and ``ts_recv`` the runtime passes;
the buffered messages replayed when the snapshot arrives are applied in that frame, so
they carry the snapshot frame's ``update_id`` and ``ts_recv`` (their own exchange time),
after the snapshot rows, in sequence order. ``sequence`` is the snapshot's sequence on
snapshot rows and the change's own sequence on update rows; ``depth`` is 100 when the
snapshot was the public top-100 one (beyond it the book is unknown), None for the full v3
snapshot; ``verified`` is True (continuity checked) on every row written.

Pure: no clock, no I/O; the same frames always give the same rows (renormalize relies on
it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from recorder.core.events import detail, event
from recorder.exchanges.base import Control
from recorder.exchanges.kucoin.common import EXCHANGE

BUFFER_LIMIT = 20_000

NEW, WAITING, SYNCED = "new", "waiting", "synced"


@dataclass(slots=True)
class L2Message:
    """One ``trade.l2update``, validated: sequences as ints, changes sorted by sequence.

    ``changes`` holds (sequence, side, price, size) of real changes only; price "0"
    placeholders are left out (they advance the sequence, which ``end`` already says)."""

    symbol: str  # canonical
    start: int
    end: int
    ts: int | None  # exchange time, µs
    changes: list[tuple[int, str, str, str]]


@dataclass(slots=True)
class Snapshot:
    """A REST level2 snapshot, validated."""

    symbol: str  # canonical
    sequence: int
    ts: int | None  # µs
    depth: int | None  # 100 for the public top-100 snapshot, None for the full book
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


@dataclass(slots=True)
class _Book:
    phase: str = NEW
    sequence: int = 0  # the book's sequence (meaningful once synced)
    last_range: tuple[int, int] | None = None
    depth: int | None = None
    buffer: deque = field(default_factory=deque)


class BookSync:
    """The level2 books of one connection (one instance per connection: a reconnect starts
    over with fresh snapshots)."""

    def __init__(self, buffer_limit: int = BUFFER_LIMIT) -> None:
        self.buffer_limit = buffer_limit
        self._books: dict[str, _Book] = {}

    def phase(self, symbol: str) -> str:
        """``new``, ``waiting`` or ``synced`` (for tests and diagnostics)."""
        book = self._books.get(symbol)
        return book.phase if book is not None else NEW

    def sequence(self, symbol: str) -> int | None:
        book = self._books.get(symbol)
        return book.sequence if book is not None and book.phase == SYNCED else None

    def buffered(self, symbol: str) -> int:
        book = self._books.get(symbol)
        return len(book.buffer) if book is not None else 0

    def reset(self, symbol: str | None = None) -> None:
        """Forget one symbol (or all): its next update asks for a snapshot again."""
        if symbol is None:
            self._books.clear()
        else:
            self._books.pop(symbol, None)

    # -- l2update ---------------------------------------------------------------------

    def update(self, msg: L2Message, ts_recv: int, update_id: int,
               out: dict[str, list[tuple]]) -> Control | None:
        """One l2update: rows for the changes it applies, or buffered; a Control when the
        runtime must fetch a snapshot."""
        symbol = msg.symbol
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book()
        if book.phase == SYNCED:
            return self._continue(book, msg, ts_recv, update_id, out)
        if len(book.buffer) >= self.buffer_limit:
            dropped = len(book.buffer)
            book.buffer.clear()
            book.buffer.append(msg)
            out["events"].append(event(
                EXCHANGE, ts_recv, "sequence_gap", symbol=symbol, channel="book",
                detail=detail(reason="buffer_full", buffered=dropped, got=msg.start,
                              sequence_end=msg.end)))
            return Control("resync", value="sequence_gap", channel="book", symbol=symbol)
        book.buffer.append(msg)
        if book.phase == NEW:
            book.phase = WAITING
            return Control("snapshot_needed", channel="book", symbol=symbol)
        return None

    def _continue(self, book: _Book, msg: L2Message, ts_recv: int, update_id: int,
                  out: dict[str, list[tuple]]) -> Control | None:
        if msg.end <= book.sequence:
            if book.last_range is None or book.last_range == (msg.start, msg.end):
                # Covered by the snapshot (REST may be ahead of the stream), or the last
                # message delivered again.
                return None
            return self._gap(book, [msg], ts_recv, out, "sequence went back")
        if msg.start > book.sequence + 1:
            return self._gap(book, [msg], ts_recv, out, None)
        self._apply(book, msg, ts_recv, update_id, out["book"])
        return None

    def _apply(self, book: _Book, msg: L2Message, ts_recv: int, update_id: int,
               rows: list[tuple]) -> None:
        base = book.sequence
        symbol, ts, depth = msg.symbol, msg.ts, book.depth
        for seq, side, price, size in msg.changes:
            if seq > base:
                rows.append((EXCHANGE, symbol, ts, ts_recv, side, price, size, False,
                             update_id, None, False, depth, seq, True))
        book.sequence = msg.end
        book.last_range = (msg.start, msg.end)

    def _gap(self, book: _Book, pending: list[L2Message], ts_recv: int,
             out: dict[str, list[tuple]], reason: str | None) -> Control:
        msg = pending[0]
        out["events"].append(event(
            EXCHANGE, ts_recv, "sequence_gap", symbol=msg.symbol, channel="book",
            detail=detail(expected=book.sequence + 1, got=msg.start, sequence_end=msg.end,
                          reason=reason)))
        book.phase = WAITING
        book.last_range = None
        book.buffer = deque(pending)
        return Control("resync", value="sequence_gap", channel="book", symbol=msg.symbol)

    # -- REST snapshot ------------------------------------------------------------------

    def snapshot(self, snap: Snapshot, ts_recv: int, update_id: int,
                 out: dict[str, list[tuple]]) -> Control | None:
        """A REST snapshot: its rows, then the buffered changes it does not cover."""
        symbol = snap.symbol
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book()
        if book.phase == SYNCED and snap.sequence < book.sequence:
            # A late answer to an earlier request: the book is already past it.
            out["events"].append(event(
                EXCHANGE, ts_recv, "snapshot_ignored", symbol=symbol, channel="book",
                detail=detail(sequence=snap.sequence, book_sequence=book.sequence)))
            return None
        rows = out["book"]
        seq, ts, depth = snap.sequence, snap.ts, snap.depth
        for side, levels in (("bid", snap.bids), ("ask", snap.asks)):
            for price, size in levels:
                rows.append((EXCHANGE, symbol, ts, ts_recv, side, price, size, True,
                             update_id, None, False, depth, seq, True))
        pending = list(book.buffer)
        book.buffer = deque()
        book.phase = SYNCED
        book.sequence = seq
        book.depth = depth
        book.last_range = None
        for i, msg in enumerate(pending):
            if msg.end <= book.sequence:
                continue  # covered by the snapshot (or by the buffer before it)
            if msg.start > book.sequence + 1:
                return self._gap(book, pending[i:], ts_recv, out, None)
            self._apply(book, msg, ts_recv, update_id, rows)
        return None
