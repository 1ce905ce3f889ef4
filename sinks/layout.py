"""Where files live and what they are called (see docs/storage.md).

    <root>/<table>/exchange=<x>/date=<YYYY-MM-DD>/<first>-<last>-<source>-<seq>.parquet
    <root>/<table>/exchange=<x>/date=<YYYY-MM-DD>/.<segment>.parquet.tmp   (being written)
    <root>/.journal/<table>/<segment>.arrows                               (not finalized yet)

``first``/``last`` are the first and last ``ts_recv`` in the file, to the second
(``20261122T040000Z``). Names that start with a dot or end in ``.tmp`` are never matched by
a ``*.parquet`` glob, which is what keeps half-written files out of queries.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path

JOURNAL_DIR = ".journal"
SEGMENT_SUFFIX = ".arrows"
TMP_SUFFIX = ".parquet.tmp"
DAY_US = 86_400_000_000

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")


def safe_token(text: str) -> str:
    """A path-safe version of free text (host names, config names)."""
    return _SAFE.sub("_", text).strip("._") or "x"


def host_name() -> str:
    """This host's name in file names and in ``events.host``: ``$RECORDER_HOST`` if set (a
    container's host name is often meaningless), else the system's host name; path-safe."""
    return safe_token(os.environ.get("RECORDER_HOST") or socket.gethostname())


def check_name(kind: str, value: str) -> str:
    if not _NAME_OK.match(value) or value.startswith("."):
        raise ValueError(f"{kind} {value!r} must be letters, digits, '.', '_' or '-'")
    return value


def day_of(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us // DAY_US * 86_400, UTC).strftime("%Y-%m-%d")


def stamp(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us // 1_000_000, UTC).strftime("%Y%m%dT%H%M%SZ")


def partition_dir(root: Path, table: str, exchange: str, date: str) -> Path:
    return root / table / f"exchange={exchange}" / f"date={date}"


def parquet_name(first_us: int, last_us: int, source: str, seq: int) -> str:
    return f"{stamp(first_us)}-{stamp(last_us)}-{source}-{seq:04d}.parquet"


# parquet_name(), plus the "-N" finalize adds when the name is taken already.
PARQUET_NAME = re.compile(r"^(?P<first>\d{8}T\d{6}Z)-(?P<last>\d{8}T\d{6}Z)-(?P<source>.+)"
                          r"-(?P<seq>\d{4,})(?:-(?P<again>\d+))?\.parquet$")


def parse_parquet_name(name: str) -> tuple[str, int, int] | None:
    """(source, seq, collision index) of a file parquet_name() named; None for others."""
    m = PARQUET_NAME.match(name)
    return (m["source"], int(m["seq"]), int(m["again"] or 0)) if m else None


def journal_dir(root: Path, table: str | None = None) -> Path:
    base = root / JOURNAL_DIR
    return base / table if table else base


def segment_path(root: Path, table: str, segment: str) -> Path:
    return journal_dir(root, table) / f"{segment}{SEGMENT_SUFFIX}"


def tmp_path(partition: Path, segment: str) -> Path:
    return partition / f".{segment}{TMP_SUFFIX}"


def window_of(ts_us: int, rotate_us: int) -> tuple[int, int]:
    """The rotation window [start, end) holding ``ts_us``: windows are counted from UTC
    midnight and the last one of a day is cut short there, so no window crosses midnight."""
    day_start = ts_us // DAY_US * DAY_US
    start = day_start + (ts_us - day_start) // rotate_us * rotate_us
    return start, min(start + rotate_us, day_start + DAY_US)


def fsync_file(path: Path) -> None:
    """fsync through a second descriptor: it flushes the inode, whoever wrote the pages."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (the entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
