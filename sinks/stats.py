"""Counters shared by the sink's threads. Each counter is written by one thread only, so
no lock is needed; readers may see a value a moment old."""

from __future__ import annotations

from collections import defaultdict


class Stats:
    def __init__(self) -> None:
        self.received: dict[str, int] = defaultdict(int)  # accepted by write()
        self.own_events = 0  # events rows the sink wrote about itself
        self.journaled: dict[str, int] = defaultdict(int)  # durable in a journal segment
        self.written: dict[str, int] = defaultdict(int)  # in finished Parquet files
        self.files_finalized = 0
        self.bytes_written = 0
        self.rows_recovered = 0
        self.blocked_seconds = 0.0
        self.write_error: str | None = None

    def received_total(self) -> dict[str, int]:
        out = dict(self.received)
        if self.own_events:
            out["events"] = out.get("events", 0) + self.own_events
        return out

    def add_journaled(self, table: str, rows: int) -> None:
        if rows:
            self.journaled[table] += rows

    def add_file(self, table: str, rows: int, size: int) -> None:
        self.written[table] += rows
        self.files_finalized += 1
        self.bytes_written += size
