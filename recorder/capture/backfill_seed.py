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
    """lane -> the rows of ``stream.table`` recorded at that lane's newest time.

    Read with pyarrow, which the collector has loaded anyway (DuckDB would add about 50 MB
    to every collector process)."""
    if not lanes:
        return {}
    import pyarrow as pa

    table = stream.table
    names = tuple(c.name for c in TABLES[table])
    time_name = names[stream.time_col]
    symbols = sorted({_symbol(lane) for lane in lanes})
    rows: list[tuple] = []
    try:
        for f in _newest_files(root / table / f"exchange={exchange}"):
            rows += _newest(_read(f, names), exchange, symbols, names, time_name)
        for pending in _pending(root, table):
            rows += _newest(pending, exchange, symbols, names, time_name)
    except (OSError, pa.ArrowException) as e:  # must not keep the job from starting
        log.warning("cannot read the last recorded %s under %s: %s", table, root, e)
        return {}
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


def _read(path: Path, names: tuple[str, ...]) -> Any:
    import pyarrow.parquet as pq

    have = set(pq.read_schema(path).names)
    return pq.read_table(path, columns=[n for n in names if n in have])


def _newest(t: Any, exchange: str, symbols: list[str], names: tuple[str, ...],
            time_name: str) -> list[tuple]:
    """The rows of Arrow table ``t`` at each lane's newest time, in adapter form."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if time_name not in t.column_names or "symbol" not in t.column_names:
        return []
    if "exchange" in t.column_names:
        t = t.filter(pc.equal(t["exchange"], exchange))
    t = t.filter(pc.and_(pc.is_in(t["symbol"], value_set=pa.array(symbols)),
                         pc.is_valid(t[time_name])))
    if t.num_rows == 0:
        return []
    keys = ["symbol", "interval"] if "interval" in names else ["symbol"]
    t = t.append_column("_us", t[time_name].cast(pa.timestamp("us", tz="UTC"))
                        .cast(pa.int64()))
    top = t.group_by(keys).aggregate([("_us", "max")]).rename_columns([*keys, "_top"])
    t = t.join(top, keys=keys)
    t = t.filter(pc.equal(t["_us"], t["_top"]))
    columns = {n: t[n].to_pylist() if n in t.column_names else [None] * t.num_rows
               for n in names}
    return [_adapter_row(names, {n: columns[n][i] for n in names}) for i in range(t.num_rows)]


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
