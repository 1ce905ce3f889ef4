"""Raw capture: every frame kept, re-parsed by `recorder renormalize` into equal tables, and
replayable by the simulator."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from recorder.core.schema import TABLES
from recorder.simulator.testing import SimulatorProcess
from tests.e2e import ROOT, db, run_recorder, write_config

SUBS = ('[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD", "ETH/USD"]\ndepth = 10\n\n'
        '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD", "ETH/USD"]\n\n'
        '[[subscribe]]\nchannel = "spread"\nsymbols = ["BTC/USD"]\n')

BOOK = "SELECT symbol, side, price, qty, ts_exchange, ts_recv, is_snapshot, verified FROM book"
TRADES = "SELECT symbol, side, price, qty, trade_id, ts_exchange, ts_recv FROM trades"
SPREAD = "SELECT * EXCLUDE (date) FROM spread"


def test_raw_frames_renormalize_to_the_same_tables(tmp_path):
    data, again = tmp_path / "data", tmp_path / "again"
    with SimulatorProcess(["--seed", "5", "--rate", "300"]) as sim:
        cfg = write_config(tmp_path, "raw.toml", "v2", sim.urls["ws_v2"], SUBS,
                           extra="[output]\nraw = true\n")
        proc = run_recorder(cfg, data, 3)
        assert proc.returncode == 0, proc.stderr
    con = db(data)
    frames = con.execute("SELECT count(*) FROM raw").fetchone()[0]
    stopped = con.execute("SELECT detail FROM events WHERE kind = 'stopped'").fetchone()[0]
    assert frames > 100 and f'"frames":{frames}' in stopped, "every received frame is kept"
    proc = subprocess.run([sys.executable, "-m", "recorder", "renormalize", "--data",
                           str(data), "--out", str(again), "--book-checkpoint", "1s"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    con2 = db(again)
    for sql in (BOOK, TRADES, SPREAD):
        first = Counter(con.execute(sql).fetchall())
        assert first and Counter(con2.execute(sql).fetchall()) == first, sql
    # One checkpoint per symbol and recorded second (3 s recorded), none with "0".
    per_symbol = dict(con2.execute("SELECT symbol, count(DISTINCT update_id) FROM "
                                   "book_checkpoints GROUP BY ALL").fetchall())
    assert set(per_symbol) == {"BTC/USD", "ETH/USD"} and min(per_symbol.values()) >= 2
    none = tmp_path / "none"
    proc = subprocess.run([sys.executable, "-m", "recorder", "renormalize", "--data",
                           str(data), "--out", str(none), "--book-checkpoint", "0"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and not (none / "book_checkpoints").exists(), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "recorder", "renormalize", "--data",
                           str(data), "--out", str(tmp_path / "x"), "--book-checkpoint",
                           "often"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--book-checkpoint 'often' is not a duration" in proc.stderr


def _renormalize(data: Path, out: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "recorder", "renormalize", "--data",
                           str(data), "--out", str(out)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def _all_values(table: str) -> str:
    """Every column of ``table``; book update ids become their rank within the symbol's
    stream (a renormalized run numbers messages afresh, in the same order)."""
    cols = [c.name for c in TABLES[table] if c.name != "update_id"]
    if table == "book":
        cols.append("dense_rank() OVER (PARTITION BY symbol ORDER BY update_id)")
    return f"SELECT {', '.join(cols)} FROM {table}"


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_two_configs_recorded_together_renormalize_value_for_value(tmp_path, api):
    """Both collectors have a connection 1, and on v2 one has a bbo ticker (spread) where
    the other has the full ticker: their frames must not share parsing state."""
    data, again = tmp_path / "data", tmp_path / "again"
    pairs = '["BTC/USD", "ETH/USD"]'
    public = "\n".join(
        f'[[subscribe]]\nchannel = "{ch}"\nsymbols = {pairs}\n{extra}'
        for ch, extra in (("book", "depth = 10\n"), ("trade", ""), ("spread", ""),
                          ("ohlc", "interval = 1\n")))
    ticker = f'[[subscribe]]\nchannel = "ticker"\nsymbols = {pairs}\n'
    with SimulatorProcess(["--seed", "8", "--rate", "300"]) as sim:
        url = sim.urls[f"ws_{api}"]
        configs = [write_config(tmp_path, "pub.toml", api, url, public,
                                extra="[output]\nraw = true\n"),
                   write_config(tmp_path, "tick.toml", api, url, ticker,
                                extra="[output]\nraw = true\n")]
        proc = run_recorder(configs, data, 4)
        assert proc.returncode == 0, proc.stderr
    con = db(data)
    sources = con.execute("SELECT count(DISTINCT conn_id), count(DISTINCT filename) FROM "
                          "read_parquet(?, filename = true)",
                          [str(data / "raw" / "**" / "*.parquet")]).fetchone()
    assert sources[0] == 1 and sources[1] >= 2, "two collectors, both on connection 1"
    _renormalize(data, again)
    con2 = db(again)
    for table in ("trades", "book", "spread", "ticker", "ohlc"):
        first = Counter(con.execute(_all_values(table)).fetchall())
        assert len(first) > 0, f"{table} was recorded"
        assert Counter(con2.execute(_all_values(table)).fetchall()) == first, table


def test_recorded_raw_table_replays_through_the_simulator(tmp_path):
    data, replayed = tmp_path / "data", tmp_path / "replayed"
    with SimulatorProcess(["--seed", "6", "--rate", "300"]) as sim:
        cfg = write_config(tmp_path, "raw.toml", "v2", sim.urls["ws_v2"], SUBS,
                           extra="[output]\nraw = true\n")
        assert run_recorder(cfg, data, 3).returncode == 0
    with SimulatorProcess(["--replay", str(data / "raw"), "--speed", "max"]) as sim:
        cfg = write_config(tmp_path, "again.toml", "v2", sim.urls["ws_v2"], SUBS)
        proc = run_recorder(cfg, replayed, 3)
        assert proc.returncode == 0, proc.stderr
    values = "SELECT symbol, side, price, qty, ts_exchange, is_snapshot, verified FROM book"
    assert Counter(db(replayed).execute(values).fetchall()) == Counter(
        db(data).execute(values).fetchall())
