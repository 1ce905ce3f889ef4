"""The table catalog end to end, against a real S3 API on loopback (moto's server): two
collectors acting as two hosts upload into one prefix and commit to one Iceberg table
(metadata under the prefix's _catalog/); `recorder compact --data s3://...` then swaps each
partition's files for one, in one commit, with the same rows."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recorder.simulator.testing import SimulatorProcess
from tests import s3_helpers
from tests.e2e import FAST, ROOT, SUBS, write_config
from tests.s3_helpers import BUCKET

moto = s3_helpers.moto  # the fixture
PREFIX = "catalog-hosts"
URL = f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "5", "--rate", "200"]) as s:
        yield s


def _recorder(*args: str, env: dict, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recorder", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


def _dataset_rows(table: str) -> list[tuple]:
    from recorder.analysis.dataset import open_dataset

    with open_dataset(URL) as ds:
        cols = sorted(ds.sql(f"SELECT * EXCLUDE (date) FROM {table} LIMIT 0").columns)
        return ds.sql(f"SELECT {', '.join(cols)} FROM {table} ORDER BY ALL").fetchall()


def test_two_hosts_commit_to_one_table_then_compaction_swaps_in_one_commit(
        moto, sim, tmp_path, monkeypatch):
    catalog = f"sqlite:///{tmp_path / 'shared' / 'catalog.db'}"  # both hosts reach it
    extra = (FAST.format(stale=3.0) + '[output]\nrotate = "1s"\nupload_wait = 5\n'
             f'catalog = "{catalog}"\n')
    cfg = write_config(tmp_path, "ice.toml", "v2", sim.urls["ws_v2"], SUBS, extra)
    procs = {}
    for host in ("host-a", "host-b"):
        env = moto.env(RECORDER_HOST=host, XDG_CACHE_HOME=str(tmp_path / host))
        procs[host] = subprocess.Popen(
            [sys.executable, "-m", "recorder", "run", str(cfg), "--data", URL,
             "--duration", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT, env=env)
    for host, proc in procs.items():
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, f"{host}: {err[-3000:]}"

    for k, v in moto.env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    from recorder.core.location import parse_store_url
    from sinks.catalog import Tables, target_for

    target = target_for(tmp_path / "host-a", catalog, parse_store_url(URL))
    tables = Tables(target)
    keys = moto.keys(PREFIX)
    assert any(k.startswith(f"{BUCKET}/{PREFIX}/_catalog/trades/metadata/") for k in keys)
    for table in ("trades", "book", "events"):
        in_store = sorted(f"s3://{k}" for k in keys if k.startswith(
            f"{BUCKET}/{PREFIX}/{table}/exchange="))
        tbl = tables.table(table)
        assert sorted(tables.referenced(tbl)) == in_store, table
        assert {"-host-a-" in u for u in in_store} == {True, False}  # both hosts
        assert tbl.scan().to_arrow().num_rows == len(_dataset_rows(table)), table
    before = {t: _dataset_rows(t) for t in ("trades", "book")}
    snapshots = len(tables.table("trades").snapshots())

    env = moto.env(XDG_CACHE_HOME=str(tmp_path / "host-a"))
    r = _recorder("compact", "--data", URL, "--date", "today", "--table", "trades",
                  "--table", "book", "--progress", env=env)
    assert r.returncode == 0, r.stderr
    assert "files ->" in r.stdout and "done" in r.stderr
    assert {t: _dataset_rows(t) for t in ("trades", "book")} == before
    keys = moto.keys(PREFIX)
    for table in ("trades", "book"):
        in_store = sorted(f"s3://{k}" for k in keys if k.startswith(
            f"{BUCKET}/{PREFIX}/{table}/exchange="))
        # One file per host (book rebuilds follow one host at a time), one commit.
        assert len(in_store) == 2 and all("-compacted-" in k for k in in_store), in_store
        assert {"-host-a-" in k for k in in_store} == {True, False}
        tbl = tables.table(table)
        assert sorted(tables.referenced(tbl)) == in_store
        assert tbl.scan().to_arrow().num_rows == len(before[table])
    assert len(tables.table("trades").snapshots()) == snapshots + 1  # one commit
