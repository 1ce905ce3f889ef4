"""Turn a journal segment into a finished Parquet file, atomically; recover leftovers.

The same code finalizes a segment after rotation and recovers one after a crash, so the
crash path is exercised on every rotation. Steps, each safe to interrupt:

1. stream the segment into ``.<segment>.parquet.tmp`` in the partition, row groups of
   ``row_group_rows``, and fsync it;
2. rename it to its final name (no-clobber) and fsync the directory;
3. delete the segment and fsync the journal directory.

A crash before 2 leaves the segment, which the next recovery finalizes again (the stale
``.tmp`` is removed). A crash between 2 and 3 leaves both: recovery finds a final file
carrying the segment's id and only deletes the segment, so rows are never duplicated.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from sinks.journal import SegmentInfo, SegmentRead, lock_nowait, read_segment, segment_files
from sinks.layout import (
    TMP_SUFFIX,
    fsync_dir,
    fsync_file,
    parquet_name,
    partition_dir,
    tmp_path,
)
from sinks.parquet_format import parquet_writer, read_file_metadata

log = logging.getLogger(__name__)

ProblemHook = Callable[[str, dict], None]


@dataclass
class Finalized:
    segment: Path
    path: Path | None  # None: the segment held no complete row
    rows: int
    bytes: int
    torn_bytes: int = 0
    info: SegmentInfo | None = None
    already_done: bool = False  # found finished by an earlier, interrupted finalize


def finalize_segment(segment: Path, root: Path, *, row_group_rows: int = 100_000) -> Finalized:
    """Write ``segment`` as a Parquet file under ``root`` and delete it. The caller holds
    the segment's lock. Raises OSError (leaving the segment in place) if it cannot."""
    read = SegmentRead(info=None)
    batches = read_segment(segment, read)
    first = next(batches, None)
    info = read.info
    if first is None or info is None or read.schema is None:
        if read.torn_bytes and info is None:
            # Not even a readable header: keep the bytes for a human, out of the journal.
            os.replace(segment, segment.with_suffix(".corrupt"))
            fsync_dir(segment.parent)
        else:
            _unlink_durably(segment)
        return Finalized(segment, None, 0, 0, read.torn_bytes, info)
    partition = partition_dir(root, info.table, info.exchange, info.date)
    done = _already_finalized(partition, info)
    if done is not None:
        _unlink_durably(segment)
        return Finalized(segment, done, 0, 0, read.torn_bytes, info, already_done=True)
    partition.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(partition, info.segment)
    try:
        rows, first_us, last_us = _write_parquet(
            tmp, info, read.schema, _chain(first, batches), row_group_rows
        )
        size = tmp.stat().st_size  # before publishing: an uploader may take the file away
        final = _publish(tmp, partition, parquet_name(first_us, last_us, info.source, info.seq))
    except BaseException:
        _remove_quietly(tmp)
        raise
    _unlink_durably(segment)
    return Finalized(segment, final, rows, size, read.torn_bytes, info)


def _write_parquet(
    tmp: Path, info: SegmentInfo, schema: pa.Schema, batches: Iterator[pa.RecordBatch], group: int
) -> tuple[int, int, int]:
    """Stream batches into row groups of ``group`` rows; memory holds one row group."""
    rows = 0
    first_us = last_us = None
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    writer = parquet_writer(tmp, info.table, info.metadata(), schema)
    try:
        for batch in batches:
            lo, hi = _ts_range(batch)
            if lo is not None:
                first_us = lo if first_us is None else min(first_us, lo)
                last_us = hi if last_us is None else max(last_us, hi)
            pending.append(batch)
            pending_rows += batch.num_rows
            rows += batch.num_rows
            while pending_rows >= group:
                table = pa.Table.from_batches(pending)
                writer.write_table(table.slice(0, group), row_group_size=group)
                rest = table.slice(group)
                pending, pending_rows = rest.to_batches(), rest.num_rows
        if pending_rows:
            writer.write_table(pa.Table.from_batches(pending), row_group_size=group)
    finally:
        writer.close()
    fsync_file(tmp)
    if first_us is None:  # every ts_recv null: name the file after its rotation window
        first_us, last_us = info.window_start_us, info.window_end_us - 1
    return rows, first_us, last_us


def _chain(first, rest):
    yield first
    yield from rest


def _ts_range(batch: pa.RecordBatch) -> tuple[int | None, int | None]:
    col = batch.column(batch.schema.get_field_index("ts_recv"))
    mm = pc.min_max(col.view(pa.int64()))
    return mm["min"].as_py(), mm["max"].as_py()


def publish_file(tmp: Path, partition: Path, name: str) -> Path:
    """Rename the complete, fsynced ``tmp`` into ``partition`` as ``name`` (or the next free
    ``-N`` name), never replacing an existing file; the directory is fsynced."""
    return _publish(tmp, partition, name)


def _publish(tmp: Path, partition: Path, name: str) -> Path:
    """Rename into place without ever replacing an existing file."""
    stem = name.removesuffix(".parquet")
    for attempt in range(1000):
        final = partition / (name if attempt == 0 else f"{stem}-{attempt}.parquet")
        try:
            os.link(tmp, final)  # fails if ``final`` exists, unlike rename
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            if final.exists():
                continue
            os.rename(tmp, final)
            fsync_dir(partition)
            return final
        os.unlink(tmp)
        fsync_dir(partition)
        return final
    raise FileExistsError(f"no free file name for {name} in {partition}")


def _already_finalized(partition: Path, info: SegmentInfo) -> Path | None:
    if not partition.is_dir():
        return None
    for path in partition.glob(f"*-{info.source}-{info.seq:04d}*.parquet"):
        try:
            if read_file_metadata(path).get("segment") == info.segment:
                return path
        except (OSError, pa.ArrowInvalid):
            continue
    return None


def _unlink_durably(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


# --- recovery ---------------------------------------------------------------------------------


@dataclass
class Recovery:
    finalized: list[Finalized] = field(default_factory=list)
    skipped_live: list[Path] = field(default_factory=list)  # owned by a running writer
    failed: list[tuple[Path, str]] = field(default_factory=list)
    removed_tmp: list[Path] = field(default_factory=list)


def recover(
    root: Path, *, row_group_rows: int = 100_000, on_problem: ProblemHook | None = None
) -> Recovery:
    """Finalize every journal segment left behind by a writer that is gone, then remove
    stale temporary Parquet files. Safe to run while other writers use the same root."""
    root = Path(root)
    out = Recovery()
    for segment in segment_files(root):
        fd = _open_if_abandoned(segment)
        if fd is None:
            out.skipped_live.append(segment)
            continue
        try:
            result = finalize_segment(segment, root, row_group_rows=row_group_rows)
            out.finalized.append(result)
            if result.torn_bytes:
                log.warning("journal %s ended in a torn write: %d bytes dropped, %d rows kept",
                            segment.name, result.torn_bytes, result.rows)
        except (OSError, pa.ArrowException, KeyError, ValueError) as e:
            out.failed.append((segment, repr(e)))
            log.error("cannot recover journal %s: %s", segment, e)
            if on_problem:
                on_problem("journal_recovery_failed", {"segment": str(segment), "error": str(e)})
        finally:
            os.close(fd)
    live = {p.stem for p in segment_files(root)}
    for tmp in root.glob(f"*/exchange=*/date=*/.*{TMP_SUFFIX}"):
        if tmp.name[1 : -len(TMP_SUFFIX)] in live:
            continue  # a running writer's finalize in progress
        try:
            tmp.unlink()
            out.removed_tmp.append(tmp)
        except FileNotFoundError:
            pass  # finished and renamed meanwhile
        except OSError as e:
            out.failed.append((tmp, str(e)))
    return out


def _open_if_abandoned(segment: Path) -> int | None:
    """Lock ``segment`` if no live process holds it; None if one does (or it vanished)."""
    try:
        fd = os.open(segment, os.O_RDONLY)
    except FileNotFoundError:
        return None
    if lock_nowait(fd):
        try:
            # The previous holder may have finished and deleted it between open and lock.
            if os.stat(segment).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
    os.close(fd)
    return None
