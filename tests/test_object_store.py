"""Object storage and many hosts, without a store: URLs and spools, the config keys, the
``host`` column, the uploader's rules (quota, retries, stop) against a fake store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.analysis.dataset import open_dataset
from recorder.analysis.status import collector_of
from recorder.core.config import ConfigError, load_config
from recorder.core.location import (
    StoreURL,
    parse_store_url,
    read_marker,
    resolve,
    spool_root,
    write_marker,
)
from recorder.core.schema import arrow_schema, make_row
from sinks.object_store import Uploaded, describe, is_permanent
from sinks.parquet_sink import ParquetSink
from sinks.reporting import Reporter
from sinks.uploader import Uploader, UploadingSink, read_states, waiting_files

KIND = [c for c in arrow_schema("events").names].index("kind")
DAY = 1_790_000_000_000_000  # 2026-09-21, µs


# -- URLs, spools, config ----------------------------------------------------------------


def test_store_urls_and_their_spool(tmp_path):
    s = parse_store_url("s3://my-bucket/a/b/")
    assert s == StoreURL("my-bucket", "a/b") and s.url == "s3://my-bucket/a/b"
    assert s.key("trades/x.parquet") == "my-bucket/a/b/trades/x.parquet"
    # What a typer Path option makes of it is still the same store.
    assert parse_store_url(Path("s3://my-bucket/a/b")) == s
    assert parse_store_url("s3://my-bucket") == StoreURL("my-bucket", "")
    assert parse_store_url("data/s3") is None and parse_store_url(tmp_path) is None
    for bad in ("s3://A_B/x", "s3:///x", "s3://ok-bucket/../x"):
        with pytest.raises(ValueError):
            parse_store_url(bad)
    root = spool_root(s, tmp_path)
    assert root == tmp_path / "my-bucket" / "a%2Fb"
    assert spool_root(StoreURL("my-bucket", "a"), tmp_path) != root
    # A spool names its store: a process handed only the directory knows where files go.
    assert resolve(root) == (root, None)
    write_marker(root, s)
    assert read_marker(root) == s and resolve(root) == (root, s)
    assert resolve("s3://my-bucket/a/b", tmp_path) == (root, s)


def test_default_spool_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("RECORDER_SPOOL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root, _ = resolve("s3://bkt/p")
    assert root == tmp_path / "market-recorder" / "spool" / "bkt" / "p"
    monkeypatch.setenv("RECORDER_SPOOL", str(tmp_path / "elsewhere"))
    assert resolve("s3://bkt/p")[0] == tmp_path / "elsewhere" / "bkt" / "p"


def _cfg(tmp: Path, output: str) -> Path:
    path = tmp / "c.toml"
    path.write_text('[exchange]\nname = "kraken"\n[output]\n' + output +
                    '\n[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD"]\n')
    return path


def test_config_takes_an_object_store_path(tmp_path):
    cfg = load_config(_cfg(tmp_path, f'path = "s3://bkt/rec/x"\nspool = "{tmp_path}/sp"\n'
                                     'spool_max_mb = 500\nupload_wait = 3'))
    assert cfg.output_url == "s3://bkt/rec/x"
    assert cfg.output_path == tmp_path / "sp" / "bkt" / "rec%2Fx"
    assert (cfg.spool_max_mb, cfg.upload_wait) == (500, 3.0)
    plain = load_config(_cfg(tmp_path, 'path = "data"'))
    assert plain.output_url is None and plain.output_path == Path("data")
    with pytest.raises(ConfigError, match="output.path: .*not a bucket name"):
        load_config(_cfg(tmp_path, 'path = "s3://Bad_Bucket/x"'))
    with pytest.raises(ConfigError, match="output.max_file_mb: at most 4096"):
        load_config(_cfg(tmp_path, 'path = "s3://bkt/x"\nmax_file_mb = 8000'))


def test_store_errors_are_one_short_line():
    refused = OSError("When getting information for bucket 'b': AWS Error ACCESS_DENIED during "
                      "HeadBucket operation: No response body. (Request ID: ABC)")
    assert describe(refused) == ("ACCESS_DENIED (HeadBucket): access denied: wrong "
                                 "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or no permission "
                                 "on the bucket")
    assert is_permanent(refused)
    down = OSError("When getting information for key 'x' in bucket 'b': AWS Error "
                   "NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not "
                   "connect to server; Details: Failed to connect to 127.0.0.1:9 after 0 ms")
    assert describe(down) == "NETWORK_CONNECTION (HeadObject): Could not connect to server"
    assert not is_permanent(down)


# -- many hosts: file names and events.host -----------------------------------------------


def test_events_say_which_host_and_old_files_still_read(tmp_path, monkeypatch):
    monkeypatch.setenv("RECORDER_HOST", "vm 7")
    ev = make_row("events", exchange="kraken", ts_recv=DAY, kind="disconnected")
    mine = make_row("events", exchange="kraken", ts_recv=DAY + 1, kind="x", host="given")
    with ParquetSink(tmp_path, "kraken", journal_interval=0.05) as sink:
        assert sink.source.startswith("vm_7-")  # the default source: <host>-<pid>
        sink.write("events", [ev, mine])
    # A file from before the column existed (schema version 2) reads, host NULL.
    old = pa.schema([f for f in arrow_schema("events") if f.name != "host"])
    part = tmp_path / "events" / "exchange=kraken" / "date=2026-09-21"
    pq.write_table(pa.Table.from_pylist([{"exchange": "kraken", "ts_recv": DAY + 2,
                                          "kind": "old"}], old), part / "old.parquet")
    with open_dataset(tmp_path) as ds:
        rows = ds.sql("SELECT kind, host FROM events ORDER BY ts_recv").fetchall()
    assert rows == [("disconnected", "vm_7"), ("x", "given"), ("old", None)]
    files = [p.name for p in part.glob("*.parquet") if p.name != "old.parquet"]
    assert files and all("-vm_7-" in f for f in files)


def test_status_keys_collectors_without_host_and_pid():
    assert collector_of("pub-public-vm1-4242", host="vm1") == "pub-public"
    assert collector_of("pub-public-vm1-4242-stop", host="vm1") == "pub-public"
    assert collector_of("pub-public-4242", host="vm1") == "pub-public"
    assert collector_of("pub-public-vm2-4242", host="vm1") == "pub-public-vm2"


# -- the uploader against a fake store ---------------------------------------------------


class FakeStore:
    url = "s3://fake/prefix"

    def __init__(self, remote: Path) -> None:
        self.remote = remote
        self.down = False

    def upload(self, local: Path, rel: str) -> Uploaded:
        if self.down:
            raise OSError("AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: "
                          "7, Could not connect to server")
        dest = self.remote / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        return Uploaded(rel, local.stat().st_size, 0.001)


def _file(root: Path, table: str, name: str, rows: int) -> Path:
    part = root / table / "exchange=kraken" / "date=2026-09-21"
    part.mkdir(parents=True, exist_ok=True)
    path = part / f"{name}.parquet"
    pq.write_table(pa.table({"x": list(range(rows))}), path)
    return path


def _kinds(reporter: Reporter) -> list[tuple[str, dict]]:
    return [(r[KIND], json.loads(r[KIND + 3])) for r in reporter.take()]


def test_spool_quota_drops_the_oldest_market_data_first_and_says_so(tmp_path):
    spool = tmp_path / "spool"
    events = _file(spool, "events", "e1", 10)
    old = _file(spool, "trades", "t1", 5000)
    new = _file(spool, "book", "b1", 5000)
    store = FakeStore(tmp_path / "remote")
    store.down = True
    reporter = Reporter("kraken", None)
    limit = new.stat().st_size + events.stat().st_size + 10
    up = Uploader(spool, store, reporter, source="s-1", max_spool_bytes=limit, settle=0)
    assert not up.cycle()  # the store is down: files wait, minus what the quota drops
    assert [w.path for w in waiting_files(spool)] == [events, new]
    kinds = _kinds(reporter)
    assert [k for k, _ in kinds] == ["spool_dropped", "upload_failed"]
    assert kinds[0][1]["file"] == old.relative_to(spool).as_posix()
    assert kinds[0][1]["rows"] == 5000
    # The store is back: everything left goes up, oldest first, and the spool is empty.
    store.down = False
    assert up.cycle()
    assert waiting_files(spool) == []
    assert sorted(p.name for p in store.remote.rglob("*.parquet")) == ["b1.parquet",
                                                                     "e1.parquet"]
    assert [k for k, _ in _kinds(reporter)] == ["upload_resumed"]
    up.write_state(force=True)
    (state,) = read_states(spool)
    assert state["uploaded_files"] == 2 and state["dropped_files"] == 1


def test_a_clean_stop_while_the_store_is_down_leaves_the_files_with_an_event(tmp_path):
    spool = tmp_path / "spool"
    store = FakeStore(tmp_path / "remote")
    store.down = True
    sink = ParquetSink(spool, "kraken", journal_interval=0.05, source="c-public-h-1",
                       host="h")
    up = Uploader(spool, store, sink.reporter, source=sink.source, max_spool_bytes=1 << 30,
                  retry_initial=0.05, retry_max=0.1, scan_interval=0.05, settle=0)
    out = UploadingSink(sink, up, upload_wait=0.3)
    out.write("trades", [make_row("trades", exchange="kraken", symbol="BTC/USD",
                                  ts_recv=DAY + i, price="1.5", qty="2", side="buy",
                                  trade_id=str(i)) for i in range(100)])
    assert out.close(timeout=5)
    left = waiting_files(spool)
    assert {w.table for w in left} == {"trades", "events"}
    with open_dataset(spool) as ds:
        kinds = [k for (k,) in ds.sql("SELECT kind FROM events ORDER BY ts_recv").fetchall()]
        n = ds.sql("SELECT count(*) FROM trades").fetchall()[0][0]
    assert n == 100
    assert "upload_failed" in kinds and kinds[-1] == "upload_pending_at_stop", kinds
    # The next start uploads what the spool holds.
    store.down = False
    again = Uploader(spool, store, Reporter("kraken", None), source="c-public-h-2",
                     max_spool_bytes=1 << 30, settle=0)
    assert again.cycle() and waiting_files(spool) == []
    assert len(list(store.remote.rglob("*.parquet"))) == len(left)
