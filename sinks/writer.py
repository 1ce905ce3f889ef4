"""The writer thread: journals queued batches and decides when files end.

Everything that touches the disk happens here, never in ``ParquetSink.write``, which only
converts rows to Arrow: CPU work that cannot block on I/O. When the disk refuses a write,
this thread stops taking batches (the bounded queue then pushes back on the collector),
keeps what it holds, and retries until the disk accepts it again.

Memory held here is bounded by that rule: ``_backlog`` (converted batches not yet in a
segment) is non-empty only after a failed write, and then no new inbox item is taken until
it has drained, so it holds at most one inbox chunk (``flush_rows``) plus the sink's own
event rows (bounded by the Reporter). Unsynced journal bytes are synced at
``max_unsynced_bytes``; retired segments wait in the Publisher's bounded queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from recorder.core.schema import column_index
from sinks.convert import rows_to_batch
from sinks.incidents import IncidentFile
from sinks.journal import SegmentInfo, SegmentWriter
from sinks.layout import day_of, partition_dir, window_of
from sinks.publisher import Publisher
from sinks.reporting import Reporter
from sinks.row_queue import RowQueue
from sinks.stats import Stats

log = logging.getLogger("sinks")


@dataclass(frozen=True)
class WriterConfig:
    root: Path
    exchange: str
    source: str
    rotate_us: int
    late_us: int  # how long past its window a file stays open for stragglers
    max_file_bytes: int
    journal_interval: float
    retry_interval: float = 1.0
    max_unsynced_bytes: int = 32 << 20
    host: str | None = None  # fills events.host where a row has none


class Writer(threading.Thread):
    def __init__(self, cfg: WriterConfig, inbox: RowQueue, reporter: Reporter,
                 publisher: Publisher, stats: Stats,
                 incidents: IncidentFile | None = None) -> None:
        super().__init__(name="sink-writer", daemon=True)
        self.cfg = cfg
        self.inbox = inbox
        self.reporter = reporter
        self.publisher = publisher
        self.stats = stats
        self.incidents = incidents  # problems the next start must report if we die
        self._carried_stored = False  # incidents taken over are in a stored events batch
        self.died = False
        self._open: dict[tuple[str, int], SegmentWriter] = {}
        self._seq = 0
        # Converted batches not yet in a segment, oldest first: (table, window start, batch).
        self._backlog: deque[tuple[str, int, pa.RecordBatch]] = deque()
        self._redo: tuple | None = None  # a control item interrupted by an I/O error
        self._failing_since: float | None = None
        self._last_sync = time.monotonic()
        self._last_error_report = 0.0

    # -- loop ------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while True:
                if self._failing_since is not None:
                    if not self._resume():
                        time.sleep(self.cfg.retry_interval)
                        continue
                    item, self._redo = self._redo, None
                else:
                    item = self.inbox.get(timeout=self.cfg.journal_interval)
                if self._handle(item):
                    return
        except BaseException as e:
            self.died = True
            # No thread is left to store an events row: the incident file carries it to
            # the next start. Rows still held here and in the queue are lost.
            detail = {"error": repr(e), "rows_held": self.backlog_rows + self.inbox.rows}
            self.reporter.problem("sink_writer_died", detail, level=logging.CRITICAL,
                                  event=False)
            if self.incidents is not None:
                self.incidents.record("writer_died", "sink_writer_died", detail,
                                      int(self.reporter.clock() * 1_000_000))
            raise

    def _handle(self, item: tuple | None) -> bool:
        """Process one inbox item; True once the sink is shut down."""
        try:
            if item is None:
                self._store_events()
                self._sync_if_due()
            elif item[0] == "batch":
                self._batch(*item[1:])
            elif item[0] == "tick":
                self._store_events()
                self._sync_all()
                self._rotate(int(item[1] * 1_000_000))
            elif item[0] == "barrier":
                self._store_events()
                self._sync_all()
                self.publisher.put(item)
            elif item[0] == "stop":
                self._store_events()
                for key in list(self._open):
                    self._retire(key)
                self.publisher.put(item)
                return True
        except OSError as e:
            if item is not None and item[0] != "batch":  # its rows are safe in the backlog
                self._redo = item
            self._failed(e)
        except Exception as e:  # noqa: BLE001 - a bug must not stop a weeks-long capture
            log.exception("sink writer error")
            self.reporter.problem("sink_internal_error", {"error": repr(e)},
                                  level=logging.ERROR)
        return False

    # -- batches ---------------------------------------------------------------------------

    def _batch(self, table: str, batch: pa.RecordBatch, arrival_us: int) -> None:
        self._enqueue(table, batch, arrival_us)
        self._store_events()
        self._drain()
        self._sync_if_due()

    def _store_events(self) -> None:
        rows = self.reporter.take()
        if not rows:
            return
        self.stats.own_events += len(rows)
        batch, problems = rows_to_batch("events", rows)
        for p in problems:
            log.error("sink event row unconvertible: %s", p)
        self._enqueue("events", batch, int(self.reporter.clock() * 1_000_000))
        self._drain()
        if self.incidents is not None and self.incidents.carrying:
            self._carried_stored = True  # taken over at start-up: in these rows

    def _enqueue(self, table: str, batch: pa.RecordBatch, arrival_us: int) -> None:
        """Split ``batch`` by rotation window of ``ts_recv`` (hence by UTC date too)."""
        if batch.num_rows == 0:
            return
        if table == "events" and self.cfg.host:
            batch = _with_host(batch, self.cfg.host)
        ts = batch.column(column_index(table, "ts_recv")).view(pa.int64())
        if ts.null_count:
            ts = pc.fill_null(ts, arrival_us)  # a row is filed under its arrival if need be
        bounds = pc.min_max(ts)
        start, end = window_of(bounds["min"].as_py(), self.cfg.rotate_us)
        if bounds["max"].as_py() < end:
            self._backlog.append((table, start, batch))
            return
        starts = pa.array([window_of(t, self.cfg.rotate_us)[0] for t in ts.to_pylist()])
        for s in pc.unique(starts).to_pylist():
            self._backlog.append((table, s, batch.filter(pc.equal(starts, s))))

    def _drain(self) -> None:
        while self._backlog:
            table, start, batch = self._backlog[0]
            seg = self._segment(table, start)
            seg.append(batch)
            self._backlog.popleft()
            if seg.size >= self.cfg.max_file_bytes:
                self._retire((table, start))

    # -- segments --------------------------------------------------------------------------

    def _segment(self, table: str, start: int) -> SegmentWriter:
        key = (table, start)
        seg = self._open.get(key)
        if seg is not None and not seg.finishing:
            return seg
        if seg is not None:  # its retirement was cut short by an I/O error: finish it first
            self._retire(key)
        _, end = window_of(start, self.cfg.rotate_us)
        date = day_of(start)
        while True:
            self._seq += 1
            name = f"{self.cfg.exchange}-{date}-{self.cfg.source}-{self._seq:04d}"
            info = SegmentInfo(table, self.cfg.exchange, date, self.cfg.source, self._seq,
                               name, start, end)
            partition = partition_dir(self.cfg.root, table, self.cfg.exchange, date)
            if any(partition.glob(f"*-{self.cfg.source}-{self._seq:04d}*.parquet")):
                # An earlier process with our source (a pid reused after a container
                # restart) published this segment id: the publisher would take our
                # segment for that file and delete it. Use the next seq.
                continue
            try:
                seg = SegmentWriter(self.cfg.root, info)
                break
            except FileExistsError:
                continue  # an unrecoverable leftover of an earlier process with our name
        self._open[key] = seg
        return seg

    def _retire(self, key: tuple[str, int]) -> None:
        """Make the segment complete and durable, then hand it over to be published."""
        seg = self._open[key]
        rows = seg.rows - seg.synced_rows
        seg.finish()
        self.stats.add_journaled(seg.info.table, rows)
        del self._open[key]
        self.publisher.put(seg)

    def _rotate(self, now_us: int) -> None:
        for key, seg in list(self._open.items()):
            if now_us >= seg.info.window_end_us + self.cfg.late_us:
                self._retire(key)

    def _sync_all(self) -> None:
        for seg in self._open.values():
            self.stats.add_journaled(seg.info.table, seg.sync())
        self._last_sync = time.monotonic()
        if self._carried_stored:  # their events rows are durable now
            self._carried_stored = False
            self.incidents.clear_carried()

    def _sync_if_due(self) -> None:
        unsynced = sum(s.size - s.synced_bytes for s in self._open.values())
        due = time.monotonic() - self._last_sync >= self.cfg.journal_interval
        if due or unsynced >= self.cfg.max_unsynced_bytes:
            self._sync_all()

    @property
    def backlog_rows(self) -> int:
        return sum(b.num_rows for _, _, b in list(self._backlog))

    @property
    def open_bytes(self) -> int:
        return sum(s.size for s in list(self._open.values()))

    @property
    def open_files(self) -> int:
        return len(self._open)

    # -- failures --------------------------------------------------------------------------

    def _failed(self, e: OSError) -> None:
        now = time.monotonic()
        self.stats.write_error = f"{e.strerror or e} ({e.filename or 'journal'})"
        if self._failing_since is None:
            self._failing_since = now
            self._last_error_report = now
            detail = {"error": self.stats.write_error}
            self.reporter.problem("sink_write_error", detail, level=logging.ERROR)
            if self.incidents is not None:  # the row above may never reach the disk
                self.incidents.record("write_error", "sink_write_error", detail,
                                      int(self.reporter.clock() * 1_000_000))
        elif now - self._last_error_report >= 60:
            self._last_error_report = now
            log.error("sink still cannot write (%.0f s): %s", now - self._failing_since,
                      self.stats.write_error)

    def _resume(self) -> bool:
        try:
            self._store_events()
            self._drain()
            self._sync_all()
        except OSError as e:
            self._failed(e)
            return False
        seconds = time.monotonic() - (self._failing_since or time.monotonic())
        self._failing_since = None
        self.stats.write_error = None
        if self.incidents is not None:  # its events row is durable now (synced above)
            self.incidents.clear("write_error")
        self.reporter.problem("sink_write_resumed", {"after_s": round(seconds, 3)},
                              level=logging.WARNING)
        return True


def _with_host(batch: pa.RecordBatch, host: str) -> pa.RecordBatch:
    """Events rows say where they happened: ``host`` where the row has none."""
    i = batch.schema.get_field_index("host")
    if i < 0 or batch.column(i).null_count == 0:
        return batch
    columns = list(batch.columns)
    columns[i] = pc.fill_null(columns[i], pa.scalar(host, batch.schema.field(i).type))
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)
