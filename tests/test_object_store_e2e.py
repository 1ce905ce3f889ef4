"""Object storage and many hosts, against a real S3 API on loopback (moto's server).

- two collectors acting as two hosts upload into one prefix; one query sees both;
- the store unreachable for a few seconds mid-run: nothing lost, the outage is in events;
- unreachable at start-up: recording goes into the spool (with an event), the clean stop
  leaves the files there (with an event), the next start uploads them;
- wrong credentials or a missing bucket at start-up: one line and exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recorder.core.location import StoreURL, spool_root
from recorder.core.schema import make_row
from recorder.simulator.testing import SimulatorProcess
from sinks.object_store import S3Store
from sinks.parquet_sink import ParquetSink
from sinks.uploader import Uploader, UploadingSink, waiting_files
from tests import s3_helpers
from tests.e2e import FAST, ROOT, SUBS, write_config
from tests.s3_helpers import BUCKET, Gate

moto = s3_helpers.moto  # the fixture


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "11", "--rate", "200"]) as s:
        yield s


def _config(tmp: Path, url: str, name: str = "s3rec", output: str = "",
            upload_wait: float = 5) -> Path:
    extra = (FAST.format(stale=3.0) + f'[output]\nrotate = "2s"\nupload_wait = {upload_wait}\n'
             + output)
    return write_config(tmp, f"{name}.toml", "v2", url, SUBS, extra)


def _recorder(*args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recorder", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


def _query(sql: str, data: str, env: dict) -> list[dict]:
    r = _recorder("query", sql, "--data", data, "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _sql(sql: str, data: str, env: dict, monkeypatch) -> list[tuple]:
    """In this process (a `recorder query` costs a second and a half of start-up)."""
    from recorder.analysis.dataset import open_dataset

    for k, v in env.items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    with open_dataset(data) as ds:
        return ds.sql(sql).fetchall()


def _spool(cache: Path, prefix: str) -> Path:
    return spool_root(StoreURL(BUCKET, prefix), cache / "market-recorder" / "spool")


def test_two_hosts_upload_into_one_prefix_and_one_query_sees_both(moto, sim, tmp_path,
                                                                    monkeypatch):
    cfg = _config(tmp_path, sim.urls["ws_v2"])
    url = f"s3://{BUCKET}/two-hosts"
    procs = {}
    for host in ("host-a", "host-b"):
        env = moto.env(RECORDER_HOST=host, XDG_CACHE_HOME=str(tmp_path / host))
        procs[host] = subprocess.Popen(
            [sys.executable, "-m", "recorder", "run", str(cfg), "--data", url,
             "--duration", "2.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT, env=env)
    for host, proc in procs.items():
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{host}: {err[-3000:]}"
        # A clean stop uploaded every finished file: the spool holds none.
        assert waiting_files(_spool(tmp_path / host, "two-hosts")) == []

    keys = moto.keys("two-hosts")
    trades = [k for k in keys if "/trades/exchange=kraken/date=" in k]
    assert any("-host-a-" in k for k in trades) and any("-host-b-" in k for k in trades)
    # Only complete files at final keys; nothing half-written, no staging object left.
    assert all(k.endswith(".parquet") for k in keys if "/_uploads/" not in k)
    assert not [k for k in keys if "/_uploads/" in k or k.endswith(".tmp")]

    env = moto.env()
    rows = _query("SELECT host, count(*) AS n FROM events GROUP BY host ORDER BY host", url,
                  env)  # `recorder query --data s3://...`
    assert [r["host"] for r in rows] == ["host-a", "host-b"]
    per_host = _sql(
        "SELECT regexp_extract(_f, '-(host-[ab])-\\d+-\\d{4,}', 1) AS host, count(*) AS n "
        "FROM (SELECT filename AS _f FROM read_parquet('s3://" + BUCKET +
        "/two-hosts/trades/*/*/*.parquet', filename = true)) GROUP BY ALL ORDER BY 1",
        url, env, monkeypatch)  # the notebook API: open_dataset("s3://...")
    assert [h for h, _ in per_host] == ["host-a", "host-b"]
    assert all(n > 0 for _, n in per_host)
    assert _sql("SELECT count(*) FROM trades", url, env, monkeypatch)[0][0] == sum(
        n for _, n in per_host)
    assert _sql("SELECT count(*) FROM events WHERE kind IN ('spool_dropped', "
                "'upload_failed', 'upload_pending_at_stop')", url, env, monkeypatch) == [(0,)]


def _trade(i: int) -> tuple:
    return make_row("trades", exchange="kraken", symbol="BTC/USD",
                    ts_recv=time.time_ns() // 1000, price="100.5", qty="0.25", side="buy",
                    trade_id=str(i))


def test_store_unreachable_mid_run_loses_nothing(moto, tmp_path, monkeypatch):
    gate = Gate(moto.port)
    try:
        store = S3Store(StoreURL(BUCKET, "outage"), moto.env(gate.url), host="gated",
                        connect_timeout=1.0, request_timeout=5.0, attempts=1)
        spool = tmp_path / "spool"
        sink = ParquetSink(spool, "kraken", rotate_seconds=1, journal_interval=0.1,
                           source="outage-1", host="gated")
        uploader = Uploader(spool, store, sink.reporter, source=sink.source,
                            max_spool_bytes=1 << 30, retry_initial=0.2, retry_max=0.5,
                            scan_interval=0.2, settle=0.2)
        out = UploadingSink(sink, uploader, upload_wait=15)
        written = 0
        t0 = time.monotonic()
        went_down = came_up = False
        while time.monotonic() - t0 < 5.0:
            elapsed = time.monotonic() - t0
            if elapsed >= 1.2 and not went_down:
                gate.down()  # the store is gone for 2.5 s: files wait in the spool
                went_down = True
            if elapsed >= 3.7 and not came_up:
                gate.up()
                came_up = True
            out.write("trades", [_trade(written + i) for i in range(20)])
            written += 20
            out.tick()
            time.sleep(0.05)
        waiting_mid = uploader.snapshot()
        assert out.close(timeout=10)
        assert waiting_files(spool) == []
    finally:
        gate.close()

    for k, v in moto.env().items():
        monkeypatch.setenv(k, v)
    from recorder.analysis.dataset import open_dataset

    with open_dataset(f"s3://{BUCKET}/outage") as ds:
        n, distinct = ds.sql("SELECT count(*), count(DISTINCT trade_id) FROM trades").fetchall()[0]
        kinds = {k for (k,) in ds.sql("SELECT DISTINCT kind FROM events").fetchall()}
        hosts = {h for (h,) in ds.sql("SELECT DISTINCT host FROM events").fetchall()}
    assert n == written and distinct == written, (n, written)
    assert {"upload_failed", "upload_resumed"} <= kinds, kinds
    assert hosts == {"gated"}
    assert waiting_mid["uploaded_files"] > 0


def test_unreachable_at_startup_records_into_the_spool_and_next_start_uploads(
        moto, sim, tmp_path, monkeypatch):
    cfg = _config(tmp_path, sim.urls["ws_v2"], name="offline", upload_wait=1)
    url = f"s3://{BUCKET}/offline"
    gate = Gate(moto.port)
    gate.down()
    try:
        env = moto.env(gate.url, XDG_CACHE_HOME=str(tmp_path / "cache"),
                       RECORDER_HOST="offline-host")
        r = _recorder("run", str(cfg), "--data", url, "--duration", "2.5", env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        spool = _spool(tmp_path / "cache", "offline")
        left = waiting_files(spool)
        assert any(w.table == "trades" for w in left), left
        assert moto.keys("offline") == []

        kinds = [k for (k,) in _sql("SELECT kind FROM events", str(spool), env, monkeypatch)]
        assert "store_unreachable" in kinds and "upload_pending_at_stop" in kinds, kinds

        status = _recorder("status", "--data", url, env=env)
        assert status.returncode == 0, status.stderr
        assert f"store {url}: spool {spool} holds {len(left)} file(s)" in status.stdout
        from recorder.analysis.status import collect_status

        monkeypatch.setenv("RECORDER_HOST", "offline-host")  # status runs on that host
        report = collect_status(spool)
        assert report["store"]["waiting_files"] == len(left)
        assert report["store"]["upload_lag_s"] > 0
        events = report["collectors"]["offline-public"]["events"]
        assert events["store_unreachable"] == 1 and events["upload_pending_at_stop"] == 1

        gate.up()  # the store is back: the next start uploads what the spool holds
        r = _recorder("run", str(cfg), "--data", url, "--duration", "1", env=env)
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        gate.close()
    assert waiting_files(spool) == []
    keys = moto.keys("offline")
    assert {w.rel for w in left} <= {k.split("/offline/", 1)[1] for k in keys}
    kinds = {k for (k,) in _sql("SELECT DISTINCT kind FROM events", url, moto.env(),
                                monkeypatch)}
    assert {"store_unreachable", "upload_pending_at_stop"} <= kinds


@pytest.mark.parametrize("case", ["wrong_credentials", "missing_bucket"])
def test_refused_at_startup_is_one_line_and_exit_2(moto, tmp_path, case):
    cache = tmp_path / "cache"
    if case == "wrong_credentials":
        env = moto.env(AWS_SECRET_ACCESS_KEY="not-the-secret", XDG_CACHE_HOME=str(cache))
        cfg = _config(tmp_path, "ws://127.0.0.1:9/v2")
        args = ["--data", f"s3://{BUCKET}/refused"]
        expect = "ACCESS_DENIED"
    else:
        env = moto.env(XDG_CACHE_HOME=str(cache))
        cfg = _config(tmp_path, "ws://127.0.0.1:9/v2",
                      output='path = "s3://no-such-bucket/refused"\n')
        args = []
        expect = "the bucket 'no-such-bucket' does not exist"
    t0 = time.monotonic()
    r = _recorder("run", str(cfg), *args, "--duration", "30", env=env)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and expect in lines[0], lines[0]
    assert time.monotonic() - t0 < 20  # not a retry loop
    assert not list(cache.rglob("*.parquet"))
