"""Rebuilt books: truncation to depth, deletes, resync snapshots, unverified rows, snapshot
series and quotes; and, end to end, books equal to ones built independently from the raw
frames of a real capture replayed through the simulator."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from recorder.analysis.dataset import DatasetError, open_dataset, parse_time, to_datetime
from recorder.simulator.testing import SimulatorProcess
from tests.captures import DATA
from tests.datasets import DAY, M1, T0, D, S, level, run, scenario, write
from tests.e2e import run_recorder, write_config


@pytest.fixture(scope="module")
def books(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("books")
    write(root, {"book": scenario()}, rotate_seconds=2)  # several files
    return root


def sides(b) -> tuple[list, list]:  # noqa: ANN001
    return ([(f"{p.normalize():f}", f"{q.normalize():f}") for p, q in b.asks],
            [(f"{p.normalize():f}", f"{q.normalize():f}") for p, q in b.bids])


def test_truncation_deletes_resync_and_flags(books: Path) -> None:
    ds = open_dataset(books)
    assert len(list((books / "book").rglob("*.parquet"))) > 3

    def at(t: int, depth: int = 10):  # noqa: ANN202
        return ds.book("BTC/USD", to_datetime(t), depth=depth)

    before = at(M1 - 1)
    assert before.snapshot_at is None and before.asks == [] and before.bids == []
    b = at(M1)
    assert sides(b) == ([("101", "1"), ("102", "1"), ("103", "1")],
                        [("99", "1"), ("98", "1"), ("97", "1")])
    assert b.verified is True and b.depth == 3
    assert sides(at(M1 + S))[0] == [("100.5", "1"), ("101", "1"), ("102", "1")]
    assert sides(at(M1 + 2 * S))[0] == [("101", "1"), ("102", "1")]   # 103 stays gone
    assert sides(at(M1 + 3 * S + 999_999))[0] == [("101", "1"), ("102", "1"), ("103.5", "2")]
    bad = at(M1 + 4 * S)
    assert bad.verified is False and sides(bad)[1][0] == ("99", "5")
    assert at(M1 + 4 * S, depth=1).bids == [(D("99"), D("5"))]
    # Next day: found through the older date partition's snapshot, then the resync.
    b = at(T0 + DAY + 5 * S)
    assert sides(b) == ([("200", "3")], [("150", "4")]) and b.verified is True
    assert b.snapshot_at == to_datetime(T0 + DAY + 5 * S)
    assert sides(at(T0 + DAY + 7 * S))[1] == [("151", "2.5"), ("150", "4")]
    eth = ds.book("ETH/USD", to_datetime(T0 + 2 * DAY))
    assert sides(eth) == ([("2", "1")], [("1", "1")])


def test_snapshot_series_equals_books_at_grid_times(books: Path) -> None:
    ds = open_dataset(books)
    start, end = M1 - 2 * S, T0 + DAY + 8 * S
    snaps = ds.book_snapshots("BTC/USD", to_datetime(start), to_datetime(end), interval="1s",
                              depth=3)
    rows = snaps.to_pylist()
    # No rows before the first snapshot; then one per second.
    assert rows[0]["ts"] == to_datetime(M1)
    assert len(rows) == (end - M1) // S
    for r in rows:
        b = ds.book("BTC/USD", r["ts"], depth=3)
        assert [(r[f"ask_price_{i}"], r[f"ask_qty_{i}"]) for i in range(len(b.asks))] == b.asks
        assert [(r[f"bid_price_{i}"], r[f"bid_qty_{i}"]) for i in range(len(b.bids))] == b.bids
        assert all(r[f"ask_price_{i}"] is None for i in range(len(b.asks), 3))
        assert r["verified"] == b.verified
        assert r["last_update"] == b.last_update
    skipped = ds.book_snapshots("BTC/USD", to_datetime(start), to_datetime(end), "1s", 3,
                                unverified="skip")
    assert skipped.num_rows == len(rows) - sum(r["verified"] is False for r in rows) > 0
    changes = ds.book_snapshots("BTC/USD", to_datetime(start), to_datetime(end), None, 3)
    assert changes.column("ts").to_pylist() == [to_datetime(t) for t in (
        M1, M1 + S, M1 + 2 * S, M1 + 3 * S, M1 + 4 * S, T0 + DAY + 5 * S, T0 + DAY + 6 * S)]


def test_quotes_every_best_change(books: Path) -> None:
    q = open_dataset(books).quotes("BTC/USD").to_pylist()
    got = [(r["bid_price"], r["bid_qty"], r["ask_price"], r["ask_qty"], r["verified"])
           for r in q]
    assert got == [
        (D("99"), D("1"), D("101"), D("1"), True),
        (D("99"), D("1"), D("100.5"), D("1"), True),
        (D("99"), D("1"), D("101"), D("1"), True),
        (D("99"), D("5"), D("101"), D("1"), False),
        (D("150"), D("4"), D("200"), D("3"), True),
        (D("151"), D("2.5"), D("200"), D("3"), True),
    ]


def test_book_command(books: Path) -> None:
    r = run("book", "BTC/USD", "--at", "2026-11-19T00:00:07Z", "--data", str(books),
            "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["bids"] == [["151.0000000000", "2.5000000000"], ["150.0000000000",
                                                                  "4.0000000000"]]
    r = run("book", "BTC/USD", "--at", "2026-11-19T00:00:07Z", "--data", str(books))
    assert r.exit_code == 0 and "151" in r.stdout and "verified" in r.stdout
    r = run("book", "XRP/USD", "--at", "2026-11-19", "--data", str(books))
    assert r.exit_code == 2 and "XRP/USD: no book rows" in r.output and "BTC/USD" in r.output
    r = run("book", "BTC/USD", "--at", "soon", "--data", str(books))
    assert r.exit_code == 2 and "--at 'soon' is not a time" in r.output


# -- end to end: a real capture, replayed, recorded with raw frames ---------------------------


def independent_books(frames: list[tuple[int, str]], at_us: int, depth: int = 10) -> dict:
    """v2 book frames applied naively (dicts of Decimal), for the frames received <= at."""
    books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
    for t, text in frames:
        if t > at_us:
            break
        msg = json.loads(text, parse_float=Decimal)
        if not isinstance(msg, dict) or msg.get("channel") != "book":
            continue
        for d in msg["data"]:
            if msg["type"] == "snapshot":
                books[d["symbol"]] = {"bid": {}, "ask": {}}
            book = books.get(d["symbol"])
            if book is None:
                continue
            for side, key in (("bid", "bids"), ("ask", "asks")):
                for lv in d.get(key, []):
                    price, qty = Decimal(lv["price"]), Decimal(lv["qty"])
                    if qty == 0:
                        book[side].pop(price, None)
                    else:
                        book[side][price] = qty
            for side in ("bid", "ask"):
                keep = sorted(book[side], reverse=side == "bid")[:depth]
                book[side] = {p: book[side][p] for p in keep}
    return books


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("replay")
    subs = ('[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD", "ETH/USD"]\ndepth = 10\n'
            '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD", "ETH/USD"]\n')
    capture = DATA / "flashbook" / "live-btc-eth.ndjson"
    with SimulatorProcess(["--replay", str(capture), "--speed", "10"]) as sim:
        cfg = write_config(tmp, "c.toml", "v2", sim.urls["ws_v2"], subs,
                           extra="[output]\nraw = true\n")
        proc = run_recorder(cfg, tmp / "data", 3.5)
        assert proc.returncode == 0, proc.stderr
    return tmp / "data"


def test_rebuilt_book_equals_independent_book_from_raw_frames(replayed: Path) -> None:
    ds = open_dataset(replayed)
    frames = ds.sql("SELECT epoch_us(ts_recv), frame FROM (" + ds.source_sql("raw", order=True)
                    + ") ORDER BY ts_recv, _file, _row").fetchall()
    assert len(frames) > 2000
    times = sorted({t for t, _ in frames})
    rng = random.Random(4)
    moments = sorted(rng.sample(times, 12)) + [times[-1] + 1]
    for at in moments:
        expected = independent_books(frames, at)
        for sym in ("BTC/USD", "ETH/USD"):
            b = ds.book(sym, to_datetime(at), depth=10)
            want = expected.get(sym, {"bid": {}, "ask": {}})
            assert b.asks == sorted(want["ask"].items()), (sym, at)
            assert b.bids == sorted(want["bid"].items(), reverse=True), (sym, at)
            assert b.verified is not False
    # Series at a fixed interval agree with the book at each moment.
    start, end = times[0], times[-1] + 1
    snaps = ds.book_snapshots("ETH/USD", to_datetime(start), to_datetime(end),
                              interval="250ms", depth=5).to_pylist()
    assert len(snaps) >= 8
    for r in snaps[::3]:
        want = independent_books(frames, parse_time(r["ts"]))["ETH/USD"]
        asks = sorted(want["ask"].items())[:5]
        assert [(r[f"ask_price_{i}"], r[f"ask_qty_{i}"]) for i in range(5)] == asks
    assert datetime.now(UTC) > snaps[-1]["ts"]


def test_a_symbol_from_two_exchanges_is_rebuilt_from_one(tmp_path):
    """Books are never interleaved: the same symbol recorded from two exchanges must be
    named with its exchange, and each gives its own book."""
    t = T0 + 5 * S
    for exchange, bid in (("kraken", "100"), ("kucoin", "200")):
        rows = [level(t, 1, "bid", bid, "1", snap=True), level(t, 1, "ask", "300", "2", snap=True)]
        rows = [(exchange,) + r[1:] for r in rows]
        write(tmp_path, {"book": rows}, exchange=exchange, source=exchange)
    ds = open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="recorded from kraken and kucoin: name one"):
        ds.book("BTC/USD", at=to_datetime(t + S))
    for exchange, bid in (("kraken", D("100")), ("kucoin", D("200"))):
        book = ds.book(f"{exchange}:BTC/USD", at=to_datetime(t + S))
        assert book.symbol == "BTC/USD" and book.bids == [(bid, D("1"))]
