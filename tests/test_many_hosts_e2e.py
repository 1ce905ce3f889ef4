"""Two collectors acting as two hosts (``RECORDER_HOST``) record the same BTC/USD book and
trades from one simulator into one data directory; host A is stopped (SIGTERM) mid-run.
The book export of the whole directory follows host A, then host B across A's end, and
equals each host's own export where that host is followed; every trade appears once; the
Spark export of the directory equals the local one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.analysis.dataset import open_dataset, to_datetime
from recorder.analysis.export import export
from recorder.analysis.rebuild import plan
from recorder.analysis.sql import writer_of_file
from recorder.simulator.testing import SimulatorProcess
from tests.e2e import FAST, ROOT, stop, wait_until, write_config
from tests.test_spark_export import spark  # noqa: F401 - the module's SparkSession fixture

SUBS = ('[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD"]\ndepth = 10\n'
        '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD"]\n')
WA, WB = "ha-public-host-a", "hb-public-host-b"   # the writers: <config>-<role>-<host>
SECOND = 1_000_000


def _start(cfg: Path, data: Path, host: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RECORDER_HOST": host}
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "recorder", "run", str(cfg), "--data",
                                 str(data)], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=env)


def _book_seconds(data: Path, writer: str) -> float:
    """Seconds of BTC/USD book rows ``writer`` has recorded since its first snapshot (0
    before one; journaled rows count)."""
    try:
        with open_dataset(data) as ds:
            lo, hi = ds.sql(
                "SELECT epoch_us(min(ts_recv) FILTER (WHERE is_snapshot)), "
                f"epoch_us(max(ts_recv)) FROM ({ds.source_sql('book', order=True)}) "
                f"WHERE _writer = '{writer}' AND symbol = 'BTC/USD'").fetchall()[0]
    except Exception:  # noqa: BLE001 - nothing recorded yet, or a file being published
        return 0.0
    return 0.0 if lo is None else (hi - lo) / SECOND


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("many-hosts")
    data = tmp / "data"
    extra = FAST.format(stale=5.0) + '[output]\nrotate = "2s"\nbook_checkpoint = "1s"\n'
    procs: list[subprocess.Popen] = []
    with SimulatorProcess(["--seed", "7", "--rate", "200"]) as sim:
        cfgs = {h: write_config(tmp, f"h{h}.toml", "v2", sim.urls["ws_v2"], SUBS, extra)
                for h in ("a", "b")}
        try:
            procs.append(_start(cfgs["a"], data, "host-a", tmp / "a.log"))
            wait_until(lambda: _book_seconds(data, WA) > 0.5, 30, "host A's book")
            procs.append(_start(cfgs["b"], data, "host-b", tmp / "b.log"))
            wait_until(lambda: _book_seconds(data, WB) > 2.0, 30, "host B's book")
            assert stop(procs[0], signal.SIGTERM, timeout=20) < 20  # host A goes away
            a_end = _book_seconds(data, WA)
            wait_until(lambda: _book_seconds(data, WB) > a_end + 1.5, 30,
                       "host B recording on")
        finally:
            for p in procs:
                if p.poll() is None:
                    stop(p, signal.SIGTERM, timeout=20)
    for p, h in zip(procs, "ab", strict=True):
        assert p.returncode == 0, (tmp / f"{h}.log").read_text()[-3000:]
    # Each host's files alone, for comparison.
    for writer in (WA, WB):
        for f in data.rglob("*.parquet"):
            if writer_of_file(f.name) == writer:
                dest = tmp / writer / f.relative_to(data)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)
    return data


def _export(data: Path, out: Path, kind: str, start: int, end: int, **kw) -> pa.Table:
    with open_dataset(data) as ds:
        export(ds, kind, out, symbols="BTC/USD", start=to_datetime(start),
               end=to_datetime(end), **kw)
    return pq.read_table(out)


def test_the_book_follows_host_a_then_host_b(recorded, tmp_path):
    with open_dataset(recorded) as ds:
        lo, hi = ds.sql("SELECT epoch_us(min(ts_recv)), epoch_us(max(ts_recv)) FROM book "
                        "WHERE is_snapshot").fetchall()[0]
        end = ds.sql("SELECT epoch_us(max(ts_recv)) FROM book").fetchall()[0][0] + 1
        a_last = ds.sql(f"SELECT epoch_us(max(ts_recv)) FROM ({ds.source_sql('book', True)})"
                        f" WHERE _writer = '{WA}'").fetchall()[0][0]
        b_first = ds.sql(f"SELECT epoch_us(min(ts_recv)) FROM ({ds.source_sql('book', True)})"
                         f" WHERE _writer = '{WB}' AND epoch_us(ts_recv) > {a_last}"
                         ).fetchall()[0][0]
        legs, _, writers = plan(ds, "BTC/USD", lo, end - 1)
    assert writers == [WA, WB]
    # A recorded first; B took over right after A's last message, not before.
    assert [w for w, _, _ in legs] == [WA, WB], legs
    assert legs[0][2] == a_last and legs[1][1] == a_last + 1
    for kind, kw in (("book", {"interval": "100ms", "depth": 10}),
                     ("book", {"interval": "change", "depth": 5})):
        both = _export(recorded, tmp_path / "both.parquet", kind, lo, end, **kw)
        assert both.num_rows > 20
        ts = both.column("ts").cast(pa.int64()).to_pylist()
        for writer, first, last in legs:
            alone = _export(recorded.parent / writer, tmp_path / f"{writer}.parquet", kind,
                            lo, end, **kw)
            alone_ts = alone.column("ts").cast(pa.int64()).to_pylist()
            mine = [i for i, t in enumerate(ts) if first <= t <= last]
            theirs = [i for i, t in enumerate(alone_ts) if first <= t <= last]
            assert len(mine) > 5, (kind, kw, writer)
            if kw["interval"] == "change" and writer == WB:
                # B's first message(s) after the switch (one read, one time) are the only
                # ones the two exports may report differently: the export compares them with
                # A's last book, B's own with B's earlier one. B's copy of a frame A already
                # reported changes nothing in the first; a frame B had not caught up with
                # yet shows in the first only. After them both show B's book, row for row.
                _check_switch(both, alone, ts, alone_ts, b_first, (kind, kw))
                mine = [i for i in mine if ts[i] > b_first]
                theirs = [i for i in theirs if alone_ts[i] > b_first]
            assert both.take(mine).equals(alone.take(theirs)), (kind, kw, writer)


def _check_switch(both: pa.Table, alone: pa.Table, ts: list[int], alone_ts: list[int],
                  b_first: int, what: tuple) -> None:
    """Once B's first message after the switch is applied, the export's book (its last row
    so far: that message's, or A's last one when it changed nothing) is B's own book then
    (the last row of B's export up to it): the same levels."""
    levels = [c for c in both.column_names if c.startswith(("bid_", "ask_"))]
    assert levels, both.column_names
    shown = max(i for i, t in enumerate(ts) if t <= b_first)
    own = max(i for i, t in enumerate(alone_ts) if t <= b_first)
    assert (both.select(levels).take([shown]).to_pylist()
            == alone.select(levels).take([own]).to_pylist()), what


def test_every_trade_once(recorded, tmp_path):
    with open_dataset(recorded) as ds:
        raw, unique, ids = ds.sql(
            "SELECT (SELECT count(*) FROM trades), (SELECT count(*) FROM trades_unique), "
            "(SELECT count(DISTINCT trade_id) FROM trades)").fetchall()[0]
        assert unique == ids and raw > unique > 20  # both hosts recorded most trades
        bars = ds.bars("1s")
        assert sum(bars.column("trades").to_pylist()) == ids
    export(open_dataset(recorded), "tardis-trades", tmp_path / "t.csv")
    lines = (tmp_path / "t.csv").read_text().splitlines()[1:]
    assert len(lines) == ids == len({line.split(",")[4] for line in lines})


def test_spark_export_of_both_hosts_equals_the_local_one(recorded, spark, tmp_path):  # noqa: F811
    """One-second Spark tasks: each starts from its writers' start points before it."""
    from recorder.analysis.spark_export import export_spark

    with open_dataset(recorded) as ds:
        for kind, kw in (("book", {"interval": "200ms", "depth": 5}), ("quotes", {}),
                         ("bars", {"interval": "1s"})):
            n_local = export(ds, kind, tmp_path / "local.parquet", **kw)
            n_spark = export_spark(ds, kind, tmp_path / "spark.parquet", spark=spark,
                                   chunk_us=SECOND, **kw)
            local = pq.read_table(tmp_path / "local.parquet")
            assert n_local == n_spark > 5, kind
            assert pq.read_table(tmp_path / "spark.parquet").equals(local), (kind, kw)
