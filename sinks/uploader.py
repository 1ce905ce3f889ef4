"""Finished Parquet files from the local spool to the object store.

    ParquetSink (journal -> finished file in the spool) --> Uploader thread --> object store
                                                            (then deletes the local file)

The sink is unchanged: it writes a local directory, the spool (docs/storage.md). The uploader
scans the spool for finished files (``<table>/exchange=*/date=*/*.parquet``; files being
written are ``.tmp`` names it never sees), uploads the oldest first under the same relative
path (``S3Store.upload``: visible only complete), and deletes each local copy once it is in
the store. Several processes may share a spool (the collectors of one ``recorder run``, the
supervisor's events): each file is ``flock``ed while it is uploaded, so it goes up once.

- A failed upload is retried with capped, jittered backoff (1 s .. 60 s); the first failure
  of a streak is an ``upload_failed`` event, the first success after it ``upload_resumed``.
- The spool is bounded (``max_spool_bytes``, ``[output] spool_max_mb``): past it, the
  oldest market-data files are deleted (events files last), each one a ``spool_dropped``
  event with its rows. The journal of the files still open comes on top.
- ``finish(wait)`` (a clean stop): upload everything now, for at most ``wait`` seconds;
  what is left stays in the spool for the next start (``UploadingSink`` records it).
- ``<spool>/.upload/<source>.json`` says how uploads go, for ``recorder status``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder.core.backoff import Backoff
from recorder.core.schema import TABLES
from sinks.journal import lock_nowait
from sinks.layout import fsync_dir
from sinks.object_store import describe
from sinks.reporting import Reporter, event_row

log = logging.getLogger("sinks")

UPLOAD_DIR = ".upload"
STATE_EVERY = 2.0  # seconds between state-file updates while nothing changes


@dataclass(frozen=True)
class Waiting:
    path: Path
    rel: str
    table: str
    size: int
    ctime: float  # when it was published (link() sets it)


def waiting_files(root: Path) -> list[Waiting]:
    """Finished files in the spool, oldest first."""
    out = []
    for table in TABLES:
        folder = root / table
        if not folder.is_dir():
            continue
        for path in folder.glob("exchange=*/date=*/*.parquet"):
            if path.name.startswith("."):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # uploaded meanwhile
            out.append(Waiting(path, path.relative_to(root).as_posix(), table, st.st_size,
                               st.st_ctime))
    out.sort(key=lambda w: (w.ctime, w.rel))
    return out


def state_path(root: Path, source: str) -> Path:
    return root / UPLOAD_DIR / f"{source}.json"


def read_states(root: Path) -> list[dict]:
    out = []
    folder = root / UPLOAD_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


class Uploader(threading.Thread):
    def __init__(self, root: Path, store: Any, reporter: Reporter, *, source: str,
                 max_spool_bytes: int, retry_initial: float = 1.0, retry_max: float = 60.0,
                 scan_interval: float = 1.0, settle: float = 1.0) -> None:
        super().__init__(name="sink-uploader", daemon=True)
        self.root = Path(root)
        self.store = store
        self.reporter = reporter
        self.source = source
        self.max_spool_bytes = max_spool_bytes
        self.scan_interval = scan_interval
        self.settle = settle  # a file this young may still be in its publisher's hands
        self.backoff = Backoff(retry_initial, retry_max)
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._drained = threading.Event()
        self._draining = False
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.uploaded_files = 0
        self.uploaded_bytes = 0
        self.upload_seconds = 0.0
        self.last_upload_at: float | None = None
        self.dropped_files = 0
        self.dropped_bytes = 0
        self.waiting = 0
        self.waiting_bytes = 0
        self.oldest_waiting_at: float | None = None
        self._next_state = 0.0
        self._lock = threading.Lock()
        # A table catalog (``<spool>/_catalog/catalog.json``, sinks/catalog.py): each file
        # is queued for it once it is in the store, before the local copy goes.
        self.catalog = _committer(self.root, reporter)

    # -- the thread --------------------------------------------------------------------

    def run(self) -> None:
        if self.catalog is not None:
            self.catalog.start()
        delay = 0.0
        while not self._halt.is_set():
            if delay:
                self._wake.wait(delay)
                self._wake.clear()
            if self._halt.is_set():
                break
            draining = self._draining  # a cycle begun before finish() may skip young files
            try:
                done = self.cycle(settle=not draining)
            except Exception as e:  # noqa: BLE001 - uploads must never stop the recording
                log.exception("uploader error")
                self.reporter.problem("upload_internal_error", {"error": repr(e)},
                                      level=logging.ERROR)
                done = False
            if done:
                self.backoff.reset()
                delay = self.scan_interval
                if draining:
                    self._drained.set()
            else:
                delay = self.backoff.next_delay()
                if self._draining:  # finish() waits: retry soon
                    delay = min(delay, 0.5)
        self.write_state(force=True)

    def cycle(self, settle: bool = True, interruptible: bool = True) -> bool:
        """Upload what waits (oldest first) until one upload fails; False if one did. Files
        younger than ``settle`` seconds (with ``settle``) wait for the next turn."""
        files = self._enforce_quota(waiting_files(self.root))
        self._count(files)
        now = time.time()
        ok = True
        for w in files:
            if interruptible and self._halt.is_set():
                ok = False
                break
            if settle and now - w.ctime < self.settle:
                continue
            if not self._upload(w):
                ok = False
                break
        self._count(waiting_files(self.root))
        self.write_state(force=not ok)
        return ok

    # -- one file ----------------------------------------------------------------------

    def _upload(self, w: Waiting) -> bool:
        try:
            fd = os.open(w.path, os.O_RDONLY)
        except FileNotFoundError:
            return True  # another process uploaded it
        try:
            if not lock_nowait(fd):
                return True  # another process is uploading it
            try:
                if os.stat(w.path).st_ino != os.fstat(fd).st_ino:
                    return True
            except FileNotFoundError:
                return True
            try:
                up = self.store.upload(w.path, w.rel)
            except OSError as e:
                self._failed(w, e)
                return False
            if self.catalog is not None:
                # Queued (durably) before the local copy goes: a crash in between leaves
                # the file to upload again (found complete in the store) and queue then.
                self.catalog.add(w.table, up.rel)
            w.path.unlink(missing_ok=True)
            try:
                fsync_dir(w.path.parent)
            except OSError:
                pass
        finally:
            os.close(fd)
        with self._lock:
            self.uploaded_files += 1
            self.uploaded_bytes += up.bytes
            self.upload_seconds += up.seconds
            self.last_upload_at = time.time()
        if up.rel != w.rel:
            self.reporter.problem("upload_renamed", {"file": w.rel, "as": up.rel})
        if self.failing_since is not None:
            self.reporter.problem("upload_resumed", {
                "after_s": round(time.time() - self.failing_since, 3),
                "store": self.store.url})
            self.failing_since = None
            self.last_error = None
        return True

    def _failed(self, w: Waiting, e: OSError) -> None:
        text = describe(e)
        self.last_error = text
        if self.failing_since is None:
            self.failing_since = time.time()
            self.reporter.problem("upload_failed", {"file": w.rel, "store": self.store.url,
                                                    "error": text}, level=logging.ERROR)
        else:
            log.warning("upload of %s still failing: %s", w.rel, text)

    # -- the quota ---------------------------------------------------------------------

    def _enforce_quota(self, files: list[Waiting]) -> list[Waiting]:
        total = sum(w.size for w in files)
        if total <= self.max_spool_bytes:
            return files
        dropped: set[Path] = set()
        # The oldest market data goes first; events (the record of gaps) last.
        for w in sorted(files, key=lambda w: (w.table == "events", w.ctime)):
            if total <= self.max_spool_bytes:
                break
            rows = self._drop(w)
            if rows is None:
                continue
            dropped.add(w.path)
            total -= w.size
            with self._lock:
                self.dropped_files += 1
                self.dropped_bytes += w.size
            self.reporter.problem("spool_dropped", {
                "file": w.rel, "table": w.table, "rows": rows, "bytes": w.size,
                "spool_bytes": total, "spool_max_bytes": self.max_spool_bytes,
                "store": self.store.url}, level=logging.ERROR, channel=w.table)
        return [w for w in files if w.path not in dropped]

    def _drop(self, w: Waiting) -> int | None:
        """Delete a waiting file (unless another process holds it); its row count."""
        import pyarrow.parquet as pq

        try:
            fd = os.open(w.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if not lock_nowait(fd):
                return None
            try:
                rows = pq.read_metadata(w.path).num_rows
            except Exception:  # noqa: BLE001 - unreadable: still dropped, rows unknown
                rows = -1
            w.path.unlink(missing_ok=True)
            return rows
        finally:
            os.close(fd)

    # -- stopping ----------------------------------------------------------------------

    def finish(self, wait: float) -> list[Waiting]:
        """Upload everything in the spool now, for at most ``wait`` seconds, then stop the
        thread. Returns the files left in the spool."""
        self._draining = True
        self.backoff.reset()
        self._drained.clear()
        self._wake.set()
        if self.is_alive():
            self._drained.wait(wait)
        self._halt.set()
        self._wake.set()
        if self.is_alive():
            self.join(max(1.0, min(wait, 5.0)))
        left = waiting_files(self.root)
        self._count(left)
        self.write_state(force=True)
        if self.catalog is not None:
            self.catalog.finish(max(1.0, min(wait, 3.0)))
        return left

    # -- state -------------------------------------------------------------------------

    def _count(self, files: list[Waiting]) -> None:
        with self._lock:
            self.waiting = len(files)
            self.waiting_bytes = sum(w.size for w in files)
            self.oldest_waiting_at = min((w.ctime for w in files), default=None)

    def snapshot(self) -> dict:
        with self._lock:
            rate = (self.uploaded_bytes / self.upload_seconds / 1e6
                    if self.upload_seconds > 0 else None)
            return {
                "store": self.store.url, "source": self.source, "pid": os.getpid(),
                "updated_at": time.time(), "running": self.is_alive() and not self._halt.is_set(),
                "uploaded_files": self.uploaded_files, "uploaded_bytes": self.uploaded_bytes,
                "upload_mb_s": round(rate, 2) if rate is not None else None,
                "last_upload_at": self.last_upload_at, "failing_since": self.failing_since,
                "last_error": self.last_error, "waiting_files": self.waiting,
                "waiting_bytes": self.waiting_bytes,
                "oldest_waiting_at": self.oldest_waiting_at,
                "dropped_files": self.dropped_files, "dropped_bytes": self.dropped_bytes,
                "spool_max_bytes": self.max_spool_bytes,
            }

    def write_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_state:
            return
        self._next_state = now + STATE_EVERY
        path = state_path(self.root, self.source)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(self.snapshot()))
            os.replace(tmp, path)
        except OSError as e:  # a full disk must not stop the uploads
            log.debug("cannot write %s: %s", path, e)


def _committer(root: Path, reporter: Reporter):  # noqa: ANN202 - Committer | None
    from sinks.catalog import settings_path

    if not settings_path(root).exists():
        return None  # no catalog: pyiceberg is never imported
    from sinks.catalog_queue import committer_for

    return committer_for(root, reporter, uploads=True)


class UploadingSink:
    """A ``ParquetSink`` whose finished files go to the object store: ``write``/``tick``/
    ``flush`` pass through; ``close`` finishes every file, then uploads for at most
    ``upload_wait`` seconds. Files still in the spool then (the store is down) are recorded
    by an ``upload_pending_at_stop`` event, in a small events file of its own in the spool,
    and go up at the next start."""

    def __init__(self, sink: Any, uploader: Uploader, upload_wait: float = 8.0) -> None:
        self.sink = sink
        self.uploader = uploader
        self.upload_wait = upload_wait
        uploader.start()

    def write(self, table: str, rows: list[tuple]) -> None:
        self.sink.write(table, rows)

    def tick(self) -> None:
        self.sink.tick()

    def flush(self, timeout: float | None = None) -> bool:
        return self.sink.flush(timeout)

    def stats(self) -> dict:
        out = self.sink.stats()
        out["upload"] = self.uploader.snapshot()
        return out

    def close(self, timeout: float | None = None) -> bool:
        ok = self.sink.close(timeout)
        t0 = time.monotonic()
        left = self.uploader.finish(self.upload_wait)
        # The sink's writer is gone: what the uploader reported since goes into a file of
        # its own, with the count of files left behind.
        rows = self.sink.reporter.take()
        if left:
            detail = {"files": len(left), "bytes": sum(w.size for w in left),
                      "spool": str(self.uploader.root), "store": self.uploader.store.url,
                      "error": self.uploader.last_error,
                      "waited_s": round(time.monotonic() - t0, 3)}
            log.error("the store is not reachable: %d file(s) stay in the spool %s and go up "
                      "at the next start", len(left), self.uploader.root)
            rows.append(event_row(self.sink.exchange, int(time.time() * 1_000_000),
                                  "upload_pending_at_stop", detail))
        if rows:
            self._store_late_events(rows, upload=not left)
        return ok

    def _store_late_events(self, rows: list[tuple], upload: bool) -> None:
        from sinks.parquet_sink import ParquetSink

        try:
            late = ParquetSink(self.uploader.root, self.sink.exchange,
                               source=f"{self.sink.source}-stop", recover_on_start=False,
                               journal_interval=0.2, host=self.sink.host)
            late.write("events", rows)
            late.close(timeout=2.0)
        except OSError as e:
            log.error("cannot record %d events at stop: %s", len(rows), e)
            return
        if upload:  # the store was reachable a moment ago: one quick try
            try:
                self.uploader.cycle(settle=False, interruptible=False)
            except Exception:  # noqa: BLE001 - it stays in the spool for the next start
                log.exception("uploading the last events file failed")

    def __enter__(self) -> UploadingSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)
