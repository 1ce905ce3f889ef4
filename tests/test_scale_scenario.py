"""The whole-exchange scale scenario of bench/scale.py, at a small size, for correctness.

The bench records 600 Kraken pairs and 1,000 KuCoin pairs at real rates and reports their
cost; here the same configs (bench/scale.py's builders, synthetic pairs served by the
simulators, a few pairs ten times busier) record a dozen Kraken pairs and 120 KuCoin pairs,
which KuCoin's 300 topics per connection split over two collectors. What must hold at any
size: every book synced and verified, no gap, no trade lost or repeated. Speed is the bench's
business: nothing here is timed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recorder.analysis.query import connect as db
from recorder.capture import jobs
from recorder.core.config import load_config
from recorder.simulator.kraken.config import ConfigError as KrakenConfigError
from recorder.simulator.kraken.config import parse_pairs, parse_weights
from recorder.simulator.kucoin.config import ConfigError as KucoinConfigError
from recorder.simulator.kucoin.config import parse_book_levels, parse_symbols
from recorder.simulator.kucoin.config import parse_weights as parse_kucoin_weights
from recorder.simulator.testing import SimulatorProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def _bench_scale():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "bench" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scale = _bench_scale()


def _record(config: Path, data: Path, seconds: float,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recorder", "run", str(config), "--data", str(data),
         "--duration", str(seconds)], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, **(env or {})})


def _problems(con) -> dict[str, int]:
    kinds = dict(con.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    return {k: v for k, v in kinds.items() if k in scale.GAP_EVENTS}


def _books(con) -> dict[str, tuple[int, int, int, int]]:
    """symbol -> (snapshot rows, update rows, rows not verified, sides in the snapshot)."""
    return {s: (snap, upd, bad, sides) for s, snap, upd, bad, sides in con.execute(
        "SELECT symbol, count(*) FILTER (WHERE is_snapshot), count(*) FILTER (WHERE NOT "
        "is_snapshot), count(*) FILTER (WHERE verified IS NOT true), "
        "count(DISTINCT side) FILTER (WHERE is_snapshot) FROM book GROUP BY symbol"
    ).fetchall()}


def test_synthetic_pairs_and_weights_parse():
    text, weights = parse_weights("SYN1/USD*10,BTC/USD,SYN2/USD")
    assert parse_pairs(text) == ["SYN1/USD", "BTC/USD", "SYN2/USD"]
    assert weights == {"SYN1/USD": 10}
    for bad in ("SYN0/USD", "SYN1/EUR", "SYNX/USD"):
        with pytest.raises(KrakenConfigError):
            parse_pairs(bad)
    with pytest.raises(KrakenConfigError):
        parse_weights("SYN1/USD*0")
    text, weights = parse_kucoin_weights("SYN7-USDT*3,BTC-USDT")
    assert [s.name for s in parse_symbols(text)] == ["SYN7-USDT", "BTC-USDT"]
    assert weights == {"SYN7-USDT": 3}
    with pytest.raises(KucoinConfigError):
        parse_symbols("SYN1-BTC")
    assert parse_book_levels(None) is None and parse_book_levels("5000") == 5000
    with pytest.raises(KucoinConfigError):
        parse_book_levels("10")


def test_kraken_whole_exchange_small(tmp_path: Path):
    names, sim_pairs = scale.kraken_pairs(12, busy=2)
    data = tmp_path / "data"
    with SimulatorProcess(["--pairs", sim_pairs, "--rate", "300", "--seed", "7"]) as sim:
        cfg = scale.kraken_config(tmp_path / "kraken-scale.toml", sim.urls, names)
        assert jobs.roles(load_config(cfg)) == ["public"]  # no topic limit on Kraken
        done = _record(cfg, data, 7)
    assert done.returncode == 0, done.stderr
    con = db(data)
    books = _books(con)
    assert set(books) == set(names)
    for symbol, (snapshot, updates, unverified, sides) in books.items():
        assert snapshot > 0 and sides == 2, symbol
        assert updates > 0, symbol
        assert unverified == 0, symbol
    assert _problems(con) == {}
    # Trade ids are consecutive per pair: none lost, none twice.
    for symbol, n, distinct, lo, hi in con.execute(
            "SELECT symbol, count(*), count(DISTINCT trade_id), min(trade_id::BIGINT), "
            "max(trade_id::BIGINT) FROM trades GROUP BY symbol").fetchall():
        assert n == distinct == hi - lo + 1, symbol
    for table in ("spread", "ohlc"):
        got = {s for (s,) in con.execute(f"SELECT DISTINCT symbol FROM {table}").fetchall()}
        assert got <= set(names) and len(got) >= len(names) // 2, table
    # The two busy pairs (weight 10) take far more of the market than the others.
    per_symbol = dict(con.execute("SELECT symbol, count(DISTINCT update_id) FROM book "
                                  "GROUP BY symbol").fetchall())
    quiet = sorted(per_symbol[s] for s in names[2:])
    assert min(per_symbol[s] for s in names[:2]) > 3 * quiet[len(quiet) // 2]


def test_kucoin_whole_exchange_small(tmp_path: Path):
    names, sim_pairs = scale.kucoin_pairs(120, busy=3)
    data = tmp_path / "data"
    with SimulatorProcess(["--pairs", sim_pairs, "--rate", "400", "--seed", "7"],
                          exchange="kucoin") as sim:
        cfg = scale.kucoin_config(tmp_path / "kucoin-scale.toml", sim.urls["rest"], names)
        # 120 pairs x 3 topics at 300 topics per connection: two collectors.
        assert jobs.roles(load_config(cfg)) == ["public", "public-2"]
        done = _record(cfg, data, 9, scale.CREDENTIALS)
    assert done.returncode == 0, done.stderr
    con = db(data)
    kinds = dict(con.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    assert kinds.get("connected") == 2, kinds
    assert _problems(con) == {}
    books = _books(con)
    assert set(books) == {n.replace("-", "/") for n in names}
    for symbol, (snapshot, _updates, unverified, sides) in books.items():
        assert snapshot > 0 and sides == 2, symbol
        assert unverified == 0, symbol
    # Full depth: the signed snapshot (no depth limit recorded), not the public top 100.
    assert con.execute("SELECT count(*) FROM book WHERE depth IS NOT NULL").fetchone()[0] == 0
    for symbol, n, distinct in con.execute(
            "SELECT symbol, count(*), count(DISTINCT trade_id) FROM trades GROUP BY symbol"
    ).fetchall():
        assert n == distinct, symbol
    ticker = {s for (s,) in con.execute("SELECT DISTINCT symbol FROM ticker").fetchall()}
    assert ticker == set(books)
