"""Order books rebuilt from the recorded ``book`` table: the top-N book at a moment, a series
of top-N snapshots at a fixed interval (like Tardis's ``book_snapshot_25``), and quotes (every
change of the best bid or ask).

Book semantics (the same as the recorder's own book keeper, recorder/capture/book.py):

- rows of one exchange message share ``update_id``; messages are applied in ``update_id``
  order, the rows of one message in file order (Kraken v1 sends a time per level, which is
  not the order of application);
- a message whose rows are ``is_snapshot`` replaces the book (a new snapshot after a reconnect
  or a resync restarts it); updates before the first snapshot are ignored;
- ``qty = 0`` deletes a level; after each message each side is cut back to the subscribed
  ``depth`` (Kraken sends no delete for a level that falls out of scope);
- the book is as of ``ts_recv``: the book "at T" has every message received at or before T;
- ``verified`` of the result is the flag of the last message applied: false means the book is
  known to be wrong (a checksum mismatch, until the resync snapshot). ``unverified="skip"``
  leaves such snapshots out.

Several collectors of one book (redundant hosts): a rebuild follows one writer's rows at a
time and switches only where the followed one has a gap ("several writers" below, plan()).

Where it starts: the last snapshot at or before the start, or the latest checkpoint taken
after it (``book_checkpoints``: the collector's own book, whole, written every ``[output]
book_checkpoint`` while it verifies) at or before the start, same symbol and depth. The
checkpoint's levels go in front of the later rows as one snapshot message with the
checkpoint's update_id, ts_recv and the ts_exchange of that update, verified: the fold from
there is the fold from the snapshot, minus the rows it has already applied. Kraken sends
snapshots only on (re)subscribe, so without checkpoints a book late in a week is a week of
rows.

How it is computed: DuckDB selects the rows needed (from that start, partitions pruned by
date, ordered by ``update_id`` and file position) and turns each price into an exact integer
key; a single pass over those integer columns (Python values one Arrow batch at a time)
keeps the levels as row numbers; the output is then assembled in Arrow with ``take`` from the
exact decimal columns, so prices and quantities come back exactly as recorded. The pass
itself is a Python loop per row: cutting each side back to ``depth`` after every message
makes a level's presence depend on the whole history since the snapshot, which no set-based
SQL formulation expresses exactly (last-value-per-price keeps levels that silently left the
book's scope).
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from recorder.analysis.sql import sql_str, to_arrow
from recorder.core.schema import TIMESTAMP
from recorder.core.times import (
    DatasetError,
    date_of,
    parse_interval,
    parse_time,
    to_datetime,
    ts_literal,
)

if TYPE_CHECKING:
    from recorder.analysis.dataset import Dataset

PRICE_SCALE = 10_000_000_000  # DECIMAL(18,10): the unscaled integer fits an int64 exactly
UNVERIFIED = ("flag", "skip")


@dataclass
class Book:
    """The top of one symbol's book at a moment. ``asks`` best (lowest) first, ``bids`` best
    (highest) first, as exact (price, qty) Decimals."""

    symbol: str
    at: dt.datetime
    asks: list[tuple[Decimal, Decimal]] = field(default_factory=list)
    bids: list[tuple[Decimal, Decimal]] = field(default_factory=list)
    last_update: dt.datetime | None = None   # ts_recv of the last message applied
    snapshot_at: dt.datetime | None = None   # ts_recv of the snapshot the book started from
    verified: bool | None = None             # flag of the last message applied
    depth: int | None = None                 # the subscribed depth the rows came from

    def to_arrow(self) -> pa.Table:
        """One row per level: side, level (0 = best), price, qty."""
        from recorder.core.schema import DECIMAL_PRICE, DECIMAL_QTY

        sides = ["ask"] * len(self.asks) + ["bid"] * len(self.bids)
        levels = list(range(len(self.asks))) + list(range(len(self.bids)))
        pairs = self.asks + self.bids
        return pa.table({
            "side": pa.array(sides, pa.string()),
            "level": pa.array(levels, pa.int32()),
            "price": pa.array([p for p, _ in pairs], DECIMAL_PRICE),
            "qty": pa.array([q for _, q in pairs], DECIMAL_QTY),
        })


# -- selecting the rows ----------------------------------------------------------------------


def _dates(ds: Dataset, table: str = "book") -> list[str]:
    """Every date partition of ``table``, newest first."""
    days = {p.parent.name.removeprefix("date=") for p in ds.files.get(table, [])}
    pending = ds.pending.get(table)
    if pending is not None:
        days |= {d.isoformat() for d in pending.column("date").unique().to_pylist()}
    return sorted(days, reverse=True)


@dataclass(frozen=True)
class Start:
    """Where a rebuild starts: an exchange snapshot, or a checkpoint of the recorder's own
    book taken after that snapshot (see the module doc)."""

    kind: str          # "snapshot" or "checkpoint"
    update_id: int     # of the snapshot, or of the last update the checkpoint has applied
    ts_us: int         # ts_recv of that message
    depth: int | None  # the rows' depth (None: a full book, e.g. KuCoin's v3 snapshot)
    snapshot_us: int   # ts_recv of the snapshot the book started from
    # Levels kept per side after each message: the subscribed depth, or None for a book
    # synced by sequence (its rows carry one), whose levels beyond the snapshot's depth are
    # real; the recorder's book keeper cuts neither (KuCoin's book_rule.max_depth).
    cut: int | None = None


def _book_source(ds: Dataset, table: str, writer: str | None) -> tuple[str, str]:
    """(FROM source, extra WHERE term) for ``table``'s rows, of one writer if given."""
    if writer is None:
        return table, ""
    return (f"({ds.source_sql(table, order=True)})", f" AND _writer = {sql_str(writer)}")


def _last_snapshot(ds: Dataset, symbol: str, at_us: int, book_depth: int | None,
                   writer: str | None = None) -> tuple[int, int, int | None, bool] | None:
    """(update_id, ts_recv µs, depth, synced by sequence) of the last snapshot of ``symbol``
    (by ``writer``, if given) received at or before ``at_us``, searching one date partition
    at a time, newest first."""
    depth_term = f" AND depth = {int(book_depth)}" if book_depth else ""
    src, by = _book_source(ds, "book", writer)
    day_at = date_of(at_us)
    for day in _dates(ds):
        if day > day_at:
            continue
        rows = ds.con.execute(
            f"SELECT update_id, epoch_us(ts_recv), depth, sequence IS NOT NULL FROM {src} "
            f"WHERE date = DATE '{day}'{by} "
            f"AND {_symbol_is(symbol)} AND is_snapshot AND ts_recv <= {ts_literal(at_us)}"
            f"{depth_term} ORDER BY update_id DESC LIMIT 1").fetchall()
        if rows:
            return rows[0]
    return None


def _last_checkpoint(ds: Dataset, symbol: str, depth: int | None, after_update: int,
                     after_us: int, at_us: int, writer: str | None = None
                     ) -> tuple[int, int] | None:
    """(update_id, ts_recv µs) of the latest complete checkpoint of ``symbol`` at ``depth``
    that follows update ``after_update`` and was taken at or before ``at_us``. Complete: all
    its ``levels`` rows are there, none NULL (a value the sink could not convert), none
    twice."""
    if not ds.has_rows("book_checkpoints"):
        return None
    # A checkpoint's update_id is its writer's (update ids are unique per collector process,
    # not across hosts): with several writers it must be the followed writer's.
    src, by = _book_source(ds, "book_checkpoints", writer)
    day_at, day_after = date_of(at_us), date_of(after_us)
    for day in _dates(ds, "book_checkpoints"):
        if day > day_at:
            continue
        if day < day_after:
            break
        rows = ds.con.execute(
            f"SELECT update_id, epoch_us(min(ts_recv)) FROM {src} "
            f"WHERE date = DATE '{day}'{by} AND {_symbol_is(symbol)} AND {_depth_is(depth)} "
            f"AND update_id > {int(after_update)} AND ts_recv <= {ts_literal(at_us)} "
            "GROUP BY update_id HAVING count(*) = min(levels) AND min(levels) = max(levels) "
            "AND count(price) = count(*) AND count(qty) = count(*) "
            "ORDER BY update_id DESC LIMIT 1").fetchall()
        if rows:
            return rows[0]
    return None


def start_point(ds: Dataset, symbol: str, at_us: int, book_depth: int | None = None, *,
                checkpoints: bool = True, checkpoint_before: int | None = None,
                writer: str | None = None) -> Start | None:
    """Where the book of ``symbol`` at ``at_us`` is rebuilt from: the latest of the last
    snapshot received at or before ``at_us`` and the checkpoints taken after it at the
    snapshot's depth (and before ``checkpoint_before``, if given); None without a
    snapshot. ``writer``: of that writer's rows only (the book a redundant collector kept,
    see ``writers()``)."""
    snap = _last_snapshot(ds, symbol, at_us, book_depth, writer)
    if snap is None:
        return None
    update_id, ts_us = int(snap[0]), int(snap[1])
    depth = None if snap[2] is None else int(snap[2])
    cut = None if snap[3] else depth
    start = Start("snapshot", update_id, ts_us, depth, ts_us, cut)
    if checkpoints:
        limit = at_us if checkpoint_before is None else min(at_us, checkpoint_before - 1)
        # Checkpoints are labelled with the keeper's depth, which is the cut.
        cp = _last_checkpoint(ds, symbol, cut, update_id, ts_us, limit, writer)
        if cp is not None:
            start = Start("checkpoint", int(cp[0]), int(cp[1]), depth, ts_us, cut)
    return start


def split_symbol(symbol: str) -> tuple[str | None, str]:
    """``"kucoin:BTC/USDT"`` -> ("kucoin", "BTC/USDT"); a plain symbol has no exchange."""
    exchange, sep, name = symbol.partition(":")
    return (exchange, name) if sep else (None, symbol)


def _symbol_is(symbol: str) -> str:
    exchange, name = split_symbol(symbol)
    cond = f"symbol = {sql_str(name)}"
    return cond if exchange is None else f"{cond} AND exchange = {sql_str(exchange)}"


def _one_exchange(ds: Dataset, symbol: str) -> None:
    """A book is rebuilt from one exchange's rows: a symbol recorded from several exchanges
    must be named with its exchange (``kucoin:BTC/USDT``), never interleaved."""
    exchange, name = split_symbol(symbol)
    if exchange is not None:
        return
    folders = {p.parent.parent.name for p in ds.files.get("book") or []}
    if len(folders) < 2 and "book" not in ds.pending:
        return
    found = [r[0] for r in ds.con.execute(
        f"SELECT DISTINCT exchange FROM book WHERE symbol = {sql_str(name)} ORDER BY 1"
    ).fetchall()]
    if len(found) > 1:
        raise DatasetError(f"{name} was recorded from {' and '.join(found)}: name one, e.g. "
                           f"{found[-1]}:{name}")


def _depth_is(depth: int | None) -> str:
    return "depth IS NULL" if depth is None else f"depth = {int(depth)}"


def _first_depth(ds: Dataset, symbol: str, start_us: int, end_us: int,
                 book_depth: int | None = None, writer: str | None = None
                 ) -> tuple[int | None, int | None] | None:
    """(depth, cut) of the first snapshot of ``symbol`` (at ``book_depth``, if given; by
    ``writer``, if given) in [start_us, end_us], or None."""
    depth_term = f"AND depth = {int(book_depth)} " if book_depth else ""
    src, by = _book_source(ds, "book", writer)
    rows = ds.con.execute(
        f"SELECT depth, sequence IS NOT NULL FROM {src} WHERE {_symbol_is(symbol)}{by} "
        f"AND is_snapshot {depth_term}AND ts_recv >= {ts_literal(start_us)} "
        f"AND ts_recv <= {ts_literal(end_us)} "
        f"AND date BETWEEN DATE '{date_of(start_us)}' AND DATE '{date_of(end_us)}' "
        "ORDER BY update_id LIMIT 1").fetchall()
    if not rows:
        return None
    depth = rows[0][0]
    return depth, (None if rows[0][1] else depth)


_BOOK_COLUMNS = "update_id, ts_recv, ts_exchange, side, price, qty, is_snapshot, verified"


def book_rows(ds: Dataset, symbol: str, start_us: int, end_us: int,
              book_depth: int | None = None, qty_text: bool = False, text: bool = False, *,
              checkpoints: bool = True, changes: bool = False, writer: str | None = None
              ) -> tuple[pa.Table, int | None, int | None, int | None]:
    """The book rows of ``symbol`` needed to know the book from ``start_us`` to ``end_us``
    (inclusive), ordered for application: from the last snapshot at or before ``start_us``,
    or from the latest checkpoint after it (its levels first, as one snapshot message with
    the checkpoint's update_id and ts_recv, verified), or from ``start_us`` if there is no
    snapshot. ``changes``: for a series of changes from ``start_us``, which only a
    checkpoint older than ``start_us`` can start. ``writer``: that writer's rows only (one
    redundant collector's book). Returns (rows, the rows' depth, ts_recv of the snapshot the
    book started from, levels kept per side: the cut ``_fold`` applies)."""
    if "book" not in ds.tables():
        raise DatasetError(f"no book rows recorded in {ds.data}")
    _one_exchange(ds, symbol)
    # For a series of changes from start_us, a checkpoint must be older than start_us:
    # frames of one socket read share a ts_recv, so a checkpoint taken at start_us may
    # already hold messages received at start_us, whose changes the series must report.
    start = start_point(ds, symbol, start_us, book_depth, checkpoints=checkpoints,
                        checkpoint_before=start_us if changes else None, writer=writer)
    if start is not None:
        first_us, depth, cut = start.ts_us, start.depth, start.cut
        lower = f"update_id >= {start.update_id}"
    else:
        first = _first_depth(ds, symbol, start_us, end_us, book_depth, writer)
        if first is None:
            empty = pa.table({"update_id": pa.array([], pa.int64())})
            return empty, None, None, None
        first_us, (depth, cut) = start_us, first
        lower = f"ts_recv >= {ts_literal(start_us)}"
    where = f"{_symbol_is(symbol)} AND {_depth_is(depth)}"
    by = "" if writer is None else f" AND _writer = {sql_str(writer)}"
    parts = []
    if start is not None and start.kind == "checkpoint":
        lower = f"update_id > {start.update_id}"
        day = f"date = DATE '{date_of(start.ts_us)}'"
        # ts_exchange of the checkpoint's message, as a fold from the snapshot reports it
        # (the latest of its rows: v1 sends a time per level).
        src, _ = _book_source(ds, "book", writer)
        tx = (f"(SELECT max(ts_exchange) FROM {src} WHERE {day} AND {where}{by} "
              f"AND update_id = {start.update_id})")
        parts.append(
            f"SELECT {start.update_id}::BIGINT AS update_id, ts_recv, {tx} AS ts_exchange, side,"
            " price, qty, true AS is_snapshot, true AS verified, '' AS _file, 0::BIGINT AS _row"
            f" FROM {_book_source(ds, 'book_checkpoints', writer)[0]} WHERE {day}{by} AND "
            f"{_symbol_is(symbol)} AND {_depth_is(cut)} AND update_id = {start.update_id}")
    parts.append(
        f"SELECT {_BOOK_COLUMNS}, _file, _row FROM ({ds.source_sql('book', order=True)}) "
        f"WHERE {where}{by} AND {lower} AND ts_recv <= {ts_literal(end_us)} "
        f"AND date BETWEEN DATE '{date_of(first_us)}' AND DATE '{date_of(end_us)}'")
    qs = ", qty::VARCHAR AS qs" if qty_text else ""
    if text:
        qs += (", rtrim(rtrim(price::VARCHAR, '0'), '.') AS price_text, "
               "rtrim(rtrim(qty::VARCHAR, '0'), '.') AS qty_text")
    query = (
        "SELECT update_id, epoch_us(ts_recv) AS t, epoch_us(ts_exchange) AS tx, "
        f"side = 'bid' AS bid, (price * {PRICE_SCALE})::BIGINT AS pk, qty = 0 AS del, "
        f"is_snapshot AS snap, verified, price, qty{qs} FROM ("
        + " UNION ALL ".join(parts) + ") ORDER BY update_id, _file, _row")
    # One chunk: take() on a table of many small chunks is slow.
    rows = to_arrow(ds.con.sql(query)).combine_chunks()
    return rows, depth, (start.snapshot_us if start else None), cut


# -- several writers of one book ---------------------------------------------------------------
#
# Two collectors (two hosts, or two configs) may record the same book on purpose. Each keeps
# its own book from its own snapshots, numbers its messages with its own update_id (seeded by
# its start time: the two sequences interleave) and receives each exchange message at its own
# time, so their rows must never be folded together. A rebuild follows one writer at a time
# (the writer of a row is its file's source token without the pid, ``_writer``):
#
# - a writer's *segment* runs from a snapshot (one following an update: a run of snapshot
#   messages, such as KuCoin's depth-5 feed, is one segment) to its last healthy message: the
#   last one before its first ``verified = false`` message (a checksum mismatch awaiting the
#   resync) or before its next snapshot (a reconnect, a resync), or its last message at all
#   (a stopped or dead collector). A segment whose next message is an update goes on.
# - at each time T the book followed is that of the writer whose segment is live at T
#   (s <= T <= last healthy message) and started first (then the writer's name): a writer
#   is left only where it has a gap, never for another that merely started later; with no
#   live segment (all in a gap), that of the segment that ended last, folded on as a single
#   writer's book is (stale, or flagged unverified).
# - at a switch the new writer's book is folded from its own start point before the switch
#   (its latest checkpoint, else its snapshot), silently; from the switch on its messages are
#   the book's. Its rows then replace the old writer's: update streams are never mixed.
#
# The rule depends only on the data around T (segments), not on where a rebuild starts, so a
# book at a moment, a series, and Spark's per-day tasks choose the same writer at every time.


_INF = float("inf")


def _book_writers(ds: Dataset) -> set[str]:
    """The writers of every book file and journaled book row (no query: file names)."""
    from recorder.analysis.sql import writer_of_file

    out = {writer_of_file(p.name) for p in ds.files.get("book") or []}
    pending = ds.pending.get("book")
    if pending is not None:
        out.update(pending.column("_writer").unique().to_pylist())
    return out


def writers(ds: Dataset, symbol: str, start_us: int, end_us: int,
            book_depth: int | None = None) -> list[str]:
    """The writers (redundant collectors) of ``symbol``'s book rows in the date partitions
    of [start_us, end_us], sorted; [] when the whole dataset has a single writer of book
    rows (nothing to tell apart). A writer with no row in those days is taken as not
    recording then; if no writer has one, the writer of the last snapshot before."""
    if len(_book_writers(ds)) < 2:
        return []
    src = f"({ds.source_sql('book', order=True)})"
    depth_term = f" AND depth = {int(book_depth)}" if book_depth else ""
    found = sorted(r[0] for r in ds.con.execute(
        f"SELECT DISTINCT _writer FROM {src} WHERE {_symbol_is(symbol)}{depth_term} "
        f"AND date BETWEEN DATE '{date_of(start_us)}' AND DATE '{date_of(end_us)}'"
    ).fetchall())
    if found:
        return found
    last = ds.con.execute(
        f"SELECT _writer FROM {src} WHERE {_symbol_is(symbol)}{depth_term} AND is_snapshot "
        f"AND ts_recv <= {ts_literal(start_us)} AND date <= DATE '{date_of(start_us)}' "
        "ORDER BY ts_recv DESC, update_id DESC LIMIT 1").fetchall()
    return [last[0][0]] if last else []


@dataclass(frozen=True)
class _Segment:
    writer: str
    s: int        # ts_recv of the snapshot that started it
    h: float      # ts_recv of its last healthy message; inf: it goes on after the range


def _segments(ds: Dataset, symbol: str, start_us: int, end_us: int, depth: int | None,
              starts: dict[str, Start | None]) -> list[_Segment]:
    """Every writer's segments (see above) from its start point at ``start_us`` (or from
    ``start_us``) to ``end_us``, from one query of message-level facts, plus each writer's
    first message after ``end_us`` (does its last segment go on?)."""
    src = f"({ds.source_sql('book', order=True)})"
    where = f"{_symbol_is(symbol)} AND {_depth_is(depth)}"
    bounds = []
    for w, sp in starts.items():
        lower = (f"update_id >= {sp.update_id}" if sp is not None
                 else f"ts_recv >= {ts_literal(start_us)}")
        bounds.append(f"(_writer = {sql_str(w)} AND {lower})")
    first_day = date_of(min([start_us] + [sp.ts_us for sp in starts.values() if sp]))
    msgs = ds.con.execute(
        "SELECT _writer, update_id, epoch_us(min(ts_recv)), bool_or(is_snapshot), "
        f"bool_or(verified = false) FROM {src} WHERE {where} AND ({' OR '.join(bounds)}) "
        f"AND ts_recv <= {ts_literal(end_us)} "
        f"AND date BETWEEN DATE '{first_day}' AND DATE '{date_of(end_us)}' "
        "GROUP BY ALL ORDER BY 1, 2").fetchall()
    # The first message after the range, per writer: the next date partitions, oldest first.
    after: dict[str, bool] = {}
    for day in sorted(_dates(ds)):
        if day < date_of(end_us) or len(after) == len(starts):
            continue
        missing = [sql_str(w) for w in starts if w not in after]
        for w, snap in ds.con.execute(
                f"SELECT _writer, arg_min(is_snapshot, update_id) FROM {src} WHERE {where} "
                f"AND date = DATE '{day}' AND ts_recv > {ts_literal(end_us)} "
                f"AND _writer IN ({', '.join(missing)}) GROUP BY 1").fetchall():
            after[w] = bool(snap)
    out: list[_Segment] = []
    by_writer: dict[str, list[tuple]] = {w: [] for w in starts}
    for w, _uid, t, snap, bad in msgs:
        by_writer[w].append((t, bool(snap), bool(bad)))
    for w, rows in by_writer.items():
        sp = starts[w]
        cur_s: int | None = sp.snapshot_us if sp is not None else None
        cur_h: float | None = None
        broken = False
        prev_snap = False
        for t, snap, bad in rows:
            if snap and not prev_snap:  # a snapshot after an update: a new segment
                if cur_s is not None and cur_h is not None:
                    out.append(_Segment(w, cur_s, cur_h))
                cur_s, cur_h, broken = t, None, False
            if cur_s is not None:
                if bad:
                    broken = True
                elif not broken:
                    cur_h = t
            prev_snap = snap
        if cur_s is not None and cur_h is not None:
            if not broken and w in after and (prev_snap or not after[w]):
                cur_h = _INF  # its next message continues it
            out.append(_Segment(w, cur_s, cur_h))
    return out


def _followed(segments: list[_Segment], t: int) -> str | None:
    """The writer followed at ``t`` (see above)."""
    live = [g for g in segments if g.s <= t <= g.h]
    if live:
        return min(live, key=lambda g: (g.s, g.writer)).writer
    ended = [g for g in segments if g.h < t]
    if ended:
        return min(ended, key=lambda g: (-g.h, g.s, g.writer)).writer
    return None


def plan(ds: Dataset, symbol: str, start_us: int, end_us: int, book_depth: int | None = None,
         *, checkpoints: bool = True, changes: bool = False
         ) -> tuple[list[tuple[str, int, int]], int | None, list[str]]:
    """Which writer's book a rebuild of ``symbol`` over [start_us, end_us] follows, when:
    ([(writer, first µs, last µs), ...] in time order, the rows' depth, the writers). No
    legs when the book has a single writer (or none)."""
    ws = writers(ds, symbol, start_us, end_us, book_depth)
    if len(ws) < 2:
        return [], None, ws
    before = start_us if changes else None
    starts = {w: start_point(ds, symbol, start_us, book_depth, checkpoints=checkpoints,
                             checkpoint_before=before, writer=w) for w in ws}
    known = [sp for sp in starts.values() if sp is not None]
    if book_depth is not None:
        depth = book_depth
    elif known:  # as for one writer: the depth of the last snapshot before the start
        depth = max(known, key=lambda sp: sp.snapshot_us).depth
    else:
        first = _first_depth(ds, symbol, start_us, end_us)
        depth = first[0] if first else None
    if depth is not None:
        starts = {w: (sp if sp is None or sp.depth == depth else start_point(
            ds, symbol, start_us, depth, checkpoints=checkpoints, checkpoint_before=before,
            writer=w)) for w, sp in starts.items()}
    segments = _segments(ds, symbol, start_us, end_us, depth, starts)
    points = {start_us}
    for g in segments:
        if start_us < g.s <= end_us:
            points.add(g.s)
        if g.h != _INF and start_us < g.h + 1 <= end_us:
            points.add(int(g.h) + 1)
    legs: list[tuple[str, int, int]] = []
    for t in sorted(points):
        w = _followed(segments, t)
        # None: no snapshot yet (once one writer was followed, one always is).
        if w is None or (legs and legs[-1][0] == w):
            continue
        if legs:
            legs[-1] = (legs[-1][0], legs[-1][1], t - 1)
        legs.append((w, t, end_us))
    return legs, depth, ws


def _rows(ds: Dataset, symbol: str, start_us: int, end_us: int, book_depth: int | None,
          qty_text: bool = False, text: bool = False, *, checkpoints: bool = True,
          changes: bool = False
          ) -> tuple[pa.Table, int | None, int | None, int | None, list[tuple[int, int]]]:
    """book_rows() for one book however many writers recorded it: the rows of each leg of
    plan() one after the other, each leg's from its writer's start point before the leg.
    The last item: (first row, first µs) of each leg after the first, for ``_fold``."""
    legs, depth, only = plan(ds, symbol, start_us, end_us, book_depth,
                             checkpoints=checkpoints, changes=changes)
    if not legs:
        rows, depth_, snap_us, cut = book_rows(
            ds, symbol, start_us, end_us, book_depth, qty_text, text,
            checkpoints=checkpoints, changes=changes, writer=only[0] if only else None)
        return rows, depth_, snap_us, cut, []
    parts: list[pa.Table] = []
    marks: list[tuple[int, int]] = []
    offset = 0
    snap_us = cut = None
    for i, (w, lo, hi) in enumerate(legs):
        first = i == 0 and lo == start_us
        # A later leg: its writer's book up to the switch is folded silently (``_fold``
        # reports nothing before the leg's first µs); a checkpoint taken at the switch's
        # µs may hold messages of that µs, so only an older one starts it.
        rows, _, snap_us, cut = book_rows(
            ds, symbol, lo, hi, depth, qty_text, text, checkpoints=checkpoints,
            changes=changes if first else True, writer=w)
        if rows.num_rows == 0:
            continue
        if parts:
            marks.append((offset, lo))
        parts.append(rows)
        offset += rows.num_rows
    if not parts:
        empty = pa.table({"update_id": pa.array([], pa.int64())})
        return empty, None, None, None, []
    return pa.concat_tables(parts).combine_chunks(), depth, snap_us, cut, marks


def earliest_start(ds: Dataset, symbol: str, at_us: int) -> int | None:
    """ts_recv of the earliest start point before ``at_us`` (a checkpoint older than it,
    else the snapshot) among the writers of ``symbol``'s book: where a series of changes
    from ``at_us`` must start folding to judge its first change as one long fold does."""
    ws = writers(ds, symbol, at_us, at_us) or [None]
    found = [sp.ts_us for w in ws if (sp := start_point(
        ds, symbol, at_us, checkpoints=True, checkpoint_before=at_us, writer=w)) is not None]
    return min(found) if found else None


# -- the single pass -------------------------------------------------------------------------

# Rows are turned into Python values one batch at a time, so the pass holds Python objects
# for one batch, not for every row selected (the Arrow columns themselves stay compact).
_BATCH_ROWS = 65_536


@dataclass
class _Emit:
    times: list[int] = field(default_factory=list)      # the snapshot's time
    msg: list[tuple[int, int]] = field(default_factory=list)  # rows [i, j) of the last message
    asks: list[list[int]] = field(default_factory=list)  # row numbers, best first
    bids: list[list[int]] = field(default_factory=list)
    verified: list[bool | None] = field(default_factory=list)

    def add_empty_book(self) -> None:
        """One snapshot of an empty book (nothing recorded before the moment asked for)."""
        self.times.append(0)
        self.msg.append((0, 0))
        self.asks.append([])
        self.bids.append([])
        self.verified.append(None)


def _fold(rows: pa.Table, depth: int | None, levels: int, *, grid: range | None = None,
          change_from: int | None = None, skip_unverified: bool = False,
          progress: Callable[[int, int], None] | None = None,
          legs: list[tuple[int, int]] | None = None) -> _Emit:
    """Apply the rows in order. Emit the top ``levels`` at each ``grid`` time (the book after
    every message received at or before it), or, with ``change_from``, after every message
    received at or after it that changed the top ``levels`` (prices or quantities), or else
    only once at the end. ``legs``: (first row, first µs) where the rows switch to another
    writer's book (``_rows``): the times before that µs are the old book's, and the new
    book's rows before it are applied without reporting anything."""
    out = _Emit()
    n = rows.num_rows
    if n == 0:
        if grid is None and change_from is None:
            out.add_empty_book()
        return out
    qs_col = rows.column("qs") if "qs" in rows.column_names else None

    asks: dict[int, int] = {}
    bids: dict[int, int] = {}
    ak: list[int] = []    # ask keys ascending (best first)
    bk: list[int] = []    # negated bid keys ascending (best first)
    have = False
    state_ok: bool | None = None
    g_list = list(grid) if grid is not None else []
    g_n = len(g_list)
    g = 0
    last_msg = (0, 0)
    last_t = 0
    # The last top emitted in change mode: row numbers, keys, qty text, flag.
    last_a: list[int] | None = None
    last_b: list[int] | None = None
    last_keys: tuple = ()
    last_q: tuple = ()
    last_ok: bool | None = None
    change = change_from is not None
    report_from = change_from  # messages before it only build the book (a leg's catch-up)
    marks = list(legs or [])
    next_leg = marks[0][0] if marks else -1

    def emit(when: int, a_idx: list[int] | None = None, b_idx: list[int] | None = None
             ) -> None:
        if skip_unverified and state_ok is False:
            return
        out.times.append(when)
        out.msg.append(last_msg)
        out.asks.append([asks[k] for k in ak[:levels]] if a_idx is None else a_idx)
        out.bids.append([bids[k] for k in bk[:levels]] if b_idx is None else b_idx)
        out.verified.append(state_ok)

    # The message being applied: its update_id, first row, time and flag.
    cur: int | None = None
    m_start = 0
    m_t = 0
    m_ok: bool | None = None
    qtext: dict[int, str] = {}  # change mode: qty text of the rows a kept level points at

    def finish(j: int) -> None:
        """The message [m_start, j) is applied: cut back to depth, note it, maybe emit."""
        nonlocal state_ok, last_msg, last_a, last_b, last_keys, last_q, last_ok, last_t
        if depth is not None and len(ak) > depth:
            for k in ak[depth:]:
                qtext.pop(asks.pop(k), None)
            del ak[depth:]
        if depth is not None and len(bk) > depth:
            for k in bk[depth:]:
                qtext.pop(bids.pop(k), None)
            del bk[depth:]
        state_ok = m_ok
        last_msg = (m_start, j)
        last_t = m_t
        if change and m_t >= report_from:
            a_idx = [asks[k] for k in ak[:levels]]
            b_idx = [bids[k] for k in bk[:levels]]
            if a_idx != last_a or b_idx != last_b or state_ok != last_ok:
                keys = (ak[:levels], bk[:levels])
                q = (tuple(qtext[x] for x in a_idx), tuple(qtext[x] for x in b_idx))
                # Same levels, new rows: a change only if a quantity differs (a level
                # re-sent with the same quantity changes nothing).
                if last_a is None or state_ok != last_ok or keys != last_keys or q != last_q:
                    emit(m_t, a_idx, b_idx)
                last_a, last_b, last_keys, last_q, last_ok = a_idx, b_idx, keys, q, state_ok

    base = 0
    for batch in rows.to_batches(max_chunksize=_BATCH_ROWS):
        upd = batch.column("update_id").to_pylist()
        tim = batch.column("t").to_pylist()
        bid = batch.column("bid").to_pylist()
        pk = batch.column("pk").to_pylist()
        dele = batch.column("del").to_pylist()
        snap = batch.column("snap").to_pylist()
        ver = batch.column("verified").to_pylist()
        qs = (qs_col.slice(base, len(upd)).to_pylist() if qs_col is not None and change
              else None)
        for r, u in enumerate(upd):
            j = base + r
            if j == next_leg:  # another writer's book from here (see _rows)
                if cur is not None and have:
                    finish(j)
                lo = marks.pop(0)[1]
                next_leg = marks[0][0] if marks else -1
                while g < g_n and g_list[g] < lo:
                    if have:
                        emit(g_list[g])
                    g += 1
                if change:
                    report_from = max(report_from, lo)
                asks.clear()
                bids.clear()
                ak.clear()
                bk.clear()
                qtext.clear()
                have = False  # until the leg's start point (a snapshot message)
                cur = None
            if u != cur:
                if cur is not None and have:
                    finish(j)
                cur, m_start, m_t, m_ok = u, j, tim[r], ver[r]
                while g < g_n and g_list[g] < m_t:
                    if have:
                        emit(g_list[g])
                    g += 1
                if snap[r]:
                    asks.clear()
                    bids.clear()
                    ak.clear()
                    bk.clear()
                    qtext.clear()
                    have = True
            if not have:
                continue
            if bid[r]:
                d, keys, k = bids, bk, -pk[r]
            else:
                d, keys, k = asks, ak, pk[r]
            if dele[r]:
                old = d.pop(k, None)
                if old is not None:
                    del keys[bisect_left(keys, k)]
                    if qs is not None:
                        qtext.pop(old, None)
            else:
                old = d.get(k)
                if old is None:
                    insort(keys, k)
                elif qs is not None:
                    qtext.pop(old, None)
                d[k] = j
                if qs is not None:
                    qtext[j] = qs[r]
        base += len(upd)
        if progress:
            progress(base, n)  # rows applied, of all rows
    if cur is not None and have:
        finish(n)
    while g < g_n:
        if have:
            emit(g_list[g])
        g += 1
    if grid is None and change_from is None:
        if have:
            emit(last_t)
        else:
            out.add_empty_book()
    return out


def _take(col: pa.ChunkedArray | pa.Array, idx: list[int | None]) -> pa.Array:
    return col.take(pa.array(idx, pa.int64()))


def _msg_times(rows: pa.Table, em: _Emit, breaks: list[tuple[int, int]] | None = None
               ) -> tuple[list[int | None], list[int | None]]:
    """ts_recv and ts_exchange (the latest of the message's rows: v1 sends one per level) of
    the last message applied for each emission."""
    import numpy as np
    import pyarrow.compute as pc

    if rows.num_rows == 0 or not em.msg:
        return [None] * len(em.msg), [None] * len(em.msg)
    first = np.fromiter((i for i, _ in em.msg), np.int64, len(em.msg))
    empty = np.fromiter((i == j for i, j in em.msg), np.bool_, len(em.msg))
    recv = rows.column("t").take(pa.array(first)).to_pylist()
    # The latest ts_exchange of each message, computed once per message in numpy.
    low = np.iinfo(np.int64).min
    tx = pc.fill_null(rows.column("tx"), low).to_numpy()
    upd = rows.column("update_id").to_numpy()
    new = np.r_[True, upd[1:] != upd[:-1]]
    for row, _ in breaks or []:  # a leg's first row starts a message (another writer's)
        new[row] = True
    starts = np.flatnonzero(new)
    latest = np.maximum.reduceat(tx, starts)
    msg_of = np.searchsorted(starts, first, side="right") - 1
    exch = latest[msg_of]
    mask = (exch == low) | empty
    return recv, pa.array(exch, mask=mask).to_pylist()


def _ts_array(values: list[int | None]) -> pa.Array:
    return pa.array(values, pa.int64()).cast(TIMESTAMP)


def _wide(rows: pa.Table, em: _Emit, levels: int, text: bool = False
          ) -> dict[str, pa.Array]:
    """ask_price_0, ask_qty_0, bid_price_0, bid_qty_0, ask_price_1, ... (null past the end of
    a side). ``text``: plain decimal text (no trailing zeros) instead of decimals."""
    import numpy as np

    cols: dict[str, pa.Array] = {}
    if text:
        price, qty = rows.column("price_text"), rows.column("qty_text")
    else:
        price, qty = rows.column("price"), rows.column("qty")
    for side, lists in (("ask", em.asks), ("bid", em.bids)):
        idx = np.full((len(lists), levels), -1, dtype=np.int64)
        for e, lst in enumerate(lists):
            if lst:
                idx[e, : len(lst)] = lst
        for lvl in range(levels):
            col = idx[:, lvl]
            arr = pa.array(col, mask=col < 0)
            cols[f"{side}_price_{lvl}"] = price.take(arr)
            cols[f"{side}_qty_{lvl}"] = qty.take(arr)
    order = [f"{side}_{what}_{lvl}" for lvl in range(levels) for side in ("ask", "bid")
             for what in ("price", "qty")]
    return {name: cols[name] for name in order}


def _check_levels(depth: int) -> int:
    if not isinstance(depth, int) or depth < 1 or depth > 1000:
        raise DatasetError(f"depth {depth!r}: the number of levels per side must be 1..1000")
    return depth


def _check_unverified(unverified: str) -> bool:
    if unverified not in UNVERIFIED:
        raise DatasetError(f"unverified {unverified!r}; allowed: {', '.join(UNVERIFIED)}")
    return unverified == "skip"


# -- public API ------------------------------------------------------------------------------


def book_at(ds: Dataset, symbol: str, at: Any, depth: int = 10,
            book_depth: int | None = None, *, checkpoints: bool = True) -> Book:
    """The top ``depth`` levels of ``symbol``'s book after every message received at or before
    ``at``. ``book_depth`` picks the subscribed depth when several were recorded (default:
    that of the last snapshot). ``checkpoints=False`` folds from the snapshot even when a
    checkpoint is nearer (the result is the same, only slower)."""
    at_us = parse_time(at, "at")
    if at_us is None:
        raise DatasetError("at: a time is required")
    _check_levels(depth)
    rows, sub_depth, snap_us, cut, legs = _rows(ds, symbol, at_us, at_us, book_depth,
                                                checkpoints=checkpoints)
    book = Book(split_symbol(symbol)[1], to_datetime(at_us), depth=sub_depth)
    if snap_us is None:
        return book
    em = _fold(rows, cut, depth, legs=legs)
    asks, bids = em.asks[-1], em.bids[-1]
    price, qty = rows.column("price"), rows.column("qty")
    book.asks = list(zip(_take(price, asks).to_pylist(), _take(qty, asks).to_pylist(),
                         strict=True))
    book.bids = list(zip(_take(price, bids).to_pylist(), _take(qty, bids).to_pylist(),
                         strict=True))
    i, _ = em.msg[-1]
    book.last_update = to_datetime(rows.column("t")[i].as_py())
    book.snapshot_at = to_datetime(snap_us)
    book.verified = em.verified[-1]
    return book


def book_snapshots(ds: Dataset, symbol: str, start: Any, end: Any, interval: Any = "1s",
                   depth: int = 25, book_depth: int | None = None,
                   unverified: str = "flag", *, checkpoints: bool = True) -> pa.Table:
    """Top-``depth`` snapshots of ``symbol``: at every multiple of ``interval`` in
    [start, end) (``interval=None``: after every message in [start, end) that changed the top
    ``depth``). Columns: symbol, ts (the snapshot's time: the grid time, or the message's
    ts_recv), ts_exchange and last_update (exchange time and ts_recv of the last message
    applied), verified, then ask_price_0, ask_qty_0, bid_price_0, bid_qty_0, ask_price_1, ...
    Times before the first snapshot have no row. ``checkpoints``: as in book_at()."""
    start_us, end_us = parse_time(start, "start"), parse_time(end, "end")
    if start_us is None or end_us is None:
        raise DatasetError("start and end are required for a series of book snapshots")
    return _series(ds, symbol, start_us, end_us, interval, depth, book_depth, unverified,
                   checkpoints=checkpoints)


def _series(ds: Dataset, symbol: str, start_us: int, end_us: int, interval: Any, depth: int,
            book_depth: int | None, unverified: str, text: bool = False, *,
            checkpoints: bool = True,
            progress: Callable[[int, int], None] | None = None) -> pa.Table:
    """book_snapshots() on microseconds; ``text``: levels as plain decimal text (for CSV);
    ``progress(rows applied, rows)`` after each batch of book rows."""
    if end_us <= start_us:
        raise DatasetError("end must be after start")
    _check_levels(depth)
    skip = _check_unverified(unverified)
    if interval is None:
        rows, _, _, cut, legs = _rows(ds, symbol, start_us, end_us - 1, book_depth,
                                      qty_text=True, text=text, checkpoints=checkpoints,
                                      changes=True)
        em = _fold(rows, cut, depth, change_from=start_us, skip_unverified=skip,
                   progress=progress, legs=legs)
    else:
        iv = parse_interval(interval)
        first = -(-start_us // iv) * iv
        rows, _, _, cut, legs = _rows(ds, symbol, start_us, end_us - 1, book_depth,
                                      text=text, checkpoints=checkpoints)
        em = _fold(rows, cut, depth, grid=range(first, end_us, iv),
                   skip_unverified=skip, progress=progress, legs=legs)
    recv, exch = _msg_times(rows, em, legs)
    cols: dict[str, Any] = {
        "symbol": pa.array([split_symbol(symbol)[1]] * len(em.times), pa.string()),
        "ts": _ts_array(em.times),
        "ts_exchange": _ts_array(exch),
        "last_update": _ts_array(recv),
        "verified": pa.array(em.verified, pa.bool_()),
    }
    if rows.num_rows:
        cols.update(_wide(rows, em, depth, text))
    else:
        from recorder.core.schema import DECIMAL_PRICE, DECIMAL_QTY

        for lvl in range(depth):
            for side in ("ask", "bid"):
                cols[f"{side}_price_{lvl}"] = pa.array([], pa.string() if text
                                                       else DECIMAL_PRICE)
                cols[f"{side}_qty_{lvl}"] = pa.array([], pa.string() if text else DECIMAL_QTY)
    return pa.table(cols)


def quotes(ds: Dataset, symbol: str, start: Any = None, end: Any = None,
           book_depth: int | None = None, unverified: str = "flag", *,
           checkpoints: bool = True) -> pa.Table:
    """Every change of the best bid or ask (price or quantity) of ``symbol`` in [start, end),
    from the rebuilt book. Columns: symbol, ts_recv, ts_exchange, bid_price, bid_qty,
    ask_price, ask_qty, verified."""
    start_us, end_us = parse_time(start, "start"), parse_time(end, "end")
    if start_us is None or end_us is None:
        lo, hi = ds.time_range("book", symbol)
        if lo is None:
            raise DatasetError(f"no book rows for {symbol!r} in {ds.data}")
        start_us = parse_time(lo) if start_us is None else start_us
        end_us = parse_time(hi) + 1 if end_us is None else end_us
    snaps = _series(ds, symbol, start_us, end_us, None, 1, book_depth, unverified,
                    checkpoints=checkpoints)
    return pa.table({
        "symbol": snaps.column("symbol"),
        "ts_recv": snaps.column("ts"),
        "ts_exchange": snaps.column("ts_exchange"),
        "bid_price": snaps.column("bid_price_0"),
        "bid_qty": snaps.column("bid_qty_0"),
        "ask_price": snaps.column("ask_price_0"),
        "ask_qty": snaps.column("ask_qty_0"),
        "verified": snaps.column("verified"),
    })
