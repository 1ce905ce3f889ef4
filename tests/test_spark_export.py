"""`recorder export --engine spark` (recorder/analysis/spark_export.py) in Spark's local mode
over the local Hive layout: bars, book snapshots and quotes equal to the local export row
for row. One SparkSession (local[2]) for the module. If Spark cannot start (no Java, no
pyspark), the tests fail with the reason: they are never skipped."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recorder.analysis.dataset import open_dataset
from recorder.analysis.export import export
from recorder.simulator.testing import SimulatorProcess
from tests.datasets import scenario, trade, write
from tests.e2e import start_recorder, stop, write_config

SECOND = 1_000_000


@pytest.fixture(scope="module")
def spark():
    if shutil.which("java") is None:
        pytest.fail("Spark needs Java 17 (apt-get install openjdk-17-jre-headless)")
    try:
        from recorder.analysis.spark_export import spark_session

        session = spark_session("local[2]")
    except Exception as e:  # noqa: BLE001 - the reason is the test's failure message
        pytest.fail(f"Spark could not start: {e!r}")
    session.conf.set("spark.sql.shuffle.partitions", "4")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A few seconds from the simulator: trades, books with a checkpoint every second, a
    file per second."""
    tmp = tmp_path_factory.mktemp("spark")
    data = tmp / "data"
    subs = ('[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD", "ETH/USD"]\ndepth = 10\n'
            '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD", "ETH/USD"]\n')
    with SimulatorProcess(["--seed", "3", "--rate", "300"]) as sim:
        cfg = write_config(tmp, "s.toml", "v2", sim.urls["ws_v2"], subs,
                           extra='[output]\nbook_checkpoint = "1s"\nrotate = "2s"\n')
        proc = start_recorder(cfg, data)
        try:
            deadline = time.monotonic() + 30
            while _count(data, "book_checkpoints") < 6:
                assert time.monotonic() < deadline, "no checkpoints recorded"
                time.sleep(0.2)
        finally:
            stop(proc)
        assert proc.returncode == 0, proc.stderr.read()
    return data


def _count(data: Path, table: str) -> int:
    try:
        with open_dataset(data) as ds:
            return ds.sql(f"SELECT count(DISTINCT ts_recv) FROM {table}").fetchall()[0][0]
    except Exception:  # noqa: BLE001 - nothing recorded yet
        return 0


def _both(data: Path, tmp: Path, spark, kind: str, **kw) -> tuple:
    from recorder.analysis.spark_export import export_spark

    chunk = kw.pop("chunk_us", 86_400 * SECOND)
    with open_dataset(data) as ds:
        n_local = export(ds, kind, tmp / "local.parquet", **kw)
        n_spark = export_spark(ds, kind, tmp / "spark.parquet", spark=spark, chunk_us=chunk,
                               **kw)
    local, remote = pq.read_table(tmp / "local.parquet"), pq.read_table(tmp / "spark.parquet")
    assert n_local == n_spark == local.num_rows
    assert local.schema == remote.schema
    return local, remote


def test_bars_equal_the_local_export(recorded, spark, tmp_path):
    for time_base in ("exchange", "recv"):
        local, remote = _both(recorded, tmp_path, spark, "bars", interval="1s",
                              time=time_base)
        assert local.num_rows > 4
        assert remote.equals(local), time_base


def test_book_snapshots_and_quotes_equal_the_local_export(recorded, spark, tmp_path):
    """Tasks of one second each (a day in use): every task starts from the checkpoint
    before it; the result is the same as one fold."""
    cases = [("book", {"interval": "200ms", "depth": 5}),
             ("book", {"interval": "change", "depth": 3}),
             ("quotes", {})]
    for kind, kw in cases:
        local, remote = _both(recorded, tmp_path, spark, kind, chunk_us=SECOND, **kw)
        assert local.num_rows > 10, kind
        assert remote.equals(local), (kind, kw)


def test_a_book_across_midnight(spark, tmp_path):
    """The rebuild tests' scenario: a snapshot before midnight, a resync after it, a book
    known wrong in between, two symbols: per-day tasks equal one local fold."""
    data = tmp_path / "data"
    write(data, {"book": scenario(),
                 "trades": [trade("BTC/USD", r[3], "100.5", "1", tid=i)
                            for i, r in enumerate(scenario())]})
    for kind, kw in (("book", {"interval": "1s", "depth": 3}),
                     ("book", {"interval": "change", "depth": 2}), ("quotes", {}),
                     ("bars", {"interval": "1h"})):
        local, remote = _both(data, tmp_path, spark, kind, **kw)
        assert local.num_rows > 0
        assert remote.equals(local), (kind, kw)


def test_kinds_spark_does_not_run_say_so(recorded, spark, tmp_path):
    from recorder.analysis.spark_export import export_spark
    from recorder.core.times import DatasetError

    with open_dataset(recorded) as ds, pytest.raises(DatasetError, match="runs locally"):
        export_spark(ds, "tardis-trades", tmp_path / "x.csv", spark=spark)
