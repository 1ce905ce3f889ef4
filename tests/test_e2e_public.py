"""End to end: the simulator and `recorder run` as real processes; DuckDB reads the result."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from recorder.simulator.testing import SimulatorProcess
from tests.captures import DATA, flashbook_frames
from tests.e2e import all_files, db, run_recorder, start_recorder, stop, write_config

PAIRS = '["BTC/USD", "ETH/USD"]'


def _subs(*channels: str) -> str:
    out = []
    for ch in channels:
        extra = {"book": "depth = 10\n", "ohlc": "interval = 1\n"}.get(ch, "")
        out.append(f'[[subscribe]]\nchannel = "{ch}"\nsymbols = {PAIRS}\n{extra}')
    return "\n".join(out)


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "7", "--rate", "400"]) as s:
        yield s


EXPECTED_TYPES = {
    "trades": {"price": "DECIMAL(18,10)", "qty": "DECIMAL(22,10)",
               "ts_recv": "TIMESTAMP WITH TIME ZONE", "ts_exchange": "TIMESTAMP WITH TIME ZONE",
               "symbol": "VARCHAR", "side": "VARCHAR", "trade_id": "BIGINT", "date": "DATE"},
    "book": {"price": "DECIMAL(18,10)", "qty": "DECIMAL(22,10)", "is_snapshot": "BOOLEAN",
             "checksum": "UINTEGER", "verified": "BOOLEAN"},
    "spread": {"bid_price": "DECIMAL(18,10)", "ask_qty": "DECIMAL(22,10)"},
    "ohlc": {"interval_begin": "TIMESTAMP WITH TIME ZONE", "volume": "DECIMAL(28,10)",
             "trades": "BIGINT", "interval": "INTEGER"},
    "ticker": {"bid": "DECIMAL(18,10)", "volume": "DECIMAL(28,10)"},
    "events": {"kind": "VARCHAR", "ts_recv": "TIMESTAMP WITH TIME ZONE"},
}


def _check_types(con, table: str) -> None:
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {table})").fetchall())
    for col, typ in EXPECTED_TYPES.get(table, {}).items():
        assert types[col] == typ, (table, col, types[col])


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_every_public_channel_recorded(sim, tmp_path, api):
    data = tmp_path / "data"
    url = sim.urls[f"ws_{api}"]
    configs = [write_config(tmp_path, "pub.toml", api, url,
                            _subs("trade", "book", "spread", "ohlc"))]
    configs.append(write_config(tmp_path, "tick.toml", api, url, _subs("ticker")))
    for cfg in configs:
        proc = run_recorder(cfg, data, 4)
        assert proc.returncode == 0, proc.stderr
    con = db(data)
    for table in ("trades", "book", "spread", "ohlc", "ticker", "events"):
        n, symbols = con.execute(f"SELECT count(*), count(DISTINCT symbol) FROM {table}"
                                 ).fetchone()
        assert n > 0, table
        if table != "events":
            assert symbols == 2, table
        _check_types(con, table)
    # Canonical names whatever the API spelled on the wire.
    assert {r[0] for r in con.execute("SELECT DISTINCT symbol FROM trades").fetchall()} == {
        "BTC/USD", "ETH/USD"}
    # Exchange time is the exchange's, ts_recv ours; both microsecond UTC.
    bad = con.execute("SELECT count(*) FROM trades WHERE ts_exchange IS NULL "
                      "OR ts_exchange > ts_recv + INTERVAL 5 SECOND").fetchone()[0]
    assert bad == 0
    # Every book update verified against the exchange checksum; snapshots arrived.
    snaps, failures, verified = con.execute(
        "SELECT count(DISTINCT update_id) FILTER (WHERE is_snapshot), "
        "count(*) FILTER (WHERE verified = false), "
        "count(DISTINCT update_id) FILTER (WHERE verified) FROM book").fetchone()
    assert snaps >= 2 and failures == 0 and verified > 10
    # Common SQL on exact decimals runs without overflow.
    vwap = con.execute("SELECT sum(price * qty) / sum(qty) FROM trades").fetchone()[0]
    assert vwap > 0
    if api == "v2":
        ids = con.execute("SELECT symbol, list(trade_id ORDER BY trade_id) FROM trades "
                          "GROUP BY symbol").fetchall()
        for _sym, seq in ids:
            assert seq == sorted(set(seq)), "trade ids unique and increasing"
    kinds = {r[0] for r in con.execute("SELECT DISTINCT kind FROM events").fetchall()}
    assert {"connected", "status", "subscribed", "stopped"} <= kinds


def test_sigterm_finishes_every_file_within_5s(sim, tmp_path):
    data = tmp_path / "data"
    cfg = write_config(tmp_path, "pub.toml", "v2", sim.urls["ws_v2"],
                       _subs("trade", "book"))
    proc = start_recorder(cfg, data)
    try:
        time.sleep(3)
    finally:
        took = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, proc.stderr.read()
    assert took < 5
    files = all_files(data)
    assert files, "something was recorded"
    for f in files:
        assert f.suffix == ".parquet", f"leftover non-Parquet file {f}"
        pq.read_table(f)  # complete and readable
    assert db(data).execute("SELECT count(*) FROM book").fetchone()[0] > 0


def test_replayed_real_v2_capture_recorded_value_for_value(tmp_path):
    capture = DATA / "flashbook" / "live-btc-eth.ndjson"
    data = tmp_path / "data"
    with SimulatorProcess(["--replay", str(capture), "--speed", "max"]) as s:
        subs = ('[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD", "ETH/USD"]\n'
                'depth = 10\n\n[[subscribe]]\nchannel = "trade"\n'
                'symbols = ["BTC/USD", "ETH/USD"]\n')
        cfg = write_config(tmp_path, "replay.toml", "v2", s.urls["ws_v2"], subs)
        proc = run_recorder(cfg, data, 5)
        assert proc.returncode == 0, proc.stderr
    exp_book, exp_trades, exp_crc = Counter(), Counter(), []
    for frame in flashbook_frames():
        m = json.loads(frame, parse_float=Decimal)
        if m.get("channel") == "book":
            for d in m["data"]:
                exp_crc.append(d["checksum"])
                for key, side in (("bids", "bid"), ("asks", "ask")):
                    for lv in d[key]:
                        exp_book[(d["symbol"], side, lv["price"], lv["qty"])] += 1
        elif m.get("channel") == "trade":
            for t in m["data"]:
                exp_trades[(t["symbol"], t["side"], t["price"], t["qty"], t["trade_id"])] += 1
    con = db(data)
    got_book = Counter(con.execute("SELECT symbol, side, price, qty FROM book").fetchall())
    assert got_book == exp_book
    got_trades = Counter(con.execute(
        "SELECT symbol, side, price, qty, trade_id FROM trades").fetchall())
    assert got_trades == exp_trades
    crcs = [r[0] for r in con.execute(
        "SELECT any_value(checksum) FROM book GROUP BY update_id ORDER BY update_id").fetchall()]
    assert crcs == exp_crc
    assert con.execute("SELECT count(*) FROM book WHERE NOT verified").fetchone()[0] == 0
    assert con.execute("SELECT count(DISTINCT update_id) FROM book WHERE verified"
                       ).fetchone()[0] == 2962


def test_demo_records_every_public_channel_and_prints_a_summary(tmp_path):
    import os
    import subprocess
    import sys

    from tests.e2e import ROOT

    env = dict(os.environ, DEMO_SECONDS="3", DEMO_DATA=str(tmp_path / "demo"))
    proc = subprocess.run([sys.executable, "-m", "recorder.demo"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    for table in ("book", "ohlc", "spread", "ticker", "trades"):
        assert f"│ {table}" in proc.stdout
    con = db(tmp_path / "demo")
    assert con.execute("SELECT count(*) FROM book WHERE verified = false").fetchone()[0] == 0
