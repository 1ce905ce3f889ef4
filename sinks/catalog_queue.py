"""Commits to the table catalog, from a durable queue (docs/storage.md, "Table catalog").

    publisher (a local data directory) ─┐   one small record per finished file
    uploader  (a store, after upload)  ─┴─► <root>/.catalog/pending/*.json ─► Committer thread
                                                                                │ add_files,
                                                                                ▼ one commit
                                                                         Iceberg table

A file is published (or uploaded) first and queued at once: the Hive layout never waits for
the catalog. The committer thread adds what is queued, a table's files in one commit, and
deletes the records only once the commit landed; a catalog that cannot be reached (a
PostgreSQL server down, a REST catalog refusing) leaves them queued, retried with backoff
(``catalog_commit_failed`` event at the first failure, ``catalog_commit_resumed`` after). A
record left by a process that died is taken by the next committer of the root. Several
processes share a root: each record is ``flock``ed while it is committed. A commit that
landed but whose records were not deleted yet (a crash in between) is not repeated: files
the table has already are left out (pyiceberg's duplicate check).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from recorder.core.backoff import Backoff
from sinks.catalog import Target
from sinks.journal import lock_nowait

log = logging.getLogger("sinks")

PENDING_DIR = Path(".catalog") / "pending"
MAX_BATCH = 500  # files per commit round


def pending_dir(root: Path) -> Path:
    return Path(root) / PENDING_DIR


def enqueue(root: Path, table: str, file_uri: str) -> Path:
    """Queue ``file_uri`` (a finished file of ``table``) for the catalog; durable when it
    returns (the record is fsynced: a crash after publishing cannot forget the file)."""
    folder = pending_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.json"
    tmp = folder / f".{name}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps({"table": table, "file": file_uri}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
    return folder / name


def pending_count(root: Path) -> int:
    folder = pending_dir(root)
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


class Committer(threading.Thread):
    """Commits the queued files of ``target.root`` to the catalog (see the module doc).
    ``reporter`` is the sink's (events); the catalog is opened on first use, so a catalog
    down at start-up delays commits, never the recording."""

    def __init__(self, target: Target, reporter: Any, *, interval: float = 1.0,
                 retry_initial: float = 1.0, retry_max: float = 60.0,
                 env: dict[str, str] | None = None, queue: Path | None = None) -> None:
        super().__init__(name="sink-catalog", daemon=True)
        self.target = target
        self.queue = Path(queue) if queue is not None else target.root  # holds .catalog/
        self.reporter = reporter
        self.interval = interval
        self.env = env
        self.backoff = Backoff(retry_initial, retry_max)
        self._tables: Any = None
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._lock = threading.Lock()  # one commit round at a time (thread or finish())
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.committed_files = 0
        self.commits = 0

    def add(self, table: str, rel: str) -> None:
        """Queue a finished file (``rel``: its path under the root) and wake the thread."""
        enqueue(self.queue, table, self.target.file_uri(rel))
        self._wake.set()

    def run(self) -> None:
        delay = 0.0
        while not self._halt.is_set():
            self._wake.wait(delay or self.interval)
            self._wake.clear()
            if self._halt.is_set():
                break
            delay = 0.0 if self.commit_pending() else self.backoff.next_delay()

    def finish(self, timeout: float) -> bool:
        """Stop the thread after one last round (at most ``timeout`` seconds of waiting for
        it); True if nothing is left queued. What is left goes at the next start."""
        self._halt.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)
        if self.is_alive():
            return False
        deadline = time.monotonic() + timeout
        ok = self.commit_pending(deadline=deadline)
        return ok and pending_count(self.queue) == 0

    # -- one round -------------------------------------------------------------------------

    def commit_pending(self, deadline: float | None = None) -> bool:
        """Commit what is queued (each table's files in one commit); False if a commit
        failed (the records stay, for the next round)."""
        with self._lock:
            return self._round(deadline)

    def _round(self, deadline: float | None) -> bool:
        folder = pending_dir(self.queue)
        if not folder.is_dir():
            return True
        held: list[tuple[int, Path, dict]] = []
        try:
            for path in sorted(folder.glob("*.json"))[:MAX_BATCH]:
                item = self._take(path)
                if item is not None:
                    held.append(item)
            if not held:
                return True
            by_table: dict[str, list[tuple[Path, str]]] = defaultdict(list)
            for _, path, rec in held:
                by_table[rec["table"]].append((path, rec["file"]))
            for table, items in by_table.items():
                if deadline is not None and time.monotonic() > deadline:
                    return False
                if not self._commit(table, items):
                    return False
            return True
        finally:
            for fd, _, _ in held:
                os.close(fd)

    def _take(self, path: Path) -> tuple[int, Path, dict] | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        if not lock_nowait(fd):
            os.close(fd)
            return None  # another process commits it
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(path)
            rec = json.loads(Path(path).read_text())
            if not isinstance(rec, dict) or "table" not in rec or "file" not in rec:
                raise ValueError("not a catalog record")
        except FileNotFoundError:
            os.close(fd)
            return None
        except (OSError, ValueError) as e:
            log.error("dropping unreadable catalog record %s: %s", path, e)
            path.unlink(missing_ok=True)
            os.close(fd)
            return None
        return fd, path, rec

    def _commit(self, table: str, items: list[tuple[Path, str]]) -> bool:
        uris = [u for _, u in items]
        try:
            if self._tables is None:
                from sinks.catalog import Tables

                self._tables = Tables(self.target, self.env)
            missing = [u for u in uris if not self._exists(u)]
            for u in missing:
                self.reporter.problem("catalog_file_missing", {"table": table, "file": u},
                                      level=logging.ERROR, channel=table)
            added = self._tables.append(table, [u for u in uris if u not in missing])
        except Exception as e:  # noqa: BLE001 - the catalog must never stop the recording
            self._failed(table, e)
            return False
        for path, _ in items:
            path.unlink(missing_ok=True)
        self.committed_files += added
        self.commits += 1
        if self.failing_since is not None:
            self.reporter.problem("catalog_commit_resumed", {
                "after_s": round(time.time() - self.failing_since, 3),
                "catalog": self.target.shown()})
            self.failing_since = None
            self.last_error = None
        self.backoff.reset()
        return True

    def _exists(self, uri: str) -> bool:
        """A queued file still there? (compacted away or deleted by hand: not committed).
        An unreachable store raises: the round fails and is retried."""
        return self._tables.exists(uri)

    def _failed(self, table: str, e: BaseException) -> None:
        text = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        self.last_error = text
        if self.failing_since is None:
            self.failing_since = time.time()
            self.reporter.problem("catalog_commit_failed", {
                "table": table, "catalog": self.target.shown(), "error": text},
                level=logging.ERROR)
        else:
            log.warning("catalog commit of %s still failing: %s", table, text)


def committer_for(root: Path, reporter: Any, *, uploads: bool = False) -> Committer | None:
    """The committer of ``root`` if its dataset has a catalog (``_catalog/catalog.json``),
    else None. A spool's files are committed by its uploader (``uploads=True``) once they
    are in the store, never by the publisher that writes them into the spool."""
    from recorder.core.location import read_marker
    from sinks.catalog import read_settings, target_for

    uri = read_settings(root)
    if uri is None or (read_marker(root) is not None) != uploads:
        return None
    return Committer(target_for(root, uri), reporter)

