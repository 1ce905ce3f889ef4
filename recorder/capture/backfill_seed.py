"""The rows a data directory recorded last, per lane (a symbol's trades, a symbol's candles
of one interval): where a restarted job's repair starts (recorder/capture/backfill.py).

Finished Parquet files of the newest two dates and journal segments not finalized yet are
read (a crash leaves the last second in a journal). Rows come back in the form adapters
emit (times as integer µs, decimals as text), so an exchange's keys read them like live
rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

from recorder.core.schema import TABLES

log = logging.getLogger("recorder.backfill")

_DATES = 2  # partitions read, newest first: a job stopped across midnight still finds its last


def last_rows(root: Path, exchange: str, stream: Any, lanes: tuple) -> dict[Any, list[tuple]]:
    """lane -> the rows of ``stream.table`` recorded at that lane's newest time."""
    if not lanes:
        return {}
    import duckdb

    table = stream.table
    names = tuple(c.name for c in TABLES[table])
    time_name = names[stream.time_col]
    symbols = tuple(sorted({_symbol(lane) for lane in lanes}))
    found: list[dict[str, Any]] = []
    con = duckdb.connect()
    try:
        files = _newest_files(root / table / f"exchange={exchange}")
        if files:
            listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
            found += _newest(con, f"read_parquet([{listed}], union_by_name = true)",
                             exchange, symbols, time_name, table)
        for pending in _pending(root, table):
            con.register("_pending", pending)
            found += _newest(con, "_pending", exchange, symbols, time_name, table)
            con.unregister("_pending")
    except duckdb.Error as e:  # an unreadable file must not keep the job from starting
        log.warning("cannot read the last recorded %s under %s: %s", table, root, e)
        return {}
    finally:
        con.close()
    rows = [_adapter_row(names, r) for r in found]
    wanted = set(lanes)
    newest: dict[Any, int] = {}
    for row in rows:
        lane = stream.lane_of(row)
        t = row[stream.time_col]
        newest[lane] = max(newest.get(lane, t), t)
    out: dict[Any, list[tuple]] = {}
    seen: set = set()
    for row in rows:
        lane = stream.lane_of(row)
        if lane not in wanted or row[stream.time_col] != newest[lane] or row in seen:
            continue  # (a segment and its published file may both be read)
        seen.add(row)
        out.setdefault(lane, []).append(row)
    return out


def _symbol(lane: Any) -> str:
    return lane[0] if isinstance(lane, tuple) else lane


def _newest_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    dates = sorted((p for p in folder.glob("date=*") if p.is_dir()), reverse=True)
    files: list[Path] = []
    for d in dates[:_DATES]:
        files += sorted(d.glob("*.parquet"))
    return files


def _newest(con: Any, source: str, exchange: str, symbols: tuple[str, ...], time_name: str,
            table: str) -> list[dict]:
    marks = ", ".join("?" for _ in symbols)
    # Per symbol (and interval, for candles): the rows at the newest time.
    lane = "symbol, interval" if table == "ohlc" else "symbol"
    cur = con.execute(
        f"WITH t AS (SELECT *, epoch_us({time_name}) AS _ts FROM {source} "
        f"WHERE exchange = ? AND symbol IN ({marks}) AND {time_name} IS NOT NULL) "
        f"SELECT * EXCLUDE (_rank) FROM (SELECT *, rank() OVER (PARTITION BY {lane} "
        "ORDER BY _ts DESC) AS _rank FROM t) WHERE _rank = 1",
        [exchange, *symbols])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _adapter_row(names: tuple[str, ...], r: dict[str, Any]) -> tuple:
    values = []
    for name in names:
        v = r.get(name)
        if isinstance(v, dt.datetime):
            v = (v - _EPOCH) // dt.timedelta(microseconds=1)
        elif isinstance(v, Decimal):
            v = str(v)
        values.append(v)
    return tuple(values)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _pending(root: Path, table: str) -> list[Any]:
    try:
        from sinks.journal_readers import pending_batches
    except ImportError:
        return []
    try:
        return [t for t in pending_batches(root, table) if "exchange" in t.column_names]
    except OSError as e:
        log.warning("cannot read the %s journal under %s: %s", table, root, e)
        return []
