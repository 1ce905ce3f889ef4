"""`recorder watch CONFIG`: the config's feed through the real runtime, printed, not recorded.

The same collector as ``recorder run`` (prepare, connect, subscribe, parse, verified books,
resyncs, reconnects) with a sink that prints each row as one line instead of storing it:
a quick look at a pair or a config before a long job, the way Kraken's command-line sample
client prints a feed. Nothing is written to disk (a private feed reads no recorded fills).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recorder.capture import jobs
from recorder.core.schema import TABLES

log = logging.getLogger("recorder.watch")

SKIPPED = ("raw", "book_checkpoints")
_QUIET = ("exchange", "ts_recv", "symbol", "conn_id", "update_id")


def _time(us: Any) -> str:
    if not isinstance(us, int):
        return str(us) if us is not None else "-"
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%H:%M:%S.%f")


def format_row(table: str, row: tuple, names: list[str]) -> str:
    """``12:00:01.123456 trades  BTC/USD  side=buy price=27000.1 qty=0.5 ...``"""
    values = dict(zip(names, row, strict=False))
    rest = " ".join(f"{k}={v}" for k, v in values.items()
                    if k not in _QUIET and v is not None and v != "")
    return (f"{_time(values.get('ts_recv'))} {table:<7} {values.get('symbol') or '-':<10} "
            f"{rest}")


class PrintSink:
    """The collector's sink interface; rows become lines on ``write``."""

    def __init__(self, exchange: str, write: Callable[[str], None],
                 tables: Iterable[str] | None = None, symbols: Iterable[str] | None = None,
                 events: bool = True) -> None:
        self.exchange = exchange
        self.write_line = write
        self.tables = set(tables) if tables else None
        self.symbols = set(symbols) if symbols else None
        self.events = events
        self.rows = 0
        self.broken = threading.Event()  # the reader went away (`recorder watch | head`)
        self._lock = threading.Lock()
        self._names = {t: [c.name for c in cols] for t, cols in TABLES.items()}

    def write(self, table: str, rows: list[tuple]) -> None:
        if table in SKIPPED or (table == "events" and not self.events):
            return
        if self.tables is not None and table not in self.tables and table != "events":
            return
        names = self._names[table]
        sym = names.index("symbol") if "symbol" in names else None
        lines = []
        for row in rows:
            if (self.symbols is not None and sym is not None and table != "events"
                    and row[sym] not in self.symbols):
                continue
            lines.append(format_row(table, row, names))
        if lines and not self.broken.is_set():
            with self._lock:
                self.rows += len(lines)
                try:
                    for line in lines:
                        self.write_line(line)
                except (BrokenPipeError, ValueError):
                    self.broken.set()

    def tick(self) -> None:
        if self.broken.is_set():
            return
        try:
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            self.broken.set()

    def stats(self) -> dict:
        return {"rows_received": {}, "rows_journaled": {}, "pending_rows": 0,
                "queued_rows": 0, "blocked_seconds": 0.0, "write_error": None, "problems": {}}

    def close(self, timeout: float | None = None) -> bool:
        return True


def watch(cfg: Any, *, url: str | None = None, duration: float | None = None,
          tables: Iterable[str] | None = None, symbols: Iterable[str] | None = None,
          events: bool = True, private: bool = False,
          write: Callable[[str], None] = print) -> int:
    """Connect every public role of ``cfg`` (and the private one with ``private``) and
    print rows until SIGINT/SIGTERM or ``duration``; return the rows printed."""
    from recorder.capture.collector import Collector

    roles = [r for r in jobs.roles(cfg) if jobs.is_public(r) or (private and r == "private")]
    if not roles:
        raise ValueError(f"{cfg.path} has no {'' if private else 'public '}subscriptions "
                         "to watch" + ("" if private else " (add --private for fills)"))
    sink = PrintSink(cfg.exchange, write, tables, symbols, events)
    collectors = []
    spool = tempfile.TemporaryDirectory(prefix="recorder-watch-")
    try:
        for role in roles:
            if role == "private":
                feed = cfg.spec.private_feed(cfg, Path(spool.name))
            else:
                feed = cfg.spec.public_feed(cfg, url, jobs.subscriptions(cfg, role))
            collectors.append(Collector(cfg, sink, feed, duration=duration))

        def stop(*_: object) -> None:
            for c in collectors:
                c.stop()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        threads = [threading.Thread(target=c.run, name=f"watch-{i}", daemon=True)
                   for i, c in enumerate(collectors)]
        try:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads) and not sink.broken.is_set():
                time.sleep(0.1)
        finally:
            stop()
            for t in threads:
                t.join(5.0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if sink.broken.is_set():  # no one reads: end quietly, as `head` expects
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        failures = [c.failure for c in collectors if c.failure]
        if failures:
            raise RuntimeError(failures[0])
        return sink.rows
    finally:
        spool.cleanup()
