"""Order books rebuilt from the recorded ``book`` table: the top-N book at a moment, a series
of top-N snapshots at a fixed interval (like Tardis's ``book_snapshot_25``), and quotes (every
change of the best bid or ask).

Book semantics (the same as the recorder's own book keeper, recorder/book.py):

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

How it is computed: DuckDB selects the rows needed (from the last snapshot at or before the
start, partitions pruned by date, ordered by ``update_id`` and file position) and turns each
price into an exact integer key; a single pass over those integer columns keeps the levels as
row numbers; the output is then assembled in Arrow with ``take`` from the exact decimal
columns, so prices and quantities come back exactly as recorded. The pass itself is a Python
loop per row: cutting each side back to ``depth`` after every message makes a level's presence
depend on the whole history since the snapshot, which no set-based SQL formulation expresses
exactly (last-value-per-price keeps levels that silently left the book's scope).
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa

from recorder.dataset import (
    Dataset,
    DatasetError,
    date_of,
    parse_interval,
    parse_time,
    sql_str,
    to_arrow,
    to_datetime,
    ts_literal,
)
from recorder.schema import TIMESTAMP

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
        from recorder.schema import DECIMAL_PRICE, DECIMAL_QTY

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


def _dates(ds: Dataset) -> list[str]:
    """Every date partition of the book table, newest first."""
    days = {p.parent.name.removeprefix("date=") for p in ds.files.get("book", [])}
    pending = ds.pending.get("book")
    if pending is not None:
        days |= {d.isoformat() for d in pending.column("date").unique().to_pylist()}
    return sorted(days, reverse=True)


def _last_snapshot(ds: Dataset, symbol: str, at_us: int, book_depth: int | None
                   ) -> tuple[int, int, int] | None:
    """(update_id, ts_recv µs, depth) of the last snapshot of ``symbol`` received at or
    before ``at_us``, searching one date partition at a time, newest first."""
    depth_term = f" AND depth = {int(book_depth)}" if book_depth else ""
    day_at = date_of(at_us)
    for day in _dates(ds):
        if day > day_at:
            continue
        rows = ds.con.execute(
            f"SELECT update_id, epoch_us(ts_recv), depth FROM book WHERE date = DATE '{day}' "
            f"AND symbol = {sql_str(symbol)} AND is_snapshot AND ts_recv <= {ts_literal(at_us)}"
            f"{depth_term} ORDER BY update_id DESC LIMIT 1").fetchall()
        if rows:
            return rows[0]
    return None


def _first_depth(ds: Dataset, symbol: str, start_us: int, end_us: int) -> int | None:
    rows = ds.con.execute(
        f"SELECT depth FROM book WHERE symbol = {sql_str(symbol)} AND is_snapshot "
        f"AND ts_recv >= {ts_literal(start_us)} AND ts_recv <= {ts_literal(end_us)} "
        f"AND date BETWEEN DATE '{date_of(start_us)}' AND DATE '{date_of(end_us)}' "
        "ORDER BY update_id LIMIT 1").fetchall()
    return rows[0][0] if rows else None


def book_rows(ds: Dataset, symbol: str, start_us: int, end_us: int,
              book_depth: int | None = None, qty_text: bool = False, text: bool = False
              ) -> tuple[pa.Table, int | None, int | None]:
    """The book rows of ``symbol`` needed to know the book from ``start_us`` to ``end_us``
    (inclusive): from the last snapshot at or before ``start_us`` (or from ``start_us`` if
    there is none), ordered for application. Returns (rows, subscribed depth, ts_recv of
    that snapshot)."""
    if "book" not in ds.tables():
        raise DatasetError(f"no book rows recorded in {ds.data}")
    snap = _last_snapshot(ds, symbol, start_us, book_depth)
    if snap is not None:
        first_update, first_us, depth = snap
        lower = f"update_id >= {int(first_update)}"
    else:
        first_us, depth = start_us, book_depth or _first_depth(ds, symbol, start_us, end_us)
        lower = f"ts_recv >= {ts_literal(start_us)}"
    if depth is None:
        empty = pa.table({"update_id": pa.array([], pa.int64())})
        return empty, None, None
    qs = ", qty::VARCHAR AS qs" if qty_text else ""
    if text:
        qs += (", rtrim(rtrim(price::VARCHAR, '0'), '.') AS price_text, "
               "rtrim(rtrim(qty::VARCHAR, '0'), '.') AS qty_text")
    query = (
        "SELECT update_id, epoch_us(ts_recv) AS t, epoch_us(ts_exchange) AS tx, "
        f"side = 'bid' AS bid, (price * {PRICE_SCALE})::BIGINT AS pk, qty = 0 AS del, "
        f"is_snapshot AS snap, verified, price, qty{qs} FROM ({ds.source_sql('book', order=True)})"
        f" WHERE symbol = {sql_str(symbol)} AND depth = {int(depth)} AND {lower} "
        f"AND ts_recv <= {ts_literal(end_us)} "
        f"AND date BETWEEN DATE '{date_of(first_us)}' AND DATE '{date_of(end_us)}' "
        "ORDER BY update_id, _file, _row")
    # One chunk: take() on a table of many small chunks is slow.
    rows = to_arrow(ds.con.sql(query)).combine_chunks()
    return rows, int(depth), (first_us if snap else None)


# -- the single pass -------------------------------------------------------------------------


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


def _fold(rows: pa.Table, depth: int, levels: int, *, grid: range | None = None,
          change_from: int | None = None, skip_unverified: bool = False) -> _Emit:
    """Apply the rows in order. Emit the top ``levels`` at each ``grid`` time (the book after
    every message received at or before it), or, with ``change_from``, after every message
    received at or after it that changed the top ``levels`` (prices or quantities), or else
    only once at the end."""
    out = _Emit()
    n = rows.num_rows
    if n == 0:
        if grid is None and change_from is None:
            out.add_empty_book()
        return out
    upd = rows.column("update_id").to_pylist()
    tim = rows.column("t").to_pylist()
    bid = rows.column("bid").to_pylist()
    pk = rows.column("pk").to_pylist()
    dele = rows.column("del").to_pylist()
    snap = rows.column("snap").to_pylist()
    ver = rows.column("verified").to_pylist()
    qs = rows.column("qs").to_pylist() if "qs" in rows.column_names else None

    asks: dict[int, int] = {}
    bids: dict[int, int] = {}
    ak: list[int] = []    # ask keys ascending (best first)
    bk: list[int] = []    # negated bid keys ascending (best first)
    have = False
    state_ok: bool | None = None
    g_list = list(grid) if grid is not None else []
    g = 0
    last_msg = (0, 0)
    # The last top emitted in change mode: row numbers, keys, flag.
    last_a: list[int] | None = None
    last_b: list[int] | None = None
    last_keys: tuple = ()
    last_ok: bool | None = None

    def emit(when: int, a_idx: list[int] | None = None, b_idx: list[int] | None = None
             ) -> None:
        if skip_unverified and state_ok is False:
            return
        out.times.append(when)
        out.msg.append(last_msg)
        out.asks.append([asks[k] for k in ak[:levels]] if a_idx is None else a_idx)
        out.bids.append([bids[k] for k in bk[:levels]] if b_idx is None else b_idx)
        out.verified.append(state_ok)

    i = 0
    while i < n:
        u = upd[i]
        tm = tim[i]
        while g < len(g_list) and g_list[g] < tm:
            if have:
                emit(g_list[g])
            g += 1
        if snap[i]:
            asks.clear()
            bids.clear()
            ak.clear()
            bk.clear()
            have = True
        j = i
        while j < n and upd[j] == u:
            if have:
                if bid[j]:
                    d, keys, k = bids, bk, -pk[j]
                else:
                    d, keys, k = asks, ak, pk[j]
                if dele[j]:
                    if d.pop(k, None) is not None:
                        del keys[bisect_left(keys, k)]
                else:
                    if k not in d:
                        insort(keys, k)
                    d[k] = j
            j += 1
        if have:
            if len(ak) > depth:
                for k in ak[depth:]:
                    del asks[k]
                del ak[depth:]
            if len(bk) > depth:
                for k in bk[depth:]:
                    del bids[k]
                del bk[depth:]
            state_ok = ver[i]
            last_msg = (i, j)
            if change_from is not None and tm >= change_from:
                a_idx = [asks[k] for k in ak[:levels]]
                b_idx = [bids[k] for k in bk[:levels]]
                if a_idx != last_a or b_idx != last_b or state_ok != last_ok:
                    keys = (ak[:levels], bk[:levels])
                    # Same levels, new rows: a change only if a quantity differs (a level
                    # re-sent with the same quantity changes nothing).
                    changed = (last_a is None or state_ok != last_ok or keys != last_keys
                               or any(qs[x] != qs[y] for x, y in zip(a_idx, last_a,
                                                                      strict=True))
                               or any(qs[x] != qs[y] for x, y in zip(b_idx, last_b,
                                                                      strict=True)))
                    if changed:
                        emit(tm, a_idx, b_idx)
                    last_a, last_b, last_keys, last_ok = a_idx, b_idx, keys, state_ok
        i = j
    while g < len(g_list):
        if have:
            emit(g_list[g])
        g += 1
    if grid is None and change_from is None:
        if have:
            emit(tim[last_msg[0]])
        else:
            out.add_empty_book()
    return out


def _take(col: pa.ChunkedArray | pa.Array, idx: list[int | None]) -> pa.Array:
    return col.take(pa.array(idx, pa.int64()))


def _msg_times(rows: pa.Table, em: _Emit) -> tuple[list[int | None], list[int | None]]:
    """ts_recv and ts_exchange (the latest of the message's rows: v1 sends one per level) of
    the last message applied for each emission."""
    if rows.num_rows == 0:
        return [None] * len(em.msg), [None] * len(em.msg)
    tim = rows.column("t")
    tx = rows.column("tx").to_pylist()
    recv = _take(tim, [i for i, _ in em.msg]).to_pylist()
    exch: list[int | None] = []
    for i, j in em.msg:
        vals = [v for v in tx[i:j] if v is not None]
        exch.append(max(vals) if vals else None)
    return recv, exch


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
            book_depth: int | None = None) -> Book:
    """The top ``depth`` levels of ``symbol``'s book after every message received at or before
    ``at``. ``book_depth`` picks the subscribed depth when several were recorded (default:
    that of the last snapshot)."""
    at_us = parse_time(at, "at")
    if at_us is None:
        raise DatasetError("at: a time is required")
    _check_levels(depth)
    rows, sub_depth, snap_us = book_rows(ds, symbol, at_us, at_us, book_depth)
    book = Book(symbol, to_datetime(at_us), depth=sub_depth)
    if sub_depth is None or snap_us is None:
        return book
    em = _fold(rows, sub_depth, depth)
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
                   unverified: str = "flag") -> pa.Table:
    """Top-``depth`` snapshots of ``symbol``: at every multiple of ``interval`` in
    [start, end) (``interval=None``: after every message in [start, end) that changed the top
    ``depth``). Columns: symbol, ts (the snapshot's time: the grid time, or the message's
    ts_recv), ts_exchange and last_update (exchange time and ts_recv of the last message
    applied), verified, then ask_price_0, ask_qty_0, bid_price_0, bid_qty_0, ask_price_1, ...
    Times before the first snapshot have no row."""
    start_us, end_us = parse_time(start, "start"), parse_time(end, "end")
    if start_us is None or end_us is None:
        raise DatasetError("start and end are required for a series of book snapshots")
    return _series(ds, symbol, start_us, end_us, interval, depth, book_depth, unverified)


def _series(ds: Dataset, symbol: str, start_us: int, end_us: int, interval: Any, depth: int,
            book_depth: int | None, unverified: str, text: bool = False) -> pa.Table:
    """book_snapshots() on microseconds; ``text``: levels as plain decimal text (for CSV)."""
    if end_us <= start_us:
        raise DatasetError("end must be after start")
    _check_levels(depth)
    skip = _check_unverified(unverified)
    if interval is None:
        rows, sub_depth, _ = book_rows(ds, symbol, start_us, end_us - 1, book_depth,
                                       qty_text=True, text=text)
        em = _fold(rows, sub_depth or 1, depth, change_from=start_us, skip_unverified=skip)
    else:
        iv = parse_interval(interval)
        first = -(-start_us // iv) * iv
        rows, sub_depth, _ = book_rows(ds, symbol, start_us, end_us - 1, book_depth,
                                       text=text)
        em = _fold(rows, sub_depth or 1, depth, grid=range(first, end_us, iv),
                   skip_unverified=skip)
    recv, exch = _msg_times(rows, em)
    cols: dict[str, Any] = {
        "symbol": pa.array([symbol] * len(em.times), pa.string()),
        "ts": _ts_array(em.times),
        "ts_exchange": _ts_array(exch),
        "last_update": _ts_array(recv),
        "verified": pa.array(em.verified, pa.bool_()),
    }
    if rows.num_rows:
        cols.update(_wide(rows, em, depth, text))
    else:
        from recorder.schema import DECIMAL_PRICE, DECIMAL_QTY

        for lvl in range(depth):
            for side in ("ask", "bid"):
                cols[f"{side}_price_{lvl}"] = pa.array([], pa.string() if text
                                                       else DECIMAL_PRICE)
                cols[f"{side}_qty_{lvl}"] = pa.array([], pa.string() if text else DECIMAL_QTY)
    return pa.table(cols)


def quotes(ds: Dataset, symbol: str, start: Any = None, end: Any = None,
           book_depth: int | None = None, unverified: str = "flag") -> pa.Table:
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
    snaps = _series(ds, symbol, start_us, end_us, None, 1, book_depth, unverified)
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
