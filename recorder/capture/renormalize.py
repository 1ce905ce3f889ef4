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
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.capture.book import BookKeeper
from recorder.core.events import event, new_rows, with_conn_id
from sinks.layout import parse_parquet_name

_BATCH = 50_000
# Read in small batches: one reader per source is open at a time during the merge.
_READ_BATCH = 8_192
_COLUMNS = ["exchange", "conn_id", "ts_recv", "endpoint", "frame"]


class RawFrame(NamedTuple):
    source: str
    exchange: str
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
            yield from (RawFrame(source, x, c, t, e, f) for x, c, t, e, f in zip(
                batch.column("exchange").to_pylist(), batch.column("conn_id").to_pylist(), ts,
                batch.column("endpoint").to_pylist(), batch.column("frame").to_pylist(),
                strict=True))


def raw_frames(data: Path) -> Iterator[RawFrame]:
    """Every raw frame under ``data``: each source in the order it was received, the
    sources interleaved by ``ts_recv`` (a merge never reorders frames of one source)."""
    streams = [_read_source(src, files) for src, files in raw_sources(data).items()]
    return heapq.merge(*streams, key=lambda f: f.ts)


class _Session:
    """Per-connection parsing state (the exchange's replay session) and its books."""

    def __init__(self, exchange: str, endpoint: str) -> None:
        from recorder import exchanges

        replay = exchanges.get(exchange).replay_session(endpoint)
        self.decode = replay.decode
        self.parse = replay.parse
        self.books = BookKeeper(replay.book_rule)


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
    sessions: dict[tuple[str, int], _Session] = {}
    latest: dict[str, int] = {}
    update_id = 0
    next_checkpoint: int | None = None
    for n, (source, exchange, conn_id, ts, endpoint, frame) in enumerate(raw_frames(data), 1):
        if checkpoint_us:
            if next_checkpoint is None:
                next_checkpoint = ts + checkpoint_us
            elif ts >= next_checkpoint:
                for s in sessions.values():
                    out["book_checkpoints"].extend(s.books.checkpoint_rows())
                next_checkpoint = ts + checkpoint_us
        # A connection's REST answers (a token, a book snapshot) are recorded with their
        # own endpoint under the connection's id: one session per id.
        key = (source, conn_id)
        session = sessions.get(key)
        if session is None:
            if conn_id > latest.get(source, conn_id - 1):
                # A collector runs one connection at a time and numbers them upwards: its
                # earlier connections are over, so their books can go.
                for old in [k for k in sessions if k[0] == source and k[1] < conn_id]:
                    del sessions[old]
                latest[source] = conn_id
            session = sessions[key] = _Session(exchange, endpoint)
        update_id += 1
        book, events = out["book"], out["events"]
        start, events_start = len(book), len(events)
        try:
            msg = session.decode(frame.encode())
            session.parse(msg, ts, update_id, out)
            for i in range(events_start, len(events)):
                events[i] = with_conn_id(events[i], conn_id)
        except Exception as e:  # noqa: BLE001 - a bad frame is an event, not the end
            out["events"].append(event(exchange, ts, "malformed", conn_id=conn_id,
                                       detail=f'{{"error":"{type(e).__name__}"}}'))
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


def renormalize_to(data: Path, out: Path, progress: Callable[[int], None] | None = None,
                   checkpoint_us: int = 60_000_000) -> dict[str, int]:
    """``renormalize`` into the data directory ``out``: one sink per exchange found."""
    import os

    from sinks.parquet_sink import ParquetSink

    sinks: dict[str, ParquetSink] = {}

    def write(table: str, rows: list[tuple]) -> None:
        by_exchange: dict[str, list[tuple]] = {}
        for row in rows:
            by_exchange.setdefault(row[0], []).append(row)
        for exchange, part in by_exchange.items():
            sink = sinks.get(exchange)
            if sink is None:
                sink = sinks[exchange] = ParquetSink(
                    out, exchange, source=f"renormalize-{exchange}-{os.getpid()}")
            sink.write(table, part)

    try:
        return renormalize(data, write, progress, checkpoint_us=checkpoint_us)
    finally:
        for sink in sinks.values():
            sink.close()
