"""Losses that must become ``events`` rows even when this process cannot store them itself.

Some problems strike exactly when the sink cannot write an events row: the disk is full
(``sink_write_error``), the writer thread died (``sink_writer_died``), ``close`` timed out
with rows never journaled (``sink_close_incomplete``). If the process then ends, an event
held in memory would vanish with it and the loss would not be listed as a gap.

So each sink owns a small incident file, ``<root>/.journal/<source>.incidents``. It is
created at start-up and filled with ``SIZE`` zero bytes (it doubles as the probe that the
data directory can be written), so recording an incident later overwrites blocks the file
already owns: no free space is needed on ordinary file systems, a full disk included. The
sink holds an exclusive ``flock`` on it while it lives, writes each such problem into it at
once (fsynced), clears it once the events row is durable, and deletes the file on a clean
``close``. At the next start, any sink in the same root takes over incident files whose
owner is gone and stores their contents as events rows, stamped with the time they happened.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sinks.journal import lock_nowait
from sinks.layout import fsync_dir, journal_dir

SIZE = 4096
SUFFIX = ".incidents"
_MAX_TEXT = 300  # per detail value: a few incidents must fit in SIZE

log = logging.getLogger("sinks")


@dataclass(frozen=True)
class Incident:
    kind: str
    ts_us: int
    detail: dict


def incident_path(root: Path, source: str) -> Path:
    return journal_dir(root) / f"{source}{SUFFIX}"


class IncidentFile:
    """The live sink's incident file. ``record``/``clear`` never raise: they are called
    while something else is already failing."""

    def __init__(self, root: Path, source: str) -> None:
        """Create, fill and lock the file; raises OSError (ENOSPC on a full disk, EACCES,
        EROFS...) naming the path, which is what makes it the start-up write probe.
        ``inherited``: what a dead process with the same source left in it (a pid reused
        after a container restart); the caller reports it."""
        self.path = incident_path(root, source)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, Incident] = {}
        self._lock = threading.Lock()  # the writer thread and close() both record
        self.inherited: list[Incident] = []
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not lock_nowait(self.fd):
                raise BlockingIOError(errno.EWOULDBLOCK, "in use by a running sink",
                                      str(self.path))
            self.inherited = parse(os.pread(self.fd, SIZE, 0), self.path)
            _write_all(self.fd, bytes(SIZE))
            os.ftruncate(self.fd, SIZE)
            os.fsync(self.fd)
            fsync_dir(self.path.parent)
        except OSError:
            self._close_fd()
            if not self.inherited:  # else keep it: the next attempt reports it
                _unlink_quietly(self.path)
            raise

    def record(self, key: str, kind: str, detail: dict, ts_us: int) -> None:
        with self._lock:
            self._open[key] = Incident(kind, ts_us, {k: _short(v) for k, v in detail.items()})
            self._save()

    def carry(self, source: str, incidents: list[Incident]) -> None:
        """Incidents taken over from a process that is gone: kept in this file until their
        events rows are durable (clear_carried), so a crash now does not lose them."""
        with self._lock:
            for n, i in enumerate(incidents):
                self._open[f"carried:{source}:{n}"] = i
            if incidents:
                self._save()

    @property
    def carrying(self) -> bool:
        return any(k.startswith("carried:") for k in self._open)

    def clear_carried(self) -> None:
        with self._lock:
            for key in [k for k in self._open if k.startswith("carried:")]:
                del self._open[key]
            self._save()

    def clear(self, key: str) -> None:
        with self._lock:
            if self._open.pop(key, None) is not None:
                self._save()

    def remove(self) -> None:
        """A clean end: nothing to report later."""
        with self._lock:
            if self.fd >= 0:
                _unlink_quietly(self.path)
                self._close_fd()

    def release(self) -> None:
        """An unclean end: keep what was recorded for the next start."""
        with self._lock:
            self._close_fd()

    def _save(self) -> None:
        if self.fd < 0:
            return
        items = list(self._open.values())
        while True:
            data = encode(items)
            if len(data) <= SIZE or not items:
                break
            items = items[1:]  # the oldest goes first if they do not all fit
        try:
            _write_all(self.fd, data[:SIZE].ljust(SIZE, b"\0"))
            os.fsync(self.fd)
        except OSError as e:
            log.error("cannot record an incident in %s: %s", self.path, e)

    def _close_fd(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def encode(items: list[Incident]) -> bytes:
    return "".join(json.dumps({"kind": i.kind, "ts_us": i.ts_us, "detail": i.detail},
                              separators=(",", ":")) + "\n" for i in items).encode()


def take_abandoned(root: Path) -> list[tuple[str, list[Incident]]]:
    """Incidents of sinks that are gone (their file is not locked), as (source, incidents);
    their files are deleted. The caller stores them as events rows."""
    folder = journal_dir(root)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            if not lock_nowait(fd):
                continue  # a live sink's
            incidents = parse(os.pread(fd, SIZE, 0), path)
            out.append((path.name.removesuffix(SUFFIX), incidents))
            _unlink_quietly(path)
        finally:
            os.close(fd)
    return out


def parse(data: bytes, path: Path) -> list[Incident]:
    """The incidents in a file's bytes (JSON lines, then zero padding)."""
    out = []
    for line in data.split(b"\0", 1)[0].decode("utf-8", "replace").splitlines():
        try:
            raw = json.loads(line)
            out.append(Incident(str(raw["kind"]), int(raw["ts_us"]), dict(raw["detail"])))
        except (ValueError, KeyError, TypeError):
            log.error("unreadable incident in %s: %r", path, line[:200])
    return out


def _short(value: object) -> object:
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        return value[:_MAX_TEXT] + "..."
    return value


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
