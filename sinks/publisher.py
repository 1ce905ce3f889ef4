"""The publisher thread: turns retired journal segments into Parquet files, in order.

It runs apart from the writer so that compressing an hour of data never delays the
journaling of new rows. A failure leaves the segment in place (its rows are durable) and is
retried with backoff; abandoning it (at a timed-out close) leaves it to the next recovery.

Its queue is bounded (``MAX_WAITING``): when that many segments wait (a publish failing
for a long time), ``put`` blocks the writer thread, which then takes no rows, so the
sink's bounded queue pushes back on the collector. Each waiting segment costs an open file
descriptor and a few hundred bytes: its rows are on disk already.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import pyarrow as pa

from sinks.finalize import finalize_segment
from sinks.heap import trim
from sinks.journal import SegmentWriter
from sinks.reporting import Reporter
from sinks.stats import Stats

MAX_RETRY_SECONDS = 30.0
CATALOG_STOP_WAIT = 3.0  # at a clean stop, seconds of commits to the catalog at most
MAX_WAITING = 64  # retired segments (and control items) waiting to be published


class Publisher(threading.Thread):
    def __init__(self, root: Path, row_group_rows: int, reporter: Reporter, stats: Stats,
                 retry_interval: float = 1.0, max_waiting: int = MAX_WAITING) -> None:
        super().__init__(name="sink-publisher", daemon=True)
        self.root = root
        self.row_group_rows = row_group_rows
        self.reporter = reporter
        self.stats = stats
        self.retry_interval = retry_interval
        self.abandon = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max_waiting)
        self.waiting = 0  # segments queued or being published
        self._lock = threading.Lock()
        # A data directory with a table catalog (sinks/catalog.py): every published file is
        # queued for it and committed by a thread of its own. Only the settings file is
        # read when there is none: pyiceberg is never imported then.
        self.catalog = _committer(root, reporter)

    def put(self, item: SegmentWriter | tuple, timeout: float | None = None) -> bool:
        """Queue a segment or a control item; blocks while ``max_waiting`` items wait (at
        most ``timeout`` seconds: False if it could not be queued)."""
        if isinstance(item, SegmentWriter):
            with self._lock:
                self.waiting += 1
        try:
            self._queue.put(item, timeout=timeout)
        except queue.Full:
            if isinstance(item, SegmentWriter):
                with self._lock:
                    self.waiting -= 1
            return False
        return True

    def run(self) -> None:
        if self.catalog is not None:
            self.catalog.start()
        while True:
            item = self._queue.get()
            if isinstance(item, SegmentWriter):
                try:
                    self._publish(item)
                except Exception as e:  # noqa: BLE001 - a dead publisher would block the writer
                    self.reporter.problem("parquet_finalize_failed",
                                          {"segment": str(item.path), "error": repr(e)},
                                          level=logging.ERROR)
                finally:
                    item.release()
                    with self._lock:
                        self.waiting -= 1
            elif item[0] == "barrier":
                item[1].set()
            elif item[0] == "stop":
                if self.catalog is not None and not self.catalog.finish(CATALOG_STOP_WAIT):
                    logging.getLogger("sinks").warning(
                        "catalog commits still queued at stop (next start commits them)")
                return

    def _publish(self, seg: SegmentWriter) -> None:
        trim()  # the rows of this segment are freed: give their pages back first
        delay = self.retry_interval
        failing = False
        while not self.abandon.is_set():
            try:
                done = finalize_segment(seg.path, self.root, row_group_rows=self.row_group_rows)
            except OSError as e:
                if not seg.path.exists():  # nothing left to publish: say so, do not spin
                    self.reporter.problem("journal_segment_missing", {"segment": seg.path.name},
                                          level=logging.ERROR)
                    return
                if not failing:
                    failing = True
                    self.reporter.problem(
                        "parquet_write_error",
                        {"segment": seg.path.name, "error": f"{e.strerror or e}"},
                        level=logging.ERROR)
                self.abandon.wait(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            except (pa.ArrowException, ValueError) as e:
                # Not a passing condition: keep the segment for recover() and move on.
                self.reporter.problem("parquet_finalize_failed",
                                      {"segment": str(seg.path), "error": repr(e)},
                                      level=logging.ERROR)
                return
            if failing:
                self.reporter.problem("parquet_write_resumed", {"segment": seg.path.name})
            if done.path is not None and not done.already_done:
                self.stats.add_file(seg.info.table, done.rows, done.bytes)
            if done.path is not None and self.catalog is not None:
                self._queue_for_catalog(seg.info.table, done.path)
            return

    def _queue_for_catalog(self, table: str, path: Path) -> None:
        try:
            self.catalog.add(table, path.relative_to(self.root).as_posix())
        except OSError as e:  # the file is published; `recorder iceberg` adds it later
            self.reporter.problem("catalog_queue_failed", {"file": path.name,
                                                           "error": f"{e.strerror or e}"},
                                  level=logging.ERROR)


def _committer(root: Path, reporter: Reporter):  # noqa: ANN202 - Committer | None
    from sinks.catalog import settings_path

    if not settings_path(root).exists():
        return None
    from sinks.catalog_queue import committer_for

    return committer_for(root, reporter)
