"""Exports: bars equal an independent computation; Tardis layouts and native kinds reproduce
the recorded values exactly; the command's errors name the option."""

from __future__ import annotations

import csv
import gzip
import random
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recorder.analysis.dataset import open_dataset, to_datetime
from recorder.analysis.export import export
from tests.datasets import DAY, T0, run, scenario, trade, write

S = 1_000_000


def random_trades(seed: int = 9) -> list[tuple]:
    """Trades around midnight, several per second, equal exchange times (ties) included."""
    rng = random.Random(seed)
    out = []
    t = T0 + DAY - 20 * 60 * S
    tid = 0
    while t < T0 + DAY + 20 * 60 * S:
        t += rng.randrange(1, 3 * S)
        for sym, base in (("BTC/USD", 63000), ("ETH/USD", 1700)):
            for _ in range(rng.choice((0, 1, 1, 2, 3))):
                tid += 1
                price = f"{base + rng.randrange(-500, 500) / 10:.1f}"
                qty = f"{rng.randrange(1, 10**9) / 10**8:.8f}"
                # exchange time: a little before receipt, equal for trades of one frame
                out.append(trade(sym, t, price, qty, rng.choice(("buy", "sell")), tid,
                                 tx=t - 3000))
    return out


@pytest.fixture(scope="module")
def trades_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trades")
    write(root, {"trades": random_trades()}, rotate_seconds=600)
    return root


def independent_bars(rows: list[tuple], iv: int) -> list[tuple]:
    groups: dict[tuple[str, int], list[tuple]] = defaultdict(list)
    for r in rows:  # rows are in recorded order
        sec, frac = r[2].split(".")
        tx = int(sec) * S + int(frac)
        groups[(r[1], tx // iv)].append((tx, Decimal(r[4]), Decimal(r[5]), r[6]))
    out = []
    for (sym, b), g in sorted(groups.items()):
        ordered = sorted(g, key=lambda x: x[0])  # stable: ties stay in recorded order
        prices = [p for _, p, _, _ in g]
        vol = sum(q for _, _, q, _ in g)
        vwap = (sum(p * q for _, p, q, _ in g) / vol).quantize(Decimal("1e-10"), ROUND_HALF_UP)
        buy = sum((q for _, _, q, s in g if s == "buy"), Decimal(0))
        out.append((sym, to_datetime(b * iv), ordered[0][1], max(prices), min(prices),
                    ordered[-1][1], vol, vwap, len(g), buy, vol - buy))
    return out


@pytest.mark.parametrize("interval, iv", [("1m", 60 * S), ("7s", 7 * S), ("1h", 3600 * S)])
def test_bars_equal_an_independent_computation(trades_dir: Path, interval: str, iv: int):
    # Independent of decimal's default 28-digit context for the vwap division.
    import decimal

    decimal.getcontext().prec = 60
    got = open_dataset(trades_dir).bars(interval)
    cols = ["symbol", "ts", "open", "high", "low", "close", "volume", "vwap", "trades",
            "buy_volume", "sell_volume"]
    assert got.column_names == cols
    rows = [tuple(r[c] for c in cols) for r in got.to_pylist()]
    assert rows == independent_bars(random_trades(), iv)


def test_bars_bounded_by_symbol_and_time(trades_dir: Path, tmp_path: Path) -> None:
    ds = open_dataset(trades_dir)
    start, end = to_datetime(T0 + DAY - 5 * 60 * S), to_datetime(T0 + DAY + 5 * 60 * S)
    got = ds.bars("1m", symbols="ETH/USD", start=start, end=end).to_pylist()
    assert len(got) == 10 and {r["symbol"] for r in got} == {"ETH/USD"}
    assert got[0]["ts"] == start and got[-1]["ts"] == to_datetime(T0 + DAY + 4 * 60 * S)
    out = tmp_path / "bars.csv"
    r = run("export", "--kind", "bars", "--interval", "1m", "--symbol", "ETH/USD", "--from",
            "2026-11-18T23:55:00Z", "--to", "2026-11-19T00:05:00Z", "--data", str(trades_dir),
            "--out", str(out))
    assert r.exit_code == 0, r.output
    lines = list(csv.DictReader(out.open()))
    assert [Decimal(x["vwap"]) for x in lines] == [x["vwap"] for x in got]
    assert lines[0]["ts"].startswith("2026-11-18 23:55:00")


def test_tardis_trades_reproduce_recorded_values(trades_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "trades.csv.gz"
    n = export(open_dataset(trades_dir), "tardis-trades", out)
    with gzip.open(out, "rt") as f:
        rows = list(csv.DictReader(f))
    recorded = random_trades()
    assert n == len(rows) == len(recorded)
    assert list(rows[0]) == ["exchange", "symbol", "timestamp", "local_timestamp", "id", "side",
                             "price", "amount"]
    for got, r in zip(rows, recorded, strict=True):
        sec, frac = r[2].split(".")
        # November 2026: Tardis names Kraken's instruments as WS v2 does (BTC/USD).
        assert (got["exchange"], got["symbol"], int(got["timestamp"]),
                int(got["local_timestamp"]), got["id"], got["side"]) == (
            "kraken", r[1], int(sec) * S + int(frac), r[3], str(r[7]), r[6])
        assert got["price"] == r[4].rstrip("0").rstrip(".")  # 62969.0 -> 62969
        assert Decimal(got["price"]) == Decimal(r[4])
        assert Decimal(got["amount"]) == Decimal(r[5])


def test_tardis_symbols_follow_krakens_api_of_the_day(tmp_path: Path) -> None:
    """Tardis captured Kraken's WS v1 (XBT/USD) until 2026-07-09 and v2 (BTC/USD) from
    2026-07-10 on; an export across that day names each row as Tardis does."""
    switch = 1_783_641_600 * S  # 2026-07-10 00:00:00 UTC
    rows = [trade(sym, t, "60000.0", "0.5", "buy", i, tx=t - 10)
            for i, (sym, t) in enumerate([("BTC/USD", switch - S), ("ETH/USD", switch - S),
                                          ("BTC/USD", switch), ("BTC/USD", switch + S)])]
    write(tmp_path / "d", {"trades": rows})
    for names, expected in (("kraken", ["XBT/USD", "ETH/USD", "BTC/USD", "BTC/USD"]),
                            ("canonical", ["BTC/USD", "ETH/USD", "BTC/USD", "BTC/USD"])):
        out = tmp_path / f"{names}.csv"
        export(open_dataset(tmp_path / "d"), "tardis-trades", out, symbol_names=names)
        assert [r["symbol"] for r in csv.DictReader(out.open())] == expected


@pytest.fixture(scope="module")
def books_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("books")
    write(root, {"book": scenario()}, rotate_seconds=2)
    return root


def test_tardis_incremental_book_reproduces_rows(books_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "inc.csv"
    export(open_dataset(books_dir), "tardis-incremental-book", out, symbol_names="canonical")
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["exchange", "symbol", "timestamp", "local_timestamp",
                             "is_snapshot", "side", "price", "amount"]
    kept = [r for r in scenario() if r[-1] is not False]  # verified = false rows left out
    kept.sort(key=lambda r: r[8])  # applied in update_id order (file order within one)
    assert len(rows) == len(kept)
    for got, r in zip(rows, kept, strict=True):
        sec, frac = r[2].split(".")
        assert (got["symbol"], int(got["timestamp"]), int(got["local_timestamp"]),
                got["is_snapshot"], got["side"]) == (r[1], int(sec) * S + int(frac), r[3],
                                                     str(r[7]).lower(), r[4])
        assert Decimal(got["price"]) == Decimal(r[5])
        assert Decimal(got["amount"]) == Decimal(r[6])
    keep = tmp_path / "all.csv"
    export(open_dataset(books_dir), "tardis-incremental-book", keep, unverified="keep")
    assert len(list(csv.DictReader(keep.open()))) == len(scenario())


def test_book_kinds_match_the_rebuilt_book(books_dir: Path, tmp_path: Path) -> None:
    ds = open_dataset(books_dir)
    start, end = to_datetime(T0 + DAY - 10 * S), to_datetime(T0 + DAY + 8 * S)
    out = tmp_path / "book.parquet"
    n = export(ds, "book", out, symbols="BTC/USD", start=start, end=end, depth=3)
    got = pq.read_table(out)
    assert n == got.num_rows == 18
    assert got.equals(ds.book_snapshots("BTC/USD", start, end, "1s", 3))
    snap = tmp_path / "snap25.csv"
    export(ds, "tardis-book-snapshot-25", snap, symbols="BTC/USD", start=start, end=end)
    rows = list(csv.DictReader(snap.open()))
    header = list(rows[0])
    assert header[:8] == ["exchange", "symbol", "timestamp", "local_timestamp",
                          "asks[0].price", "asks[0].amount", "bids[0].price", "bids[0].amount"]
    assert len(header) == 4 + 25 * 4 and header[-1] == "bids[24].amount"
    # Every change, the unverified one left out; levels exact, missing levels empty.
    assert len(rows) == 6 and rows[0]["symbol"] == "BTC/USD"
    assert (rows[1]["asks[0].price"], rows[1]["asks[0].amount"], rows[1]["asks[3].price"]) == (
        "100.5", "1", "")
    quotes = tmp_path / "q.csv"
    export(ds, "tardis-quotes", quotes, symbols="BTC/USD")
    q = list(csv.DictReader(quotes.open()))
    assert list(q[0]) == ["exchange", "symbol", "timestamp", "local_timestamp", "ask_amount",
                          "ask_price", "bid_price", "bid_amount"]
    assert [(x["bid_price"], x["ask_price"]) for x in q] == [
        ("99", "101"), ("99", "100.5"), ("99", "101"), ("150", "200"), ("151", "200")]
    native = tmp_path / "q.parquet"
    export(ds, "quotes", native, symbols="BTC/USD")
    assert pq.read_table(native).equals(ds.quotes("BTC/USD"))


@pytest.mark.parametrize("args, message", [
    (["--kind", "candles"], "--kind 'candles'; allowed: bars, book, quotes, tardis-trades"),
    (["--kind", "bars", "--interval", "fast"], "--interval 'fast' is not a duration"),
    (["--kind", "bars", "--interval", "0"], "--interval: bars need a length"),
    (["--kind", "bars", "--from", "noon"], "--from 'noon' is not a time"),
    (["--kind", "bars", "--from", "2026-11-19", "--to", "2026-11-18"],
     "--to must be after --from"),
    (["--kind", "book", "--depth", "0"], "--depth 0: levels per side must be 1..1000"),
    (["--kind", "book", "--symbol", "DOGE/USD"], "--symbol DOGE/USD: not recorded"),
    (["--kind", "bars", "--time", "local"], "--time 'local'; allowed: exchange, recv"),
    (["--kind", "quotes", "--unverified", "keep"], "--unverified 'keep' for --kind quotes"),
])
def test_export_errors_name_the_option(trades_dir: Path, tmp_path: Path, args: list[str],
                                       message: str) -> None:
    r = run("export", *args, "--out", str(tmp_path / "x.csv"), "--data", str(trades_dir))
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_export_out_name_checked(trades_dir: Path) -> None:
    r = run("export", "--kind", "bars", "--out", "bars.xlsx", "--data", str(trades_dir))
    assert r.exit_code == 2 and "use a .csv, .csv.gz or .parquet file name" in r.output


def test_book_export_progress_moves_within_a_symbol(books_dir: Path, tmp_path: Path,
                                                    monkeypatch) -> None:
    """A long one-symbol book export reports progress as its rows are applied, not only
    once at the end (batches of 5 rows stand in for the real 64k)."""
    import recorder.analysis.rebuild as rebuild

    monkeypatch.setattr(rebuild, "_BATCH_ROWS", 5)
    calls: list[tuple[int, int]] = []
    export(open_dataset(books_dir), "book", tmp_path / "b.parquet", symbols="BTC/USD",
           depth=3, progress=lambda done, total: calls.append((done, total)))
    dones = [d for d, _ in calls]
    assert len({t for _, t in calls}) == 1 and dones == sorted(dones)
    assert dones[-1] == calls[0][1] and len([d for d in dones if 0 < d < dones[-1]]) >= 2


def test_bars_progress_without_counting_first(trades_dir: Path, tmp_path: Path) -> None:
    """SQL kinds report DuckDB's own progress estimate (no count(*) pass that would run the
    bars' aggregate twice), from 0 to done."""
    calls: list[tuple[int, int]] = []
    n = export(open_dataset(trades_dir), "bars", tmp_path / "bars.csv", interval="1m",
               progress=lambda done, total: calls.append((done, total)))
    assert n > 0 and calls[0] == (0, 1000) and calls[-1] == (1000, 1000)
    assert all(total == 1000 and 0 <= done <= 1000 for done, total in calls)
