"""The Iceberg table catalog (sinks/catalog.py, sinks/catalog_queue.py): every published
file committed once, schema grown from recorder.core.schema, races between writers retried,
a catalog that fails keeps its queue and says so."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.core.config import ConfigError, load_config
from recorder.core.schema import TABLES, arrow_schema
from sinks.catalog import (
    CatalogError,
    Tables,
    check_uri,
    read_settings,
    target_for,
    target_of_root,
    write_settings,
)
from sinks.catalog_queue import Committer, enqueue, pending_count
from sinks.reporting import Reporter
from tests.datasets import HOUR, T0, S, level, trade, write


def run(*args: str):  # noqa: ANN201 - the real `recorder` app, in process
    from typer.testing import CliRunner

    from recorder.cli.main import app

    return CliRunner().invoke(app, list(args))


def _files(root: Path, table: str) -> list[str]:
    return sorted(f"file://{p}" for p in (root / table).rglob("*.parquet"))


def _duckdb_rows(root: Path, table: str) -> int:
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{root}/{table}/*/*/*.parquet')"
                      ).fetchall()[0][0]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = (tmp_path / "data").resolve()
    r.mkdir()
    write_settings(r, "sqlite")
    return r


def test_every_published_file_is_committed_once(root: Path):
    events = []
    trades = [trade("BTC/USD", T0 + i * 10 * 60 * S, "100.5", "0.1", tid=i) for i in range(20)]
    book = [level(T0 + i * S, i + 1, "bid", "100", "1", snap=i == 0) for i in range(5)]
    write(root, {"trades": trades, "book": book}, on_problem=lambda k, d: events.append(k))
    assert events == []
    tables = Tables(target_of_root(root))
    for table, n in (("trades", 20), ("book", 5)):
        tbl = tables.table(table)
        assert sorted(tables.referenced(tbl)) == _files(root, table)
        assert tbl.scan().to_arrow().num_rows == n == _duckdb_rows(root, table)
        # Partitioned as the Hive layout: exchange, and the UTC date of ts_recv.
        assert [f.name for f in tbl.spec().fields] == ["exchange", "date"]
        assert tbl.location().endswith(f"{root}/_catalog/{table}")
    assert len(_files(root, "trades")) == 4  # one file per hour of rows
    assert pending_count(root) == 0
    # The table metadata lives under _catalog/, beside the tables.
    assert list((root / "_catalog" / "trades" / "metadata").glob("*.metadata.json"))
    # The book checksum (uint32) is a long in Iceberg; its values read back unchanged.
    assert str(tables.table("book").schema().find_field("checksum").field_type) == "long"


def test_the_table_follows_the_project_schema(root: Path):
    """A table created by an older version (a column fewer) gains the column before a
    file that has it is added; a file without a column the table has is added as is."""
    tables = Tables(target_of_root(root))
    from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids
    from pyiceberg.schema import assign_fresh_schema_ids

    from sinks.catalog import TABLE_PROPERTIES, _partition_spec, iceberg_arrow_schema

    old = iceberg_arrow_schema(arrow_schema("trades")).remove(
        arrow_schema("trades").get_field_index("sequence"))
    schema = assign_fresh_schema_ids(_pyarrow_to_schema_without_ids(old))
    tables.catalog.create_namespace("recorder")
    tables.catalog.create_table("recorder.trades", schema=schema,
                                partition_spec=_partition_spec(schema),
                                properties=TABLE_PROPERTIES)
    # A file written by that older version: no sequence column.
    old_file = root / "old.parquet"
    rows = pa.table({"exchange": ["kraken"], "symbol": ["BTC/USD"],
                     "ts_recv": pa.array([T0], pa.timestamp("us", tz="UTC"))})
    pq.write_table(rows, old_file)
    write(root, {"trades": [trade("BTC/USD", T0 + S, "1", "2", tid=1)]})
    tbl = tables.table("trades")
    assert sorted(tbl.schema().column_names) == sorted(f.name for f in arrow_schema("trades"))
    assert tables.append("trades", [f"file://{old_file}"]) == 1
    got = tables.table("trades").scan().to_arrow()
    assert got.num_rows == 2 and got.column("sequence").null_count == 2


def test_a_file_from_a_newer_version_brings_its_column(root: Path):
    tables = Tables(target_of_root(root))
    tables.table("events")
    newer = root / "newer.parquet"
    schema = arrow_schema("events").append(pa.field("region", pa.string()))
    pq.write_table(pa.table({f.name: pa.nulls(1, f.type) for f in schema}, schema=schema)
                   .set_column(1, "ts_recv", pa.array([T0], pa.timestamp("us", tz="UTC"))),
                   newer)
    assert tables.append("events", [f"file://{newer}"]) == 1
    assert "region" in tables.table("events").schema().column_names


def test_writers_racing_for_one_table_all_land(root: Path, tmp_path: Path):
    """Two writers (two catalogs objects, as two hosts) commit 12 files each at once:
    commits that lose the race are retried, every file is in the table once."""
    paths = {w: [] for w in "ab"}
    for w in "ab":
        for i in range(12):
            d = tmp_path / f"src-{w}{i}"
            write(d, {"trades": [trade("BTC/USD", T0 + i * S, "1", "1", tid=i)]},
                  source=f"host-{w}")
            paths[w] += [f"file://{p}" for p in d.rglob("*.parquet")]
    Tables(target_of_root(root)).table("trades")
    errors = []

    def writer(w: str) -> None:
        try:
            tables = Tables(target_of_root(root))
            for p in paths[w]:
                tables.append("trades", [p])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(w,)) for w in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    tables = Tables(target_of_root(root))
    assert sorted(tables.referenced(tables.table("trades"))) == sorted(paths["a"] + paths["b"])


def test_a_file_queued_twice_is_added_once(root: Path):
    write(root / "src", {"trades": [trade("BTC/USD", T0, "1", "1")]})
    (path,) = _files(root / "src", "trades")
    events = []
    reporter = Reporter("kraken", lambda k, d: events.append(k))
    committer = Committer(target_of_root(root), reporter)
    enqueue(root, "trades", path)
    assert committer.commit_pending()
    enqueue(root, "trades", path)  # a crash after the commit, before the record went
    assert committer.commit_pending()
    tables = Tables(target_of_root(root))
    assert list(tables.referenced(tables.table("trades"))) == [path]
    assert pending_count(root) == 0 and events == []


def test_a_failing_catalog_keeps_the_queue_and_says_so(tmp_path: Path):
    root = (tmp_path / "data").resolve()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the catalog's folder should be")
    target = target_for(root, f"sqlite:///{blocker}/catalog.db")
    write(root / "src", {"trades": [trade("BTC/USD", T0, "1", "1")]})
    (path,) = _files(root / "src", "trades")
    events = []
    reporter = Reporter("kraken", lambda k, d: events.append((k, d)))
    committer = Committer(target, reporter)
    enqueue(root, "trades", path)
    assert not committer.commit_pending()
    assert not committer.commit_pending()
    assert pending_count(root) == 1
    assert [k for k, _ in events] == ["catalog_commit_failed"]
    assert events[0][1]["catalog"].startswith("sqlite:///")
    blocker.unlink()  # the catalog is back
    assert committer.commit_pending()
    assert pending_count(root) == 0
    assert [k for k, _ in events] == ["catalog_commit_failed", "catalog_commit_resumed"]
    tables = Tables(target)
    assert list(tables.referenced(tables.table("trades"))) == [path]


def test_a_missing_file_is_an_event_not_a_stuck_queue(root: Path):
    events = []
    committer = Committer(target_of_root(root), Reporter("kraken",
                                                         lambda k, d: events.append(k)))
    enqueue(root, "trades", f"file://{root}/trades/exchange=kraken/date=2026-11-18/gone.parquet")
    assert committer.commit_pending()
    assert events == ["catalog_file_missing"] and pending_count(root) == 0


def test_without_a_catalog_nothing_changes(tmp_path: Path):
    write(tmp_path, {"trades": [trade("BTC/USD", T0, "1", "1")]})
    assert not (tmp_path / "_catalog").exists() and not (tmp_path / ".catalog").exists()
    assert read_settings(tmp_path) is None


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["sqlite", "sqlite:////var/lib/recorder/catalog.db",
                                 "postgresql://recorder@db.example/recorder",
                                 "postgresql+psycopg2://recorder@db:5432/recorder",
                                 "https://catalog.example/api/catalog"])
def test_catalog_uris_accepted(uri: str):
    assert check_uri(uri) == uri


@pytest.mark.parametrize("uri, says", [
    ("oracle://x", "allowed: sqlite"), ("sqlite://relative.db", "sqlite:////absolute"),
    ("postgresql://recorder:hunter2@db/recorder", "PGPASSWORD")])
def test_catalog_uris_refused(uri: str, says: str):
    with pytest.raises(CatalogError) as e:
        check_uri(uri)
    assert says in str(e.value) and "hunter2" not in str(e.value)


def test_a_root_keeps_its_catalog(root: Path):
    write_settings(root, "sqlite")  # the same again: fine
    with pytest.raises(CatalogError, match="commits to the catalog 'sqlite' already"):
        write_settings(root, "postgresql://r@db/r")


def test_the_sqlite_catalog_of_a_store_is_in_its_spool(tmp_path: Path):
    from recorder.core.location import StoreURL

    t = target_for(tmp_path, "sqlite", StoreURL("bucket", "rec/ord"))
    assert t.uri == f"sqlite:///{tmp_path.resolve()}/_catalog/catalog.db"
    assert t.warehouse == "s3://bucket/rec/ord/_catalog"
    assert t.file_uri("trades/x.parquet") == "s3://bucket/rec/ord/trades/x.parquet"
    pg = target_for(tmp_path, "postgresql://r@db/r")
    assert pg.uri == "postgresql+psycopg2://r@db/r"


def _config(tmp_path: Path, catalog: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'[exchange]\nname = "kraken"\n[output]\npath = "{tmp_path}/d"\n'
                    f'catalog = "{catalog}"\n[[subscribe]]\nchannel = "trade"\n'
                    'symbols = ["BTC/USD"]\n')
    return path


def test_output_catalog_in_the_config(tmp_path: Path):
    assert load_config(_config(tmp_path, "sqlite")).catalog == "sqlite"
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, "postgresql://u:s3cret@db/r"))
    assert e.value.key == "output.catalog" and "s3cret" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, "mongodb://db"))
    assert e.value.key == "output.catalog" and "allowed" in str(e.value)


# -- the command ------------------------------------------------------------------------------


def test_iceberg_command_adds_what_the_tables_lack(tmp_path: Path):
    data = tmp_path / "data"
    write(data, {"trades": [trade("BTC/USD", T0 + h * HOUR, "1", "1", tid=h) for h in range(3)],
                 "book": [level(T0, 1, "bid", "1", "1", snap=True)]})
    r = run("iceberg", "--data", str(data), "--catalog", "sqlite")
    assert r.exit_code == 0, r.output
    assert "trades: 3 file(s) added, 3 in the table" in r.output
    assert json.loads((data / "_catalog" / "catalog.json").read_text()) == {"catalog": "sqlite"}
    r = run("iceberg", "--data", str(data))
    assert r.exit_code == 0 and "trades: 0 file(s) added, 3 in the table" in r.output
    r = run("iceberg", "--data", str(data), "--catalog", "postgresql://r@db/r")
    assert r.exit_code == 2 and "commits to 'sqlite'" in r.output
    r = run("iceberg", "--data", str(tmp_path / "nothing"))
    assert r.exit_code == 2 and "no such directory" in r.output
    assert set(TABLES) >= {"trades", "book"}
