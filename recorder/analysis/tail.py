"""`recorder tail TABLE`: follow the rows of a table as they are journaled, like ``tail -f``.

Rows reach the journal (``<data>/.journal/<table>/*.arrows``, one Arrow IPC stream per future
Parquet file) about one journal interval after they arrived. The follower reads each
segment incrementally: the schema once, then only the record batches appended since the
last poll (a torn batch at the end, being written, is read at the next poll). When a
segment is finalized (its rows move into a Parquet file and the segment is deleted), the
rows it got after the last poll are read from that file, found by the segment's name in
its metadata, so a rotation loses no row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.core.schema import TABLES
from sinks.journal import SegmentInfo, segment_files
from sinks.layout import partition_dir
from sinks.parquet_format import META_PREFIX

POLL_SECONDS = 0.25
HIDDEN = ("conn_id", "update_id")  # numbering for joins, not for reading
MAX_TEXT = 120


class SegmentFollower:
    """The rows appended to one journal segment since the last ``read``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.schema: pa.Schema | None = None
        self.info: SegmentInfo | None = None
        self.offset = 0
        self.rows = 0

    def read(self) -> list[pa.RecordBatch]:
        out: list[pa.RecordBatch] = []
        with open(self.path, "rb") as f:
            if self.schema is None:
                try:
                    msg = pa.ipc.read_message(f)
                    self.schema = pa.ipc.read_schema(msg)
                except (EOFError, OSError, pa.ArrowInvalid):
                    return out  # the schema is not written yet
                self.info = SegmentInfo.from_metadata(self.schema.metadata or {})
                self.offset = f.tell()
            f.seek(self.offset)
            while True:
                try:
                    msg = pa.ipc.read_message(f)
                except (EOFError, OSError, pa.ArrowInvalid):
                    break  # the end of the stream, or a batch still being written
                if msg.type == "record batch":
                    out.append(pa.ipc.read_record_batch(msg, self.schema))
                self.offset = f.tell()
        self.rows += sum(b.num_rows for b in out)
        return out

    def rest_from_file(self, root: Path) -> list[pa.RecordBatch]:
        """The segment was finalized: its rows past ``self.rows``, from its Parquet file."""
        info = self.info
        if info is None:
            return []
        folder = partition_dir(root, info.table, info.exchange, info.date)
        key = (META_PREFIX + "segment").encode()
        for path in sorted(folder.glob(f"*-{info.source}-{info.seq:04d}*.parquet")):
            try:
                meta = pq.read_schema(path).metadata or {}
                if meta.get(key, b"").decode() != info.segment:
                    continue
                table = pq.read_table(path)
            except (OSError, pa.ArrowInvalid):
                continue
            return table.slice(self.rows).to_batches()
        return []


class TableFollower:
    """Every segment of one table under ``root``: the new rows at each ``poll``."""

    def __init__(self, root: Path, table: str) -> None:
        self.root = Path(root)
        self.table = table
        self.segments: dict[Path, SegmentFollower] = {}

    def poll(self) -> list[pa.RecordBatch]:
        out: list[pa.RecordBatch] = []
        current = set(segment_files(self.root, self.table))
        for path in sorted(current - set(self.segments)):
            self.segments[path] = SegmentFollower(path)
        for path, follower in list(self.segments.items()):
            if path in current:
                try:
                    out.extend(follower.read())
                    continue
                except FileNotFoundError:
                    pass  # finalized between the listing and the read
            out.extend(follower.rest_from_file(self.root))
            del self.segments[path]
        return out


def _matches(batch: pa.RecordBatch, symbol: str | None, exchange: str | None) -> pa.RecordBatch:
    mask = None
    for name, value in (("symbol", symbol), ("exchange", exchange)):
        if value is None or name not in batch.schema.names:
            continue
        m = pc.equal(batch.column(name), value)
        mask = m if mask is None else pc.and_(mask, m)
    return batch if mask is None else batch.filter(pc.fill_null(mask, False))


def canonical_symbol(symbol: str | None) -> str | None:
    """``btc-usdt`` and ``BTC/USDT`` alike: tables always say ``BTC/USDT``."""
    return symbol.strip().upper().replace("-", "/") if symbol else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).replace("\n", " ")
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


class Printer:
    """Rows as an aligned table: a header once, columns widening as values need."""

    def __init__(self, columns: list[str], write: Callable[[str], None]) -> None:
        self.columns = columns
        self.widths = [len(c) for c in columns]
        self.write = write
        self.header_done = False

    def rows(self, batch: pa.RecordBatch) -> int:
        cols = [c for c in self.columns if c in batch.schema.names]
        data = batch.select(cols).to_pylist()
        if not data:
            return 0
        texts = [[_text(r[c]) for c in cols] for r in data]
        index = [self.columns.index(c) for c in cols]
        if not self.header_done:
            for row in texts[:50]:
                for i, t in zip(index, row, strict=True):
                    self.widths[i] = max(self.widths[i], len(t))
            self.write("  ".join(c.ljust(w) for c, w in zip(self.columns, self.widths,
                                                             strict=True)).rstrip())
            self.header_done = True
        for row in texts:
            cells = []
            for i, t in zip(index, row, strict=True):
                self.widths[i] = max(self.widths[i], len(t))
                cells.append(t.ljust(self.widths[i]))
            self.write("  ".join(cells).rstrip())
        return len(texts)


def columns_of(table: str) -> list[str]:
    return [c.name for c in TABLES[table] if c.name not in HIDDEN]


def follow(root: Path, table: str, *, symbol: str | None = None, exchange: str | None = None,
           lines: int = 10, keep_following: bool = True, write: Callable[[str], None] = print,
           stop: Callable[[], bool] = lambda: False, poll: float = POLL_SECONDS) -> int:
    """Print the last ``lines`` journaled rows of ``table`` and then every new one (until
    ``stop()``); return the rows printed."""
    symbol = canonical_symbol(symbol)
    printer = Printer(columns_of(table), write)
    follower = TableFollower(root, table)
    first = [_matches(b, symbol, exchange) for b in follower.poll()]
    printed = 0
    if lines > 0:
        batches = [b for b in first if b.num_rows]
        if batches:
            start = pa.Table.from_batches(batches)
            if "ts_recv" in start.column_names:
                start = start.sort_by("ts_recv")
            for batch in start.slice(max(0, start.num_rows - lines)).to_batches():
                printed += printer.rows(batch)
    while keep_following and not stop():
        time.sleep(poll)
        for batch in _sorted(follower.poll()):
            batch = _matches(batch, symbol, exchange)
            if batch.num_rows:
                printed += printer.rows(batch)
    return printed


def _sorted(batches: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """One poll's rows in receive order (several segments may have grown)."""
    batches = [b for b in batches if b.num_rows]
    if len(batches) <= 1 or "ts_recv" not in batches[0].schema.names:
        yield from batches
        return
    try:
        yield from pa.Table.from_batches(batches).sort_by("ts_recv").to_batches()
    except pa.ArrowInvalid:  # segments of different layouts: keep their order
        yield from batches
