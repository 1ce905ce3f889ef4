"""Journal segments: the durable copy of rows that are not in a finished Parquet file yet.

A segment is an Arrow IPC stream (zstd-compressed buffers) holding every batch of one future
Parquet file. Batches are serialised in memory on arrival and written + fsynced together
once per journal interval, so a kill -9 loses at most about one interval. If a write or
fsync fails (disk full, I/O error) the file is cut back to the last synced length and the
unsynced bytes stay in memory for the next attempt, so a segment never holds a gap.

The writer holds an exclusive ``flock`` on its segment until the segment is finalized:
recovery run by another process skips segments whose owner is alive.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from recorder.core.schema import arrow_schema
from sinks.layout import SEGMENT_SUFFIX, fsync_dir, journal_dir, segment_path
from sinks.parquet_format import META_PREFIX, file_metadata

# Compressed in the writer thread itself: Arrow's thread pool only adds hand-overs when the
# collector has one core to itself (a tenth of the writer thread's time at full speed).
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd", use_threads=False)
_SEGMENT_KEYS = ("exchange", "date", "source", "seq", "segment", "window_start_us",
                 "window_end_us")  # fmt: skip


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """What a segment will become: stored in its schema metadata so that recovery needs
    nothing but the file."""

    table: str
    exchange: str
    date: str
    source: str
    seq: int
    segment: str  # unique name of this segment (file stem)
    window_start_us: int
    window_end_us: int

    def metadata(self) -> dict[str, str]:
        return file_metadata(self.table, **{k: str(getattr(self, k)) for k in _SEGMENT_KEYS})

    @classmethod
    def from_metadata(cls, raw: dict[bytes, bytes]) -> SegmentInfo:
        meta = {k.decode(): v.decode() for k, v in raw.items()}

        def get(key: str) -> str:
            return meta[META_PREFIX + key]

        return cls(
            table=get("table"), exchange=get("exchange"), date=get("date"),
            source=get("source"), seq=int(get("seq")), segment=get("segment"),
            window_start_us=int(get("window_start_us")), window_end_us=int(get("window_end_us")),
        )  # fmt: skip


class _Spool:
    """File-like sink that keeps what the IPC writer produces, so that we decide when and
    how the bytes hit the disk."""

    def __init__(self) -> None:
        self.closed = False
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> list[bytes]:
        parts, self.parts, self.size = self.parts, [], 0
        return parts


def lock_nowait(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class SegmentWriter:
    """Appends batches to one segment; ``sync`` makes them durable."""

    def __init__(self, root: Path, info: SegmentInfo) -> None:
        self.info = info
        self.path = segment_path(root, info.table, info.segment)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            lock_nowait(self.fd)
            fsync_dir(self.path.parent)
        except OSError:
            self._discard()
            raise
        self.schema = arrow_schema(info.table).with_metadata(info.metadata())
        self._spool = _Spool()
        self._ipc = pa.ipc.new_stream(self._spool, self.schema, options=IPC_OPTIONS)
        self._pending: list[bytes] = []  # serialised, not yet durable
        self._pending_rows = 0
        self.synced_bytes = 0
        self.synced_rows = 0
        self.rows = 0
        self.first_us: int | None = None
        self.last_us: int | None = None

    @property
    def size(self) -> int:
        return self.synced_bytes + sum(map(len, self._pending)) + self._spool.size

    @property
    def finishing(self) -> bool:
        return self._spool.closed

    @property
    def dirty(self) -> bool:
        return bool(self._pending) or self._spool.size > 0

    def append(self, batch: pa.RecordBatch) -> None:
        self._ipc.write_batch(batch)
        self._pending.extend(self._spool.take())
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows

    def sync(self) -> int:
        """Write and fsync what was appended; return the rows made durable."""
        if not self._pending:
            return 0
        try:
            offset = self.synced_bytes
            for part in self._pending:
                view = memoryview(part)
                while view:
                    n = os.pwrite(self.fd, view, offset)
                    offset += n
                    view = view[n:]
            os.fsync(self.fd)
        except OSError:
            # Leave no torn or unsynced bytes behind: the next attempt rewrites them all.
            try:
                os.ftruncate(self.fd, self.synced_bytes)
            except OSError:
                pass
            raise
        done = self._pending_rows
        self.synced_bytes = offset
        self.synced_rows += done
        self._pending, self._pending_rows = [], 0
        return done

    def finish(self) -> None:
        """Add the end-of-stream marker and make everything durable. The lock is kept
        until ``release``: the segment still belongs to us while it is being finalized."""
        if not self._spool.closed:
            self._ipc.close()
            self._spool.closed = True
            self._pending.extend(self._spool.take())
        self.sync()

    def release(self) -> None:
        os.close(self.fd)
        self.fd = -1

    def _discard(self) -> None:
        os.close(self.fd)
        try:
            self.path.unlink()
        except OSError:
            pass


@dataclass
class SegmentRead:
    info: SegmentInfo | None
    schema: pa.Schema | None = None  # as written, without metadata
    rows: int = 0
    torn_bytes: int = 0  # bytes after the last complete batch (a crash mid-write)


def read_segment(path: Path, result: SegmentRead | None = None) -> Iterator[pa.RecordBatch]:
    """Yield the complete batches of a segment, stopping quietly at a torn tail.

    Reads with plain reads, not a memory map: a live writer may cut its file back after a
    failed write, and a mapped page past the end would kill the reader with SIGBUS.
    """
    size = path.stat().st_size
    with pa.OSFile(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowInvalid, OSError):
            if result is not None:
                result.torn_bytes = size
            return
        if result is not None:
            result.info = SegmentInfo.from_metadata(reader.schema.metadata or {})
            result.schema = reader.schema.remove_metadata()
        good = source.tell()
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                good = size
                break
            except (pa.ArrowInvalid, OSError):
                break
            good = source.tell()
            if result is not None:
                result.rows += batch.num_rows
            yield batch.replace_schema_metadata(None)
        if result is not None:
            result.torn_bytes = size - good


def segment_files(root: Path, table: str | None = None) -> list[Path]:
    base = journal_dir(root, table)
    if not base.is_dir():
        return []
    pattern = f"*{SEGMENT_SUFFIX}" if table else f"*/*{SEGMENT_SUFFIX}"
    return sorted(base.glob(pattern))
