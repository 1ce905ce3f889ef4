"""One ``events`` row stored in a data directory, by a short-lived process of its own.

    python -m recorder.capture.event_writer ROOT EXCHANGE KIND TS < DETAIL_JSON

The supervisor records the outages of its collectors (``collector_restarted``,
``collector_failed``). Storing a row takes a Parquet sink, hence pyarrow: the supervisor
went from 19 to 120 MB RSS at a job's first restart and kept it for the weeks of the job,
for a few rows. So it runs this module as a child for each row and stays lean
(tests/test_process_entry.py).

Exit status 0 once the row is durable (published, or journaled for the next collector's
recovery to publish), 1 if it could not be stored (the caller retries).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from recorder.core.logs import setup_logging

log = logging.getLogger("recorder.capture.event_writer")

# Importing pyarrow and publishing one small file takes well under a second; a full or
# hung disk must not hold the caller's retry loop for ever.
CHILD_TIMEOUT = 60.0


def record_event(root: Path, kind: str, detail: dict, ts: float | None = None, *,
                 exchange: str) -> bool:
    """Store one ``events`` row in ``root`` (its own small Parquet file), in this process.
    True once it is durable; a data directory that cannot be written is logged, not raised
    (False)."""
    try:
        from sinks.parquet_sink import ParquetSink
        from sinks.reporting import event_row

        # A source never used before: the sink treats a segment whose name (source + seq)
        # matches an existing file as already published (see the report on sinks/).
        source = f"supervisor-{os.getpid()}-{time.time_ns() // 1000}"
        sink = ParquetSink(root, exchange, source=source, recover_on_start=False,
                           journal_interval=0.2)
        ts_us = int((ts or time.time()) * 1_000_000)
        sink.write("events", [event_row(exchange, ts_us, kind, detail)])
        if sink.close(timeout=5.0):
            return True
        # Journaled but not published: the next collector start recovers it. Writing it
        # again would list the gap twice.
        return sink.stats()["rows_journaled"].get("events", 0) >= 1
    except Exception as e:  # noqa: BLE001 - an event must never take the caller down
        log.error("cannot record the %s event in %s: %s", kind, root, e)
        return False


def record_event_in_child(root: Path, kind: str, detail: dict, ts: float | None = None, *,
                          exchange: str, timeout: float = CHILD_TIMEOUT) -> bool:
    """``record_event`` in a child process (this module), so the caller never loads
    pyarrow. True once the row is durable."""
    cmd = [sys.executable, "-m", "recorder.capture.event_writer", str(root), exchange, kind,
           "-" if ts is None else repr(ts)]
    try:
        proc = subprocess.run(cmd, input=json.dumps(detail), text=True, timeout=timeout,
                              stdout=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.error("cannot record the %s event in %s: %s", kind, root, e)
        return False
    return proc.returncode == 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        print("usage: python -m recorder.capture.event_writer ROOT EXCHANGE KIND TS "
              "< DETAIL_JSON", file=sys.stderr)
        return 2
    setup_logging("warning")
    root, exchange, kind, ts = args
    detail = json.loads(sys.stdin.read() or "{}")
    stored = record_event(Path(root), kind, detail, None if ts == "-" else float(ts),
                          exchange=exchange)
    return 0 if stored else 1


if __name__ == "__main__":
    sys.exit(main())
