"""Read what is journaled but not yet in a Parquet file, for queries about the last hour.

Rows show up here about one journal interval after they arrived. A segment is deleted just
after its Parquet file appears, so a reader racing with a rotation can, for a few
milliseconds, see the same rows in both places; ``Pending.segment`` matches the
``market_recorder.segment`` key of the finished file when exact de-duplication matters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from sinks.journal import SegmentRead, read_segment, segment_files


@dataclass(frozen=True)
class Pending:
    segment: str
    exchange: str
    date: str
    table: pa.Table


def pending_segments(root: Path | str, table: str) -> Iterator[Pending]:
    """Each journal segment of ``table`` under ``root`` that holds complete rows."""
    for path in segment_files(Path(root), table):
        read = SegmentRead(info=None)
        try:
            batches = list(read_segment(path, read))
        except FileNotFoundError:
            continue  # published between listing and reading
        if batches and read.info is not None:
            yield Pending(read.info.segment, read.info.exchange, read.info.date,
                          pa.Table.from_batches(batches))


def pending_batches(root: Path | str, table: str) -> Iterator[pa.Table]:
    """Journaled-but-not-finalized rows of ``table``, one Arrow table per segment, with the
    file's columns (the Hive ``exchange``/``date`` partition columns are not added)."""
    for pending in pending_segments(root, table):
        yield pending.table
