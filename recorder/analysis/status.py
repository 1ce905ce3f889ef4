"""`recorder status`: what each collector records, how fresh it is, and its gaps.

Two sources, joined by the collector's name ``<config>-<role>``:

- the supervisor's state files ``<data>/.status/<config>-<role>.json`` (process state, pid,
  restarts, last exit);
- the data itself over the last hour (``--window``): the finished Parquet files *and* the
  journal segments not finalized yet (``sinks.journal_readers``), so the current hour is
  included about one journal interval after the rows arrived. Rows are attributed to a
  collector through the ``source`` in their file or segment name (``<config>-<role>-<pid>``);
  events written by the supervisor carry ``collector`` in their detail.

While a file is being published its rows can, for a few milliseconds, be counted both in the
segment and in the file; the numbers are a status display, not an audit.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from recorder.core.schema import (
    GAP_EVENT_KINDS,
    INTEGRITY_EVENT_KINDS,
    REPAIRED_SQL,
    TABLES,
)
from sinks.layout import PARQUET_NAME, host_name

# A trade repair (recorder/capture/backfill.py) that did not cover its whole span counts
# apart from the complete ones: its kind is read as "trades_backfilled_incomplete".
REPAIR_KIND_SQL = (f"CASE WHEN kind = 'trades_backfilled' AND NOT ({REPAIRED_SQL}) "
                   "THEN 'trades_backfilled_incomplete' ELSE kind END")
UNREPAIRED_KINDS = ("trades_backfilled_incomplete", "backfill_abandoned")

# What counts as a gap in the data: the connection ended, or the process died.
PROBLEM_KINDS = ("stale", "checksum_mismatch", "sequence_gap", "malformed", "subscribe_error",
                 "connect_failed", "journal_recovered", "sink_write_error",
                 "sink_backpressure", "value_unconvertible", "collector_failed",
                 "events_dropped", "sink_writer_died", "sink_close_incomplete",
                 "credentials_refused", "resync_failed", "store_unreachable", "upload_failed",
                 "spool_dropped", "upload_pending_at_stop", "reconcile_failed",
                 "snapshot_failed", "rotation_failed")

# The file name within a path (DuckDB's filename column): group 3 is the source.
_FILE_SOURCE = PARQUET_NAME.pattern.lstrip("^")
_SEGMENT_SOURCE = re.compile(r"^[^-]+-\d{4}-\d{2}-\d{2}-(.+)-\d{4,}$")
# "-<pid>", and "-<pid>-stop" (events an uploading sink stores at a clean stop)
_PID_SUFFIX = re.compile(r"-\d+(?:-stop)?$")
_HEARTBEAT_SECONDS = 5.0  # how often a collector rewrites its heartbeat file


def collector_of(source: str, host: str | None = None) -> str:
    """``pub-public-vm1-4242`` -> ``pub-public`` (this host's name goes too: ``host``,
    default ``sinks.layout.host_name()``); the supervisor's own files keep their name."""
    if source.startswith("supervisor-"):
        return "supervisor"
    key = _PID_SUFFIX.sub("", source)
    return key.removesuffix(f"-{host or host_name()}")


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def _table_rows(con, data: Path, table: str, since_us: int) -> None:
    """Register ``_rows_<table>(collector, symbol, ts_us)`` for the window: files + journal."""
    import pyarrow as pa

    from sinks.journal_readers import pending_segments

    has_symbol = any(c.name == "symbol" for c in TABLES[table])
    parts = []
    folder = data / table
    if folder.is_dir() and any(folder.rglob("*.parquet")):
        since_day = datetime.fromtimestamp(since_us / 1e6, UTC).date().isoformat()
        pattern = str(folder.resolve() / "**" / "*.parquet").replace("'", "''")
        symbol = "symbol" if has_symbol else "NULL::VARCHAR"
        detail = "detail" if table == "events" else "NULL::VARCHAR"
        kind = "kind" if table == "events" else "NULL::VARCHAR"
        parts.append(
            f"SELECT regexp_extract(filename, '{_FILE_SOURCE}', 3) AS source, "
            f"{symbol} AS symbol, epoch_us(ts_recv) AS ts_us, {kind} AS kind, "
            f"{detail} AS detail FROM read_parquet('{pattern}', filename = true, "
            "hive_partitioning = true, union_by_name = true) "
            f"WHERE date >= DATE '{since_day}' AND epoch_us(ts_recv) >= {since_us}")
    pending = []
    for p in pending_segments(data, table):
        m = _SEGMENT_SOURCE.match(p.segment)
        t = p.table
        cols = {
            "source": pa.array([m.group(1) if m else p.segment] * t.num_rows, pa.string()),
            "symbol": t.column("symbol") if has_symbol else pa.nulls(t.num_rows, pa.string()),
            "ts_us": t.column("ts_recv").cast(pa.int64()),
            "kind": t.column("kind") if table == "events" else pa.nulls(t.num_rows, pa.string()),
            "detail": (t.column("detail") if table == "events"
                       else pa.nulls(t.num_rows, pa.string())),
        }
        pending.append(pa.table(cols))
    if pending:
        name = f"_pending_{table}"
        con.register(name, pa.concat_tables(pending))
        parts.append(f"SELECT source, symbol, ts_us, kind, detail FROM {name} "
                     f"WHERE ts_us >= {since_us}")
    if not parts:
        return
    con.execute(f"CREATE OR REPLACE TEMP VIEW _rows_{table} AS " + " UNION ALL ".join(parts))


def read_heartbeats(data: Path) -> dict[str, dict]:
    """The collectors' own heartbeat files, ``<data>/.status/<config>-<role>.collector.json``."""
    out: dict[str, dict] = {}
    for path in sorted((data / ".status").glob("*.collector.json")):
        try:
            out[path.name.removesuffix(".collector.json")] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now; the next call sees it
    return out


def collect_status(data: Path, *, now: float | None = None, window: float = 3600.0) -> dict:
    """Everything `recorder status` shows, as a dict (``--format json`` prints it)."""
    import duckdb

    from recorder.capture.supervisor import read_states

    now = time.time() if now is None else now
    now_us = int(now * 1_000_000)
    since_us = now_us - int(window * 1_000_000)
    minute_us = now_us - 60_000_000
    collectors: dict[str, dict] = defaultdict(lambda: {
        "tables": {}, "events": {}, "last_message_age_s": None, "state": None})

    for st in read_states(data):
        key = st.get("collector")
        if not key:
            continue
        entry = collectors[key]
        alive = _alive(st.get("pid"))
        supervisor_alive = _alive(st.get("supervisor_pid"))
        state = st.get("state")
        if state in ("running", "starting", "stopping") and not alive:
            state = "not running (its process is gone)"
        elif state == "backoff" and not supervisor_alive:
            state = "not running (its supervisor is gone)"
        entry["state"] = {
            "state": state, "pid": st.get("pid") if alive else None,
            "restarts": st.get("restarts", 0), "last_exit": st.get("last_exit"),
            "last_exit_at": st.get("last_exit_at"), "config": st.get("config"),
            "role": st.get("role"), "reason": st.get("reason"),
            "up_s": (round(now - st["started_at"], 1)
                     if alive and st.get("started_at") else None),
        }

    for key, beat in read_heartbeats(data).items():
        beat["age_s"] = round(now - beat.get("updated_at", now), 1)
        collectors[key]["collector"] = beat

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    for table in TABLES:
        _table_rows(con, data, table, since_us)
        exists = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?",
                             [f"_rows_{table}"]).fetchall()[0][0]
        if not exists:
            continue
        if table == "events":
            rows = con.execute(
                "SELECT coalesce(json_extract_string(detail, '$.collector'), source), "
                f"{REPAIR_KIND_SQL}, count(*) FROM _rows_events GROUP BY ALL").fetchall()
            for source, kind, n in rows:
                key = collector_of(source) if source else "unknown"
                collectors[key]["events"][kind] = collectors[key]["events"].get(kind, 0) + n
            last = con.execute("SELECT source, max(ts_us) FROM _rows_events "
                               "GROUP BY source").fetchall()
        else:
            stats = con.execute(
                "SELECT source, count(*), count(*) FILTER (WHERE ts_us >= ?), max(ts_us), "
                "list(DISTINCT symbol ORDER BY symbol) FILTER (WHERE symbol IS NOT NULL) "
                "FROM _rows_" + table + " GROUP BY source", [minute_us]).fetchall()
            for source, n, n_min, last_us, symbols in stats:
                key = collector_of(source or "unknown")
                t = collectors[key]["tables"].setdefault(
                    table, {"rows": 0, "rows_per_s_1min": 0.0, "symbols": [],
                            "last_age_s": None})
                t["rows"] += n
                t["rows_per_s_1min"] = round(t["rows_per_s_1min"] + n_min / 60.0, 2)
                t["symbols"] = sorted(set(t["symbols"]) | set(symbols or []))
                age = round((now_us - last_us) / 1e6, 1)
                t["last_age_s"] = age if t["last_age_s"] is None else min(t["last_age_s"], age)
            last = [(s, lu) for s, _, _, lu, _ in stats]
        for source, last_us in last:
            if source is None or last_us is None or table == "events":
                continue  # events are ours, not messages from the exchange
            entry = collectors[collector_of(source)]
            age = round((now_us - last_us) / 1e6, 1)
            prev = entry["last_message_age_s"]
            entry["last_message_age_s"] = age if prev is None else min(prev, age)
    con.close()
    collectors.pop("supervisor", None)
    store = upload_status(data, now)

    for entry in collectors.values():
        ev = entry["events"]
        entry["gaps"] = sum(ev.get(k, 0) for k in GAP_EVENT_KINDS)
        entry["integrity_failures"] = sum(ev.get(k, 0) for k in INTEGRITY_EVENT_KINDS)
        entry["trade_repairs"] = {"repaired": ev.get("trades_backfilled", 0),
                                  "unrepaired": sum(ev.get(k, 0) for k in UNREPAIRED_KINDS),
                                  "failed_attempts": ev.get("backfill_failed", 0),
                                  "covered": ev.get("trades_covered", 0)}
    out = {"data": str(data), "now": now, "window_s": window,
           "collectors": dict(sorted(collectors.items()))}
    if store is not None:
        out["store"] = store
    return out


def upload_status(data: Path, now: float) -> dict | None:
    """The object store a spool uploads to: files waiting (the spool size), the age of the
    oldest one (the upload lag), the last upload and error (None for a plain directory)."""
    from recorder.core.location import read_marker
    from sinks.uploader import read_states, waiting_files

    store = read_marker(data)
    if store is None:
        return None
    files = waiting_files(data)
    states = read_states(data)
    live = [s for s in states if s.get("running") and _alive(s.get("pid"))]
    last = max((s["last_upload_at"] for s in states if s.get("last_upload_at")), default=None)
    failing = [s for s in live if s.get("failing_since")]
    return {
        "store": store.url, "spool": str(data), "waiting_files": len(files),
        "waiting_bytes": sum(w.size for w in files),
        "upload_lag_s": round(now - min(w.ctime for w in files), 1) if files else 0.0,
        "last_upload_age_s": round(now - last, 1) if last else None,
        "uploaders": len(live),
        "failing_since_s": (round(now - min(s["failing_since"] for s in failing), 1)
                            if failing else None),
        "last_error": next((s.get("last_error") for s in failing), None),
        "dropped_files": sum(s.get("dropped_files") or 0 for s in states),
    }


def _render_store(st: dict) -> list[str]:
    mb = st["waiting_bytes"] / 1e6
    line = (f"store {st['store']}: spool {st['spool']} holds {st['waiting_files']} file(s), "
            f"{mb:,.1f} MB; upload lag {st['upload_lag_s']:.0f} s; last upload "
            f"{_age(st['last_upload_age_s'])}; {st['uploaders']} uploader(s) running")
    out = [line]
    if st.get("failing_since_s") is not None:
        out.append(f"  uploads failing for {st['failing_since_s']:.0f} s: {st['last_error']}")
    if st.get("dropped_files"):
        out.append(f"  {st['dropped_files']} file(s) dropped by the spool quota "
                   "(spool_dropped events)")
    return out


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def render(report: dict) -> str:
    data, window = report["data"], report["window_s"]
    now = datetime.fromtimestamp(report["now"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    span = f"{window / 60:.0f} min" if window < 7200 else f"{window / 3600:.0f} h"
    out = [f"{data}: {len(report['collectors'])} collector(s), {now}, last {span}"]
    if report.get("store"):
        out += _render_store(report["store"])
    if not report["collectors"]:
        out.append(f"nothing recorded in {data} in the last {span} and no collector state "
                   "(start one with `recorder run CONFIG --data DIR`)")
        return "\n".join(out)
    for key, c in report["collectors"].items():
        st = c["state"]
        if st is None:
            head = "no state file (not started by the supervisor)"
        else:
            head = st["state"] or "unknown"
            if st.get("pid"):
                head += f", pid {st['pid']}"
            if st.get("up_s") is not None:
                head += f", up {_duration(st['up_s'])}"
            head += f", restarts {st['restarts']}"
            if st.get("last_exit"):
                head += f", last exit: {st['last_exit']}"
            if st.get("reason"):
                head += f" ({st['reason']})"
        out.append("")
        out.append(f"{key}: {head}")
        beat = c.get("collector")
        if beat:
            running = st is not None and st["state"] in ("running", "starting")
            conn = (f"connected to {beat['url']} (connection {beat['conn_id']})"
                    if beat.get("connected") else "not connected")
            line = f"  collector      {conn}, {beat.get('frames', 0):,} frames"
            if running and beat["age_s"] > 3 * _HEARTBEAT_SECONDS:
                line += f"; its heartbeat is {beat['age_s']:.0f} s old (stuck?)"
            out.append(line)
            sink = beat.get("sink") or {}
            if sink.get("write_error"):
                out.append(f"  sink           cannot write: {sink['write_error']} "
                           f"({sink.get('pending_rows', 0):,} rows waiting, kept in memory)")
        out.append(f"  last message   {_age(c['last_message_age_s'])}")
        if c["tables"]:
            w = max(8, *(len(name) for name in c["tables"]))
            out.append(f"  {'table':<{w}} {'rows':>10} {'rows/s (1 min)':>15}  {'last':>12}  "
                       "symbols")
            for table, t in sorted(c["tables"].items()):
                out.append(f"  {table:<{w}} {t['rows']:>10,} {t['rows_per_s_1min']:>15,.1f}  "
                           f"{_age(t['last_age_s']):>12}  {', '.join(t['symbols'])}")
        else:
            out.append(f"  no market data in the last {span}")
        ev = c["events"]
        problems = ", ".join(f"{k} {ev[k]}" for k in PROBLEM_KINDS if ev.get(k))
        gaps = ", ".join(f"{k} {ev[k]}" for k in GAP_EVENT_KINDS if ev.get(k))
        out.append(f"  gaps           {c['gaps']}" + (f" ({gaps})" if gaps else ""))
        rep = c["trade_repairs"]
        if any(rep.values()):
            out.append(f"  trade repairs  {rep['repaired']} complete, {rep['unrepaired']} "
                       "incomplete or abandoned (trades may be missing)"
                       + (f", {rep['failed_attempts']} failed attempts"
                          if rep["failed_attempts"] else "")
                       + (f", {rep['covered']} covered by the redundant connection"
                          if rep["covered"] else ""))
        bad = ", ".join(f"{k} {ev[k]}" for k in INTEGRITY_EVENT_KINDS if ev.get(k))
        out.append(f"  integrity fails {c['integrity_failures']}" + (f" ({bad})" if bad else ""))
        if problems:
            out.append(f"  events         {problems}")
    return "\n".join(out)


def status(
    data: Path = typer.Option(Path("data"), "--data", help="Data directory, or "
                              "s3://bucket/prefix (this host's spool of it)."),
    window: float = typer.Option(3600.0, "--window", min=60,
                                 help="Look back this many seconds (default: one hour)."),
    fmt: str = typer.Option("text", "--format", help="text or json."),
    watch: bool = typer.Option(False, "--watch", help="Refresh in the terminal until "
                               "Ctrl-C."),
    interval: float = typer.Option(5.0, "--interval", min=0.5, help="Seconds between "
                                   "refreshes with --watch."),
) -> None:
    """What each collector records: state, age of the last message, rates, gaps and
    integrity failures (checksum mismatch or sequence gap) over the last hour."""
    if fmt not in ("text", "json"):
        typer.echo(f"error: --format {fmt!r} is not supported; allowed: text, json", err=True)
        raise typer.Exit(2)
    from recorder.core.location import is_store_url, resolve

    if is_store_url(data):  # s3://...: this host's spool of that store
        try:
            data = resolve(data)[0]
        except ValueError as e:
            typer.echo(f"error: --data: {e}", err=True)
            raise typer.Exit(2) from None
    if not data.is_dir():
        typer.echo(f"error: no data directory {data} (record with `recorder run`, or pass "
                   "--data DIR)", err=True)
        raise typer.Exit(2)
    if watch:
        watch_status(data, window, interval, fmt)
        return
    report = collect_status(data, window=window)
    if fmt == "json":
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(render(report))


def watch_status(data: Path, window: float, interval: float, fmt: str = "text", *,
                 iterations: int | None = None) -> None:
    """``recorder status --watch``: the report again every ``interval`` seconds, drawn over
    the previous one on a terminal (appended, separated by a blank line, elsewhere), until
    Ctrl-C (or ``iterations`` reports)."""
    import signal
    import sys
    import threading

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tty = sys.stdout.isatty()
    n = 0
    while not stop.is_set():
        report = collect_status(data, window=window)
        text = json.dumps(report) if fmt == "json" else render(report)
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        footer = f"(every {interval:g} s, {stamp} UTC; Ctrl-C to stop)"
        if tty:
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n\n" + footer + "\n")
        else:
            sys.stdout.write(("\n" if n else "") + text + "\n" + footer + "\n")
        sys.stdout.flush()
        n += 1
        if iterations is not None and n >= iterations:
            break
        stop.wait(interval)
