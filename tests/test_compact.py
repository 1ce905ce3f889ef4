"""`recorder compact` (recorder/analysis/compact.py): the same rows before and after
(checked with DuckDB), one swap readers never see half of, with and without a catalog."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from recorder.analysis.compact import compact
from recorder.analysis.dataset import open_dataset, parquet_files
from recorder.cli.main import app
from recorder.core.schema import make_row
from sinks.catalog import Tables, target_of_root, write_settings
from sinks.compacted import is_compacted
from sinks.parquet_format import read_file_metadata
from tests.datasets import DAY, HOUR, T0, S, level, trade, write

DATE0 = "2026-11-18"


def run(*args: str):  # noqa: ANN201
    return CliRunner().invoke(app, list(args))


def _record(root: Path) -> None:
    """Hourly files: trades of two exchanges over two days, a book, some events."""
    trades = [trade("BTC/USD", T0 + h * HOUR + i * S, f"{100 + i}.5", "0.25", tid=h * 10 + i)
              for h in range(5) for i in range(3)]
    trades += [trade("ETH/USD", T0 + DAY + h * HOUR, "2000", "1", tid=900 + h)
               for h in range(3)]
    write(root, {"trades": trades,
                 "book": [level(T0 + h * HOUR, h + 1, "bid", "99", "1", snap=True)
                          for h in range(4)]})
    kucoin = [make_row("trades", exchange="kucoin", symbol="BTC/USDT", ts_recv=T0 + h * HOUR,
                       price="1.5", qty="2", side="sell", trade_id=f"k{h}") for h in range(3)]
    write(root, {"trades": kucoin}, exchange="kucoin", source="kc")


def _rows(root: Path, table: str) -> list[tuple]:
    """Every row, columns by name (union_by_name orders them by the first file)."""
    files = [str(p) for p in parquet_files(root, table)]
    src = f"read_parquet({files}, hive_partitioning = true, union_by_name = true)"
    cols = sorted(c for c in duckdb.sql(f"SELECT * FROM {src} LIMIT 0").columns)
    return duckdb.sql(f"SELECT {', '.join(cols)} FROM {src} ORDER BY ALL").fetchall()


def _names(root: Path, table: str, exchange: str, date: str) -> list[str]:
    folder = root / table / f"exchange={exchange}" / f"date={date}"
    return sorted(p.name for p in folder.glob("*.parquet"))


def test_compaction_keeps_every_row_and_leaves_one_file_per_partition(tmp_path: Path):
    root = tmp_path / "data"
    _record(root)
    before = {t: _rows(root, t) for t in ("trades", "book")}
    assert len(_names(root, "trades", "kraken", DATE0)) == 5
    results = compact(root, before="2030-01-01")
    assert sorted(r.partition.rel for r in results) == [
        f"book/exchange=kraken/date={DATE0}", f"trades/exchange=kraken/date={DATE0}",
        "trades/exchange=kraken/date=2026-11-19", f"trades/exchange=kucoin/date={DATE0}"]
    assert {t: _rows(root, t) for t in ("trades", "book")} == before
    (name,) = _names(root, "trades", "kraken", DATE0)
    assert is_compacted(name) and name.startswith("20261118T000000Z-20261118T040002Z-")
    meta = read_file_metadata(root / "trades" / "exchange=kraken" / f"date={DATE0}" / name)
    assert meta["table"] == "trades" and meta["exchange"] == "kraken"
    assert len(__import__("json").loads(meta["replaces"])) == 5
    # Rows keep their order: a file's rows together, files in name order.
    got = duckdb.sql(f"SELECT trade_id FROM '{root}/trades/exchange=kraken/date={DATE0}/"
                     f"{name}'").fetchall()
    assert [r[0] for r in got] == [str(h * 10 + i) for h in range(5) for i in range(3)]
    assert compact(root, before="2030-01-01") == []  # nothing left to do


def test_the_day_being_recorded_is_left_alone_by_default(tmp_path: Path):
    root = tmp_path / "data"
    _record(root)
    r = run("compact", "--data", str(root), "--before", DATE0)  # only days before it
    assert r.exit_code == 0 and "nothing to compact" in r.output
    r = run("compact", "--data", str(root), "--date", "2026-11-19", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "trades/exchange=kraken/date=2026-11-19: 3 files" in r.output
    assert len(_names(root, "trades", "kraken", "2026-11-19")) == 3  # a dry run
    r = run("compact", "--data", str(root), "--table", "trades", "--exchange", "kraken",
            "--date", "2026-11-19", "--progress")
    assert r.exit_code == 0, r.output
    assert "3 files ->" in r.output and "[1/1] done" in r.output
    assert len(_names(root, "trades", "kraken", DATE0)) == 5  # not asked for


def test_readers_never_see_both_the_compacted_file_and_its_inputs(tmp_path: Path):
    """A compaction stopped between publishing its file and deleting the inputs: readers
    count every row once; the next run deletes the inputs."""
    root = tmp_path / "data"
    _record(root)
    before = _rows(root, "trades")
    folder = root / "trades" / "exchange=kraken" / f"date={DATE0}"
    inputs = {p.name: p.read_bytes() for p in folder.glob("*.parquet")}
    compact(root, tables=["trades"], exchange="kraken", dates=[DATE0])
    for name, data in inputs.items():  # as if the deletes had not happened
        (folder / name).write_bytes(data)
    assert len(_names(root, "trades", "kraken", DATE0)) == 6
    assert _rows(root, "trades") == before
    with open_dataset(root) as ds:
        assert ds.sql("SELECT count(*) FROM trades").fetchall()[0][0] == len(before)
    results = compact(root, tables=["trades"], exchange="kraken", dates=[DATE0])
    assert [len(r.finished_leftovers) for r in results] == [5]
    assert len(_names(root, "trades", "kraken", DATE0)) == 1
    assert _rows(root, "trades") == before


def test_files_of_older_versions_compact_with_their_columns(tmp_path: Path):
    """An old file without a column and a new one with it (one collector, written before
    and after an upgrade): the compacted file has the column, null for the old rows, and
    the same rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "data"
    write(root, {"trades": [trade("BTC/USD", T0 + HOUR, "1", "2", tid=7)]})
    folder = root / "trades" / "exchange=kraken" / f"date={DATE0}"
    old = pa.table({"exchange": ["kraken"], "symbol": ["BTC/USD"],
                    "ts_recv": pa.array([T0], pa.timestamp("us", tz="UTC")),
                    "price": pa.array([None], pa.decimal128(18, 10))})
    # The same writer ("test", the tests' sink source) as another process (pid 4242).
    pq.write_table(old, folder / "20261118T000000Z-20261118T000000Z-test-4242-0001.parquet")
    before = _rows(root, "trades")
    compact(root, dates=[DATE0])
    assert _rows(root, "trades") == before
    assert len(_names(root, "trades", "kraken", DATE0)) == 1


def test_with_a_catalog_the_swap_is_one_commit(tmp_path: Path):
    root = (tmp_path / "data").resolve()
    root.mkdir()
    write_settings(root, "sqlite")
    _record(root)  # the sink commits each file as it is published
    tables = Tables(target_of_root(root))
    tbl = tables.table("trades")
    before_rows = tbl.scan().to_arrow().num_rows
    snapshots = len(tbl.snapshots())
    duck_before = _rows(root, "trades")
    r = run("compact", "--data", str(root), "--table", "trades", "--date", DATE0)
    assert r.exit_code == 0, r.output
    tbl = tables.table("trades")
    # kraken and kucoin partitions: one overwrite commit each.
    assert len(tbl.snapshots()) == snapshots + 2
    assert tbl.current_snapshot().summary.operation.value == "overwrite"
    assert tbl.scan().to_arrow().num_rows == before_rows == len(duck_before)
    on_disk = sorted(f"file://{p}" for p in (root / "trades").rglob("*.parquet"))
    assert sorted(tables.referenced(tbl)) == on_disk
    assert _rows(root, "trades") == duck_before
    from sinks.catalog import partition_filter

    part = tables.referenced(tbl, partition_filter("kraken", DATE0))
    assert len(part) == 1 and is_compacted(next(iter(part)).rsplit("/", 1)[1])


def test_with_a_catalog_a_file_not_committed_yet_stays(tmp_path: Path):
    root = (tmp_path / "data").resolve()
    _record(root)  # recorded before the catalog: nothing committed
    write_settings(root, "sqlite")
    results = compact(root, dates=[DATE0], catalog=target_of_root(root))
    assert results == []  # the table has none of them: nothing is touched
    assert len(_names(root, "trades", "kraken", DATE0)) == 5


@pytest.mark.parametrize("args, says", [
    (["--date", "yesterday"], "--date 'yesterday' is not a date"),
    (["--table", "nope"], "--table 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], says: str):
    _record(tmp_path)
    r = run("compact", "--data", str(tmp_path), *args)
    assert r.exit_code == 2 and says in r.output


def test_a_spool_is_not_compacted(tmp_path: Path):
    from recorder.core.location import StoreURL, write_marker

    write_marker(tmp_path, StoreURL("bucket", "p"))
    r = run("compact", "--data", str(tmp_path))
    assert r.exit_code == 2 and "compact the store (--data s3://bucket/p)" in r.output


def test_each_writers_files_are_compacted_apart(tmp_path: Path):
    """Two hosts recording the same symbols (redundant collectors) into one partition: a
    compaction keeps their rows in files of their own, so a book rebuild can still follow
    one of them (recorder/analysis/rebuild.py) and trades still de-duplicate."""
    from recorder.analysis.sql import writer_of_file

    root = tmp_path / "data"
    for host in ("host-a", "host-b"):
        trades = [trade("BTC/USD", T0 + h * HOUR + i * S, f"{100 + i}.5", "0.25",
                        tid=h * 10 + i) for h in range(3) for i in range(2)]
        write(root, {"trades": trades}, source=f"rec-public-{host}-4242")

    def by_writer() -> dict[str, list]:
        with open_dataset(root) as ds:
            source = ds.source_sql("trades", order=True)
            rows = ds.sql(f"SELECT _writer, trade_id, price FROM ({source}) "
                          "ORDER BY ALL").fetchall()
            unique = ds.sql("SELECT count(*) FROM trades_unique").fetchall()[0][0]
        out: dict[str, list] = {}
        for w, tid, price in rows:
            out.setdefault(w, []).append((tid, price))
        return out | {"unique": unique}

    before = by_writer()
    assert set(before) == {"rec-public-host-a", "rec-public-host-b", "unique"}
    assert before["unique"] == 6
    results = compact(root, before="2030-01-01")
    assert sorted(r.partition.writer for r in results) == ["rec-public-host-a",
                                                           "rec-public-host-b"]
    names = _names(root, "trades", "kraken", DATE0)
    assert len(names) == 2 and all(is_compacted(n) for n in names)
    assert sorted(writer_of_file(n) for n in names) == ["rec-public-host-a",
                                                        "rec-public-host-b"]
    assert by_writer() == before
