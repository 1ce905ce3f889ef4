"""Re-run today's parsers over frames recorded in the ``raw`` table.

A parser fix then applies to old recordings: the frames are read back in arrival order,
connection by connection, through the same adapters and book keeper as a live collector,
into a new data directory.

Parsing state (books, v2 acks) belongs to one connection of one collector process. The raw
table has no column naming the process, and ``conn_id`` restarts at 1 in every process, so
the source is taken from the file name (``<first>-<last>-<source>-<seq>.parquet``, see
sinks/layout.py): a recovered journal segment keeps its writer's source and seq, so its file
belongs to the same stream. Within a source the files follow ``seq``; the sources are merged
by ``ts_recv``.

Book checkpoints are regenerated too, from the re-run book keepers: the collector takes one
every ``[output] book_checkpoint`` of wall-clock time at a flush, here one is taken every
``checkpoint_us`` of recorded ``ts_recv`` (before the first frame past each boundary, so
between frames, as live). The instants differ from the original run's, which is harmless: any
checkpoint of a verified book is the book after its update_id, and rebuilds only need one
shortly before the moment asked for. The old checkpoints are not copied: they describe the
old parse.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.capture.book import BookKeeper
from recorder.exchanges.kraken import v1, v2
from recorder.exchanges.kraken.common import new_rows
from sinks.layout import parse_parquet_name

_BATCH = 50_000
# Read in small batches: one reader per source is open at a time during the merge.
_READ_BATCH = 8_192
_COLUMNS = ["conn_id", "ts_recv", "endpoint", "frame"]


class RawFrame(NamedTuple):
    source: str
    conn_id: int
    ts: int  # ts_recv, µs
    endpoint: str
    frame: str


def raw_sources(data: Path) -> dict[str, list[Path]]:
    """The raw files under ``data`` per source, each list in the order it was written."""
    found: dict[str, list[tuple[int, int, str, Path]]] = {}
    for path in (data / "raw").rglob("*.parquet"):
        # A file renamed by hand is its own stream: better than guessing its neighbours.
        source, seq, again = parse_parquet_name(path.name) or (f"file:{path}", 0, 0)
        found.setdefault(source, []).append((seq, again, path.name, path))
    return {src: [p for *_, p in sorted(files)] for src, files in sorted(found.items())}


def _read_source(source: str, files: list[Path]) -> Iterator[RawFrame]:
    for path in files:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=_READ_BATCH, columns=_COLUMNS):
            ts = pc.cast(batch.column("ts_recv"), pa.int64(), safe=False).to_pylist()
            yield from (RawFrame(source, c, t, e, f) for c, t, e, f in zip(
                batch.column("conn_id").to_pylist(), ts, batch.column("endpoint").to_pylist(),
                batch.column("frame").to_pylist(), strict=True))


def raw_frames(data: Path) -> Iterator[RawFrame]:
    """Every raw frame under ``data``: each source in the order it was received, the
    sources interleaved by ``ts_recv`` (a merge never reorders frames of one source)."""
    streams = [_read_source(src, files) for src, files in raw_sources(data).items()]
    return heapq.merge(*streams, key=lambda f: f.ts)


class _Session:
    """Per-connection parsing state, learnt from the frames themselves (v2 acks say which
    ticker streams are bbo and which depth each book has)."""

    def __init__(self, endpoint: str) -> None:
        self.api = v2 if "/v2" in endpoint else v1
        self.books = BookKeeper()
        self.bbo: set[str] = set()
        self.depths: dict[str, int] = {}

    def parse(self, msg: Any, ts: int, update_id: int, out: dict[str, list[tuple]]) -> None:
        if self.api is v2:
            if msg.__class__ is dict and msg.get("method") == "subscribe" and msg.get("success"):
                result = msg.get("result") or {}
                sym = result.get("symbol")
                if result.get("channel") == "ticker" and result.get("event_trigger") == "bbo":
                    self.bbo.add(sym)
                if result.get("channel") == "book" and result.get("depth"):
                    self.depths[sym] = result["depth"]
            v2.parse(msg, ts, update_id, out, bbo_symbols=frozenset(self.bbo),
                     book_depths=self.depths)
        else:
            v1.parse(msg, ts, update_id, out)


def renormalize(data: Path, write: Callable[[str, list[tuple]], None],
                progress: Callable[[int], None] | None = None,
                checkpoint_us: int = 60_000_000) -> dict[str, int]:
    """Parse every raw frame under ``data`` again; hand the rows to ``write(table, rows)``.

    Returns the number of rows produced per table. ``raw`` itself is not rewritten. Book
    checkpoints are taken every ``checkpoint_us`` of recorded time (0: none).
    """
    counts: dict[str, int] = {}
    out = new_rows()
    # One state per connection of one collector process, never shared: two configs
    # recorded together both have a connection 1.
    sessions: dict[tuple[str, int, str], _Session] = {}
    latest: dict[str, int] = {}
    update_id = 0
    next_checkpoint: int | None = None
    for n, (source, conn_id, ts, endpoint, frame) in enumerate(raw_frames(data), 1):
        if checkpoint_us:
            if next_checkpoint is None:
                next_checkpoint = ts + checkpoint_us
            elif ts >= next_checkpoint:
                for s in sessions.values():
                    out["book_checkpoints"].extend(s.books.checkpoint_rows())
                next_checkpoint = ts + checkpoint_us
        key = (source, conn_id, endpoint)
        session = sessions.get(key)
        if session is None:
            if conn_id > latest.get(source, conn_id - 1):
                # A collector runs one connection at a time and numbers them upwards: its
                # earlier connections are over, so their books can go.
                for old in [k for k in sessions if k[0] == source and k[1] < conn_id]:
                    del sessions[old]
                latest[source] = conn_id
            session = sessions[key] = _Session(endpoint)
        update_id += 1
        book, events = out["book"], out["events"]
        start, events_start = len(book), len(events)
        try:
            msg = session.api.decode(frame.encode())
            session.parse(msg, ts, update_id, out)
            for i in range(events_start, len(events)):
                events[i] = events[i][:6] + (conn_id,)
        except Exception as e:  # noqa: BLE001 - a bad frame is an event, not the end
            out["events"].append(("kraken", ts, "malformed", None, None,
                                  f'{{"error":"{type(e).__name__}"}}', conn_id))
            continue
        if len(book) > start:
            session.books.process(book, start)
        if n % _BATCH == 0:
            _drain(out, write, counts)
            if progress:
                progress(n)
    _drain(out, write, counts)
    return counts


def _drain(out: dict[str, list[tuple]], write: Callable[[str, list[tuple]], None],
           counts: dict[str, int]) -> None:
    for table, rows in out.items():
        if rows and table != "raw":
            write(table, rows)
            counts[table] = counts.get(table, 0) + len(rows)
        out[table] = []
