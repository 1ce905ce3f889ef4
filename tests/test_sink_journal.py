"""Journal and recovery: kill -9, torn tails, interrupted publishes, live writers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from recorder.core.schema import arrow_schema
from sinks.convert import rows_to_batch
from sinks.finalize import finalize_segment, recover
from sinks.journal import SegmentInfo, SegmentWriter, read_segment, segment_files
from sinks.journal_readers import pending_batches
from sinks.parquet_sink import ParquetSink
from tests.rows import row, us

ROOT = Path(__file__).resolve().parents[1]
T0 = us("2026-11-22T04:00:00Z")


def info(seq: int = 1, table: str = "trades") -> SegmentInfo:
    return SegmentInfo(table, "kraken", "2026-11-22", "t", seq, f"kraken-2026-11-22-t-{seq:04d}",
                       T0, T0 + 3_600_000_000)


def batch(start: int, n: int) -> pa.RecordBatch:
    rows = [row("trades", ts_recv=T0 + i, price=f"{i}.01", qty="1", trade_id=i)
            for i in range(start, start + n)]
    return rows_to_batch("trades", rows)[0]


def trade_ids(root: Path) -> list[int]:
    con = duckdb.connect()
    query = f"""select trade_id::BIGINT from read_parquet('{root}/trades/**/*.parquet',
                hive_partitioning=true) order by 1"""
    return [r[0] for r in con.sql(query).fetchall()]


CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {root!r})
    from sinks.parquet_sink import ParquetSink
    from tests.rows import row
    sink = ParquetSink({data!r}, "kraken", journal_interval=0.05, source="child",
                       rotate_seconds=86400)
    next_id = 0
    while True:
        now = int(time.time() * 1e6)
        sink.write("trades", [row("trades", ts_recv=now, price="1.5", qty="0.00005100",
                                  trade_id=next_id + i) for i in range(200)])
        next_id += 200
        sink.tick()
        print(json.dumps(sink.stats()["rows_journaled"]), flush=True)
        time.sleep(0.005)
""")


def test_kill_9_loses_at_most_the_last_interval(tmp_path: Path) -> None:
    data = tmp_path / "data"
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT), data=str(data))],
                             stdout=subprocess.PIPE, text=True)
    journaled = 0
    try:
        for line in child.stdout:
            journaled = json.loads(line).get("trades", 0)
            if journaled >= 5000:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert journaled >= 5000
    assert list(data.rglob("*.parquet")) == []  # nothing was finished: all in the journal
    # A stale temporary file, as a crash during a publish would leave.
    partition = data / "trades" / "exchange=kraken" / "date=2026-11-22"
    partition.mkdir(parents=True)
    (partition / ".kraken-2026-11-22-gone-0001.parquet.tmp").write_bytes(b"PAR1 half")

    result = recover(data)
    assert result.finalized and not result.failed
    assert result.removed_tmp == [partition / ".kraken-2026-11-22-gone-0001.parquet.tmp"]
    ids = trade_ids(data)
    # Everything reported as journaled is back, in order, without gaps or duplicates.
    assert len(ids) >= journaled
    assert ids == list(range(len(ids)))
    assert segment_files(data) == [] and list(data.rglob("*.tmp")) == []
    for path in data.rglob("*.parquet"):
        pq.read_table(path)


def test_torn_tail_keeps_every_complete_batch(tmp_path: Path) -> None:
    seg = SegmentWriter(tmp_path, info())
    for start in (0, 100, 200):
        seg.append(batch(start, 100))
        seg.sync()
    good = seg.path.stat().st_size
    seg.append(batch(300, 100))
    seg.sync()
    seg.release()
    with open(seg.path, "r+b") as fh:  # the crash hit in the middle of the last write
        fh.truncate(good + (seg.path.stat().st_size - good) // 2)

    result = recover(tmp_path)
    (done,) = result.finalized
    assert done.rows == 300 and done.torn_bytes > 0
    assert trade_ids(tmp_path) == list(range(300))


def test_empty_or_headless_segment_is_just_removed(tmp_path: Path) -> None:
    seg = SegmentWriter(tmp_path, info())
    seg.release()  # created, never synced: zero bytes
    garbage = seg.path.with_name("kraken-2026-11-22-t-0009.arrows")
    garbage.write_bytes(b"\x00not arrow at all")
    result = recover(tmp_path)
    assert [f.path for f in result.finalized] == [None, None]
    assert segment_files(tmp_path) == []
    assert garbage.with_suffix(".corrupt").exists()  # kept for a human, out of the journal


def test_crash_between_publish_and_journal_delete_does_not_duplicate(tmp_path: Path) -> None:
    seg = SegmentWriter(tmp_path, info())
    seg.append(batch(0, 50))
    seg.finish()
    copy = tmp_path / "copy"
    shutil.copy(seg.path, copy)
    first = finalize_segment(seg.path, tmp_path)
    seg.release()
    shutil.copy(copy, seg.path)  # as if the process died before deleting the segment

    result = recover(tmp_path)
    (again,) = result.finalized
    assert again.already_done and again.path == first.path
    assert trade_ids(tmp_path) == list(range(50))
    assert segment_files(tmp_path) == []


def test_recovery_leaves_a_live_writers_segment_alone(tmp_path: Path) -> None:
    seg = SegmentWriter(tmp_path, info())
    seg.append(batch(0, 10))
    seg.sync()
    live = recover(tmp_path)
    assert live.skipped_live == [seg.path] and live.finalized == []
    assert sum(t.num_rows for t in pending_batches(tmp_path, "trades")) == 10
    seg.release()  # the writer died
    assert [f.rows for f in recover(tmp_path).finalized] == [10]


def test_segment_from_an_older_schema_is_recovered_with_its_own_columns(tmp_path: Path) -> None:
    old = pa.schema([f for f in arrow_schema("trades") if f.name != "misc"])
    meta = info().metadata()
    path = tmp_path / ".journal" / "trades" / f"{info().segment}.arrows"
    path.parent.mkdir(parents=True)
    full = batch(0, 5)
    with pa.OSFile(str(path), "wb") as sink, \
            pa.ipc.new_stream(sink, old.with_metadata(meta)) as stream:
        stream.write_batch(full.drop_columns(["misc"]))
    (done,) = recover(tmp_path).finalized
    assert done.rows == 5
    assert "misc" not in pq.read_schema(done.path).names


def test_sink_start_recovers_and_records_it(tmp_path: Path) -> None:
    seg = SegmentWriter(tmp_path, info())
    seg.append(batch(0, 20))
    seg.sync()
    seg.release()
    sink = ParquetSink(tmp_path, "kraken", source="next")
    assert sink.stats()["rows_recovered"] == 20
    sink.close()
    assert trade_ids(tmp_path) == list(range(20))
    con = duckdb.connect()
    events = con.sql(f"select kind, channel, detail from "
                     f"read_parquet('{tmp_path}/events/**/*.parquet')").fetchall()
    assert [(k, c) for k, c, _ in events] == [("journal_recovered", "trades")]
    assert '"rows":20' in events[0][2]


def test_read_segment_tolerates_a_growing_file(tmp_path: Path) -> None:
    seg = SegmentWriter(tmp_path, info())
    seg.append(batch(0, 10))
    seg.sync()
    assert sum(b.num_rows for b in read_segment(seg.path)) == 10
    seg.append(batch(10, 10))
    seg.sync()
    assert sum(b.num_rows for b in read_segment(seg.path)) == 20
    seg.release()
