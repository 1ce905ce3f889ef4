"""Re-run today's parsers over frames recorded in the ``raw`` table.

A parser fix then applies to old recordings: the frames are read back in arrival order,
connection by connection, through the same adapters and book keeper as a live collector,
into a new data directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb

from recorder.book import BookKeeper
from recorder.kraken import v1, v2
from recorder.kraken.common import new_rows

_BATCH = 50_000


def raw_frames(data: Path) -> Iterator[tuple[int, int, str, str]]:
    """(conn_id, ts_recv µs, endpoint, frame) in the order the frames arrived."""
    pattern = str(data.resolve() / "raw" / "**" / "*.parquet").replace("'", "''")
    con = duckdb.connect()
    rel = con.sql(
        "SELECT conn_id, epoch_us(ts_recv) AS ts, endpoint, frame FROM read_parquet("
        f"'{pattern}', filename = true, file_row_number = true) "
        "ORDER BY filename, file_row_number")
    reader = rel.fetch_record_batch(_BATCH)
    for batch in reader:
        cols = batch.to_pydict()
        yield from zip(cols["conn_id"], cols["ts"], cols["endpoint"], cols["frame"],
                       strict=True)


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
                progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Parse every raw frame under ``data`` again; hand the rows to ``write(table, rows)``.

    Returns the number of rows produced per table. ``raw`` itself is not rewritten.
    """
    counts: dict[str, int] = {}
    out = new_rows()
    sessions: dict[tuple[int, str], _Session] = {}
    current: tuple[int, str] | None = None
    update_id = 0
    for n, (conn_id, ts, endpoint, frame) in enumerate(raw_frames(data), 1):
        key = (conn_id, endpoint)
        if key != current:
            sessions.pop(current, None)
            current = key
            sessions[key] = _Session(endpoint)
        session = sessions[key]
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
