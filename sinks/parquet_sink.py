"""ParquetSink: rows in, crash-safe journal, rotating Parquet files out.

    write() --> per-table buffer --> Arrow batch --> bounded RowQueue --> writer thread
                                   (caller's thread)                     --> journal segments
                                                                      \\--> publisher thread
                                                                             --> Parquet

``write`` appends to a list; every ``flush_rows`` rows, and on ``tick`` once per journal
interval, the buffered rows become an Arrow batch in the caller's thread and the batch is
queued for the writer (blocking only when the queue is full: back-pressure, never an
unbounded buffer and never a silent drop). Rows are durable about one interval after
arrival. See docs/storage.md.

Why the conversion runs in the caller's thread and not in the writer: it is CPU work that
cannot block on the disk, and handing hundreds of thousands of Python row tuples a second
to another thread cost more than converting them (measured: 7.8 -> 7.05 us of CPU a Kraken
v1 frame, docs/performance.md). The writer keeps everything that can block or fail on I/O.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from recorder.core.schema import TABLES
from sinks.convert import Problem, rows_to_batch
from sinks.finalize import Recovery, recover
from sinks.incidents import IncidentFile, take_abandoned
from sinks.layout import check_name, host_name, journal_dir, safe_token
from sinks.publisher import MAX_WAITING, Publisher
from sinks.reporting import OnProblem, Reporter
from sinks.row_queue import RowQueue
from sinks.stats import Stats
from sinks.writer import Writer, WriterConfig

MiB = 1 << 20
log = logging.getLogger("sinks")


class SinkError(OSError):
    """The sink cannot do its job at all (for example: the data directory is read-only)."""


class SinkUnavailable(SinkError):
    """The data directory cannot be written *for now*: the disk or quota is full, or an I/O
    error that may pass. Retrying later can succeed (``recorder collect`` exits 75 and the
    supervisor retries with backoff), unlike a plain ``SinkError``."""


# Conditions that can pass without anyone changing the configuration. Anything else at
# start-up (EACCES, EPERM, EROFS, ENOTDIR, ENOENT...) needs a human: a permanent error.
TRANSIENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EAGAIN, errno.EINTR,
    errno.ENOMEM, errno.EBUSY, errno.ESTALE, errno.ETIMEDOUT, errno.ENOBUFS, errno.EMFILE,
    errno.ENFILE,
})  # fmt: skip


def is_transient(e: OSError) -> bool:
    return e.errno in TRANSIENT_ERRNOS


class ParquetSink:
    def __init__(
        self,
        root: Path | str,
        exchange: str,
        *,
        rotate_seconds: float = 3600,
        max_file_bytes: int = 256 * MiB,
        row_group_rows: int = 100_000,
        journal_interval: float = 1.0,
        source: str | None = None,
        on_problem: OnProblem | None = None,
        clock: Callable[[], float] = time.time,
        max_queued_rows: int = 131_072,
        flush_rows: int = 16_384,
        late_seconds: float = 2.0,
        retry_interval: float = 1.0,
        recover_on_start: bool = True,
        max_publish_waiting: int = MAX_WAITING,
        host: str | None = None,
    ) -> None:
        """``source`` names this writer in file names (default ``<host>-<pid>``).
        ``max_queued_rows`` bounds the rows waiting for the writer thread (as Arrow batches,
        about 100 B a book row); ``flush_rows`` is the size of the chunks handed to it.
        ``late_seconds``: how long after its window ends a file waits for late rows.
        ``max_publish_waiting``: retired files waiting for the publisher before the writer
        blocks (back-pressure). ``host`` fills the ``host`` column of events rows that have
        none (default: ``sinks.layout.host_name()``)."""
        if rotate_seconds <= 0 or journal_interval <= 0 or max_file_bytes <= 0:
            raise ValueError("rotate_seconds, journal_interval and max_file_bytes must be > 0")
        if row_group_rows <= 0 or max_queued_rows <= 0 or flush_rows <= 0:
            raise ValueError("row_group_rows, max_queued_rows and flush_rows must be > 0")
        self.root = Path(root)
        self.exchange = check_name("exchange", exchange)
        self.host = safe_token(host) if host else host_name()
        self.source = safe_token(source or f"{self.host}-{os.getpid()}")
        self._clock = clock
        self._interval = journal_interval
        self._flush_rows = flush_rows
        self._incidents = self._probe_writable()

        self.stats_ = Stats()
        self.reporter = Reporter(self.exchange, on_problem, clock)
        self._report_incidents(self.source, self._incidents.inherited)
        self.recovery: Recovery | None = None
        if recover_on_start:
            self.recovery = recover(self.root, row_group_rows=row_group_rows)
            self._report_recovery(self.recovery)
            for source, incidents in take_abandoned(self.root):
                self._report_incidents(source, incidents)
        self._queue = RowQueue(max_queued_rows)
        self._publisher = Publisher(self.root, row_group_rows, self.reporter, self.stats_,
                                    retry_interval, max_publish_waiting)
        config = WriterConfig(
            root=self.root, exchange=self.exchange, source=self.source,
            rotate_us=max(1, round(rotate_seconds * 1_000_000)),
            # Rows can wait one journal interval in the buffer before the writer sees them.
            late_us=round(max(late_seconds, 2 * journal_interval) * 1_000_000),
            max_file_bytes=max_file_bytes,
            journal_interval=journal_interval, retry_interval=retry_interval,
            host=self.host,
        )  # fmt: skip
        self._writer = Writer(config, self._queue, self.reporter, self._publisher, self.stats_,
                              self._incidents)
        self._lock = threading.Lock()
        self._pending: dict[str, list[tuple]] = {}
        self._last_flush = clock()
        self._closed = False
        self._publisher.start()
        self._writer.start()

    # -- the collector's side --------------------------------------------------------------

    def write(self, table: str, rows: list[tuple]) -> None:
        """Take rows (tuples in ``TABLES[table]`` column order). Cheap: an append, except
        every ``flush_rows`` rows, when the chunk becomes an Arrow batch (about 13 ms for
        16,384 book rows) and is queued (blocking if the queue is full)."""
        if self._closed:
            raise RuntimeError("write() on a closed ParquetSink")
        if table not in TABLES:
            raise KeyError(f"unknown table {table!r}")
        if not rows:
            return
        with self._lock:
            buf = self._pending.get(table)
            if buf is None:
                buf = self._pending[table] = []
            buf.extend(rows)
            self.stats_.received[table] += len(rows)
            if len(buf) < self._flush_rows:
                return
            self._pending[table] = []
        self._hand_over(table, buf, self._now_us())

    def tick(self) -> None:
        """Call often (every ~100 ms): once per journal interval it hands every buffered row
        to the writer, which journals them and rotates files whose window has passed."""
        now = self._clock()
        if now - self._last_flush < self._interval:
            return
        self._last_flush = now
        self._flush_pending()
        self._enqueue(("tick", now), 0)

    def flush(self, timeout: float | None = None) -> bool:
        """Journal everything written so far and wait until files already due are
        published. True if that happened within ``timeout``."""
        self._flush_pending()
        done = threading.Event()
        self._enqueue(("barrier", done), 0)
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Finish every file (journal -> Parquet, atomically). With a ``timeout`` (a disk
        that stays full), give up after it: journaled rows stay for the next recovery; rows
        not journaled yet are lost and reported. True if everything was finished."""
        if self._closed:
            return not self._writer.is_alive() and not self._publisher.is_alive()
        try:
            self._flush_pending()
        except SinkError:
            pass  # the writer died: its incident says so; finish what can be finished
        self._closed = True
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._queue.put(("stop", self._clock()), 0, timeout=timeout)
        except TimeoutError:
            pass
        self._writer.join(_left(deadline))
        if self._writer.died:  # it never passed the stop on: nothing else will
            self._publisher.put(("stop", self._clock()), timeout=_left(deadline))
        self._publisher.join(_left(deadline))
        if self._writer.is_alive() or self._publisher.is_alive():
            self._publisher.abandon.set()
            detail = {"rows_not_journaled": self._not_journaled(),
                      "error": self.stats_.write_error}
            # Nothing can store an events row now: the incident file carries it to the
            # next start, which stores it (stamped now).
            self.reporter.problem("sink_close_incomplete", detail, level=logging.ERROR,
                                  event=False)
            self._incidents.record("close_incomplete", "sink_close_incomplete", detail,
                                   self._now_us())
            self._incidents.release()
            return False
        if self._writer.died:
            self._incidents.release()  # its sink_writer_died incident is for the next start
            return False
        self._incidents.remove()
        return True

    def stats(self) -> dict:
        s = self.stats_
        return {
            "rows_received": s.received_total(),
            "rows_journaled": dict(s.journaled),
            "rows_written": dict(s.written),
            "files_finalized": s.files_finalized,
            "rows_recovered": s.rows_recovered,  # from journals of an earlier run
            "files_open": self._writer.open_files,
            "files_publishing": self._publisher.waiting,
            "pending_rows": self._not_journaled(),
            "queued_rows": self._queue.rows,
            "backlog_rows": self._writer.backlog_rows,
            "bytes_journal": self._writer.open_bytes,
            "bytes_written": s.bytes_written,
            "blocked_seconds": round(s.blocked_seconds, 3),
            "problems": dict(self.reporter.counts),
            "write_error": s.write_error,
        }

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    def _flush_pending(self) -> None:
        with self._lock:
            chunks, self._pending = self._pending, {}
        now = self._now_us()
        for table, rows in chunks.items():
            if rows:
                self._hand_over(table, rows, now)

    def _hand_over(self, table: str, rows: list[tuple], arrival_us: int) -> None:
        """Convert ``rows`` to Arrow in chunks of ``flush_rows`` (they bound the queue and
        a file's overshoot) and queue them for the writer."""
        step = self._flush_rows
        for i in range(0, len(rows), step):
            chunk = rows if len(rows) <= step else rows[i : i + step]
            batch = self._convert(table, chunk, arrival_us)
            if batch is not None and batch.num_rows:
                self._enqueue(("batch", table, batch, arrival_us), batch.num_rows)

    def _convert(self, table: str, rows: list[tuple], arrival_us: int) -> pa.RecordBatch | None:
        try:
            batch, problems = rows_to_batch(table, rows)
        except Exception as e:  # noqa: BLE001 - a bug must not stop a weeks-long capture
            log.exception("sink conversion error")
            self.reporter.problem("sink_internal_error",
                                  {"error": repr(e), "table": table, "rows_lost": len(rows)},
                                  level=logging.ERROR)
            return None
        if problems:
            self._report_values(table, rows, problems, arrival_us)
        return batch

    def _report_values(self, table: str, rows: list, problems: list[Problem],
                       arrival_us: int) -> None:
        names = [c.name for c in TABLES[table]]
        sym = names.index("symbol") if "symbol" in names else None
        ts = names.index("ts_recv") if "ts_recv" in names else None
        for p in problems:
            row = rows[p.row]
            whole = isinstance(row, tuple | list) and len(row) == len(names)
            symbol = row[sym] if whole and sym is not None else None
            ts_us = row[ts] if whole and ts is not None else None
            self.reporter.problem(
                "value_unconvertible",
                {"table": table, "column": p.column, "text": p.text, "reason": p.reason},
                symbol=symbol if isinstance(symbol, str) else None, channel=table,
                ts_us=ts_us if type(ts_us) is int else arrival_us,
                event=table != "events",  # never report an events row with an events row
            )

    def _enqueue(self, item: tuple, rows: int) -> None:
        blocked = 0.0
        while True:
            if not self._writer.is_alive():
                raise SinkError("the sink's writer thread has stopped; see the log")
            try:  # never wait forever on a queue that a dead writer will not drain
                blocked += self._queue.put(item, rows, timeout=1.0)
                break
            except TimeoutError:
                blocked += 1.0
        if blocked > 0.001:
            self.stats_.blocked_seconds += blocked
        if blocked >= 1.0:
            self.reporter.problem("sink_backpressure", {"blocked_s": round(blocked, 3)})

    def _not_journaled(self) -> int:
        s = self.stats_
        return max(0, sum(s.received_total().values()) - sum(dict(s.journaled).values()))

    def _probe_writable(self) -> IncidentFile:
        """Fail now, with the path in the message, rather than at the first rotation. The
        probe is the incident file itself (created, filled, fsynced). A full disk or quota
        is ``SinkUnavailable`` (retry later), anything else ``SinkError``."""
        try:
            journal_dir(self.root).mkdir(parents=True, exist_ok=True)
            return IncidentFile(self.root, self.source)
        except BlockingIOError as e:  # EWOULDBLOCK is EAGAIN here: not a passing condition
            raise SinkError(f"the source {self.source} is in use by a running sink in "
                            f"{self.root}; give each collector its own name") from e
        except OSError as e:
            where = e.filename or self.root
            what = f"{e.strerror or e} ({where})"
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise SinkUnavailable(f"the data directory {self.root} is full (disk "
                                      f"full): {what}") from e
            if is_transient(e):
                raise SinkUnavailable(f"cannot write to the data directory {self.root} "
                                      f"for now: {what}") from e
            raise SinkError(f"cannot write to the data directory {self.root}: {what}") from e

    def _report_incidents(self, source: str, incidents: list) -> None:
        """Store what a process that is gone could not: its losses become events rows (and
        stay in this sink's incident file until those rows are journaled)."""
        self._incidents.carry(source, incidents)
        for i in incidents:
            detail = {**i.detail, "source": source, "reported": "at the next start"}
            self.reporter.problem(i.kind, detail, level=logging.WARNING, ts_us=i.ts_us)

    def _report_recovery(self, rec: Recovery) -> None:
        for f in rec.finalized:
            detail = {"segment": f.segment.name, "rows": f.rows, "torn_bytes": f.torn_bytes,
                      "file": str(f.path.relative_to(self.root)) if f.path else None}
            self.stats_.rows_recovered += f.rows
            self.reporter.problem("journal_recovered", detail, level=logging.WARNING,
                                  channel=f.info.table if f.info else None)
        for path, error in rec.failed:
            self.reporter.problem("journal_recovery_failed", {"path": str(path), "error": error},
                                  level=logging.ERROR)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
