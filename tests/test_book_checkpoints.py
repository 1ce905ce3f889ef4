"""Book checkpoints: what the keeper writes (only verified books, every kept level, exact
text), and rebuilds started from a checkpoint equal rebuilds folded from the snapshot, on a
synthetic recording with truncation and a checksum mismatch, and end to end through the
simulator at depth 10 and 100 with a corrupted book that resyncs."""

from __future__ import annotations

import random
import shutil
import time
from decimal import Decimal
from pathlib import Path

import pytest

from recorder.analysis.dataset import open_dataset, to_datetime
from recorder.analysis.rebuild import start_point
from recorder.capture.book import BookKeeper
from recorder.capture.renormalize import renormalize
from recorder.core.schema import make_row
from recorder.exchanges.kraken.book_rule import RULE
from recorder.exchanges.kraken.checksum import book_checksum
from recorder.simulator.testing import SimulatorProcess
from sinks.parquet_sink import ParquetSink
from tests.e2e import start_recorder, stop, write_config

S = 1_000_000
T0 = 1_795_000_000_000_000 // (86_400 * S) * 86_400 * S  # 2026-11-18 00:00 UTC


class Model:
    """A naive book (Decimal keys, texts as sent) that computes the documented checksum, so
    the keeper's rows are checked against something that is not the keeper."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.sides: dict[str, dict[Decimal, tuple[str, str]]] = {"ask": {}, "bid": {}}

    def apply(self, levels: list[tuple[str, str, str]], snapshot: bool) -> None:
        if snapshot:
            self.sides = {"ask": {}, "bid": {}}
        for side, price, qty in levels:
            if Decimal(qty) == 0:
                self.sides[side].pop(Decimal(price), None)
            else:
                self.sides[side][Decimal(price)] = (price, qty)
        for side in ("ask", "bid"):
            keep = self.ordered(side)[: self.depth]
            self.sides[side] = {Decimal(p): (p, q) for p, q in keep}

    def ordered(self, side: str) -> list[tuple[str, str]]:
        book = self.sides[side]
        return [book[p] for p in sorted(book, reverse=side == "bid")]

    def checksum(self) -> int:
        return book_checksum(self.ordered("ask"), self.ordered("bid"))


def message(uid: int, t: int, levels: list[tuple[str, str, str]], snapshot: bool,
            checksum: int | None, depth: int, symbol: str = "BTC/USD") -> list[tuple]:
    tx = t - 700
    return [make_row("book", exchange="kraken", symbol=symbol,
                     ts_exchange=f"{tx // S}.{tx % S:06d}", ts_recv=t, side=side, price=price,
                     qty=qty, is_snapshot=snapshot, update_id=uid, checksum=checksum,
                     republish=False, depth=depth) for side, price, qty in levels]


def test_checkpoint_rows_only_for_verified_books_with_every_level() -> None:
    keeper, model, depth = BookKeeper(RULE), Model(10), 10
    rows: list[tuple] = []

    def feed(uid: int, t: int, levels: list, snap: bool = False, checksum: str = "right"
             ) -> None:
        model.apply(levels, snap)
        crc = {"right": model.checksum(), "wrong": model.checksum() ^ 1, "none": None}[checksum]
        start = len(rows)
        rows.extend(message(uid, t, levels, snap, crc, depth))
        keeper.process(rows, start)

    # An update before any snapshot: no book, nothing to write.
    feed(1, T0, [("ask", "100.0", "1.0")], checksum="none")
    assert keeper.checkpoint_rows() == []
    # A v1-like snapshot without a checksum is not known to be right yet.
    snap = ([("ask", f"{100 + i}.50", f"{i + 1}.00000000") for i in range(10)]
            + [("bid", f"{99 - i}.50", "0.10000000") for i in range(10)])
    feed(2, T0 + S, snap, snap=True, checksum="none")
    assert keeper.checkpoint_rows() == []
    # A better ask pushes 109.50 out (no delete is sent for it): 10 asks are kept.
    feed(3, T0 + 2 * S, [("ask", "99.75", "2.50000000")])
    cp = keeper.checkpoint_rows()
    assert {r[:5] for r in cp} == {("kraken", "BTC/USD", T0 + 2 * S, 3, 10)}
    assert [(r[5], r[6], r[7]) for r in cp] == (
        [("ask", p, q) for p, q in model.ordered("ask")]
        + [("bid", p, q) for p, q in model.ordered("bid")])
    assert ("ask", "109.50", "10.00000000") not in [(r[5], r[6], r[7]) for r in cp]
    assert ("ask", "99.75", "2.50000000") == (cp[0][5], cp[0][6], cp[0][7])  # text as sent
    assert {r[8] for r in cp} == {20} and len(cp) == 20
    # Unchanged since: not written again.
    assert keeper.checkpoint_rows() == []
    # A mismatch: never a checkpoint until the resync snapshot, even after more updates.
    feed(4, T0 + 3 * S, [("bid", "99.50", "7.00000000")], checksum="wrong")
    assert keeper.checkpoint_rows() == []
    feed(5, T0 + 4 * S, [("bid", "98.50", "0")], checksum="right")
    assert keeper.checkpoint_rows() == []
    feed(6, T0 + 5 * S, snap, snap=True)
    cp = keeper.checkpoint_rows()
    assert {r[3] for r in cp} == {6} and len(cp) == 20
    # A new connection forgets the books: nothing until the next snapshot.
    keeper.reset()
    assert keeper.checkpoint_rows() == []


# -- a synthetic recording: random updates, truncation, a mismatch and its resync -------------


def synthetic(root: Path, depth: int, messages: int, checkpoint_every: int,
              seed: int = 7) -> None:
    """Book rows of one symbol as a collector records them: a snapshot, random updates (new
    levels inside and outside the kept range, deletes, re-sent levels), one wrong checksum
    then a resync snapshot, and a checkpoint from the keeper every ``checkpoint_every``
    messages; some messages share their ts_recv, as frames of one socket read do."""
    rng = random.Random(seed)
    keeper, model = BookKeeper(RULE), Model(depth)
    book: list[tuple] = []
    cps: list[tuple] = []
    t = T0 + 3_600 * S
    uid = 1_000

    def send(levels: list, snap: bool = False, wrong: bool = False,
             same_read: bool = False) -> None:
        nonlocal uid, t
        uid += 1
        # Frames read off the socket together share one ts_recv: about one message in four
        # here, and every message a checkpoint follows shares it with the one before.
        t += 0 if same_read or rng.random() < 0.25 else rng.randrange(1, 400_000)
        model.apply(levels, snap)
        start = len(book)
        book.extend(message(uid, t, levels, snap, model.checksum() ^ int(wrong), depth))
        keeper.process(book, start)

    def snapshot() -> None:
        send([("ask", f"{1000 + i}.5", "1.00") for i in range(depth)]
             + [("bid", f"{999 - i}.5", "1.00") for i in range(depth)], snap=True)

    snapshot()
    for n in range(messages):
        if n == messages // 2:
            send([("bid", "999.5", "3.33")], wrong=True)
        elif n == messages // 2 + 40:
            snapshot()
        else:
            levels = []
            for _ in range(rng.choice((1, 1, 2, 3))):
                side = rng.choice(("ask", "bid"))
                tick = rng.randrange(0, depth + 6)
                price = f"{1000 + tick}.5" if side == "ask" else f"{999 - tick}.5"
                qty = rng.choice(("0", "0", f"{rng.randrange(1, 50)}.{rng.randrange(100):02d}"))
                levels.append((side, price, qty))
            send(levels, same_read=n % checkpoint_every == 0)
        if n % checkpoint_every == 0:
            cps.extend(keeper.checkpoint_rows())
    with ParquetSink(root, "kraken", source="test", rotate_seconds=600) as sink:
        sink.write("book", book)
        sink.write("book_checkpoints", cps)


def same_books(data: Path, symbol: str, moments: list[int], series: list[tuple[int, int]],
               depth: int) -> int:
    """Every rebuild with checkpoints equals the fold from the snapshot; returns how many
    moments started from a checkpoint."""
    ds = open_dataset(data)
    used = 0
    for at in moments:
        got = ds.book(symbol, to_datetime(at), depth=depth)
        want = ds.book(symbol, to_datetime(at), depth=depth, checkpoints=False)
        assert got == want, at
        sp = start_point(ds, symbol, at)
        used += sp is not None and sp.kind == "checkpoint"
    for start, end in series:
        for interval in ("250ms", "1s", None):
            for unverified in ("flag", "skip"):
                kw = dict(interval=interval, depth=depth, unverified=unverified)
                got = ds.book_snapshots(symbol, to_datetime(start), to_datetime(end), **kw)
                want = ds.book_snapshots(symbol, to_datetime(start), to_datetime(end),
                                         checkpoints=False, **kw)
                assert got.num_rows > 0 and got.equals(want), (start, end, interval)
    got = ds.quotes(symbol, to_datetime(series[0][0]), to_datetime(series[0][1]))
    want = ds.quotes(symbol, to_datetime(series[0][0]), to_datetime(series[0][1]),
                     checkpoints=False)
    assert got.num_rows > 0 and got.equals(want)
    return used


def test_rebuild_from_checkpoints_equals_fold_from_snapshot(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synthetic(data, depth=10, messages=3_000, checkpoint_every=97)
    ds = open_dataset(data)
    times = [t for (t,) in ds.con.execute("SELECT DISTINCT epoch_us(ts_recv) FROM book ORDER BY 1"
                                  ).fetchall()]
    cp_times = [t for (t,) in ds.con.execute("SELECT DISTINCT epoch_us(ts_recv) FROM "
                                     "book_checkpoints ORDER BY 1").fetchall()]
    # No checkpoint between the mismatch and the resync snapshot.
    bad = ds.con.execute("SELECT min(epoch_us(ts_recv)), max(epoch_us(ts_recv)) FROM book "
                 "WHERE verified = false").fetchone()
    assert bad[0] is not None and not [t for t in cp_times if bad[0] <= t <= bad[1]]
    rng = random.Random(3)
    # Random moments, each checkpoint's own instant, one before and one after it, and a
    # moment while the book is unverified.
    moments = rng.sample(times, 40) + cp_times + [t - 1 for t in cp_times] + [
        t + 1 for t in cp_times] + [bad[0], bad[1] + 1, times[-1] + S]
    series = [(cp_times[3], cp_times[9] + 5 * S), (cp_times[3] + 1, times[-1]),
              (bad[0] - 20 * S, bad[1] + 20 * S), (times[0] - S, times[200])]
    used = same_books(data, "BTC/USD", moments, series, depth=10)
    assert used > len(moments) // 2
    # Without the checkpoint files the rebuild starts at the snapshot again.
    shutil.rmtree(data / "book_checkpoints")
    assert start_point(open_dataset(data), "BTC/USD", times[-1]).kind == "snapshot"


def test_an_incomplete_checkpoint_is_never_used(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synthetic(data, depth=10, messages=400, checkpoint_every=50)
    ds = open_dataset(data)
    latest = ds.con.execute("SELECT max(update_id) FROM book_checkpoints").fetchone()[0]
    at = ds.con.execute("SELECT epoch_us(max(ts_recv)) FROM book").fetchone()[0]
    assert start_point(ds, "BTC/USD", at).update_id == latest
    # Rewrite the checkpoints without one row of the latest one (as if a file were lost).
    rows = ds.con.execute("SELECT exchange, symbol, epoch_us(ts_recv), update_id, depth, "
                          "side, price::VARCHAR, qty::VARCHAR, levels FROM book_checkpoints "
                          "ORDER BY update_id, side, price").fetchall()
    drop = next(i for i, r in enumerate(rows) if r[3] == latest)
    shutil.rmtree(data / "book_checkpoints")
    with ParquetSink(data, "kraken", source="test2") as sink:
        sink.write("book_checkpoints", rows[:drop] + rows[drop + 1:])
    ds = open_dataset(data)
    sp = start_point(ds, "BTC/USD", at)
    assert sp.kind == "checkpoint" and sp.update_id < latest
    assert ds.book("BTC/USD", to_datetime(at)) == ds.book("BTC/USD", to_datetime(at),
                                                          checkpoints=False)


# -- end to end: the collector writes checkpoints, also around a corrupted book ---------------


@pytest.fixture(scope="module", params=[10, 100], ids=["depth10", "depth100"])
def recorded(request, tmp_path_factory) -> tuple[Path, int, int]:
    """A v2 recording with a checkpoint every second; BTC/USD's book is corrupted halfway
    and resyncs. Returns the data directory, the depth and the corruption time (µs)."""
    depth = request.param
    tmp = tmp_path_factory.mktemp(f"cp{depth}")
    data = tmp / "data"
    subs = (f'[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD", "ETH/USD"]\n'
            f"depth = {depth}\n")
    with SimulatorProcess(["--seed", "21", "--rate", "300"]) as sim:
        cfg = write_config(tmp, "c.toml", "v2", sim.urls["ws_v2"], subs,
                           extra='[output]\nbook_checkpoint = "1s"\nraw = true\n')
        proc = start_recorder(cfg, data)
        try:
            _wait(lambda: _count(data, "(SELECT DISTINCT symbol, update_id FROM "
                                       "book_checkpoints)") >= 8, 30, "checkpoints")
            armed = time.time_ns() // 1000
            sim.control.corrupt_book("BTC/USD")
            _wait(lambda: _count(data, "events WHERE kind = 'resynced'") >= 1, 30,
                  "the resync")
            time.sleep(2.5)  # checkpoints of the resynced book
        finally:
            stop(proc)
        assert proc.returncode == 0, proc.stderr.read()
    return data, depth, armed


def _count(data: Path, what: str) -> int:
    try:
        return open_dataset(data).con.execute(f"SELECT count(*) FROM {what}").fetchone()[0]
    except Exception:  # noqa: BLE001 - nothing recorded yet
        return 0


def _wait(cond, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_e2e_checkpoints_are_whole_verified_books(recorded) -> None:
    data, depth, _ = recorded
    ds = open_dataset(data)
    per = ds.con.execute("SELECT symbol, update_id, count(*), min(levels), max(levels), "
                 "count(DISTINCT depth), min(depth), count(DISTINCT ts_recv) "
                 "FROM book_checkpoints GROUP BY ALL").fetchall()
    assert {r[0] for r in per} == {"BTC/USD", "ETH/USD"}
    for _sym, _uid, n, lo, hi, depths, d, stamps in per:
        assert n == lo == hi and depths == 1 and d == depth and stamps == 1
    # Each checkpoint's update exists, verified, with the same ts_recv; every level of the
    # kept book (both sides full at the subscribed depth on the simulator's books).
    bad = ds.con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT symbol, update_id, ts_recv FROM "
        "book_checkpoints) c LEFT JOIN (SELECT symbol, update_id, any_value(ts_recv) AS t, "
        "bool_and(verified) AS ok FROM book GROUP BY ALL) b USING (symbol, update_id) "
        "WHERE b.ok IS NOT TRUE OR b.t <> c.ts_recv").fetchone()[0]
    assert bad == 0
    assert ds.con.execute("SELECT min(levels) FROM book_checkpoints").fetchone()[0] == 2 * depth
    # None from BTC/USD's unverified stretch, between the mismatch and the resync snapshot.
    lo, hi = ds.con.execute("SELECT min(update_id), max(update_id) FROM book WHERE symbol = "
                    "'BTC/USD' AND verified = false").fetchone()
    assert lo is not None
    assert ds.con.execute(f"SELECT count(*) FROM book_checkpoints WHERE symbol = 'BTC/USD' AND "
                  f"update_id BETWEEN {lo} AND {hi}").fetchone()[0] == 0


def test_e2e_rebuild_with_checkpoints_equals_without(recorded) -> None:
    data, depth, armed = recorded
    ds = open_dataset(data)
    for sym in ("BTC/USD", "ETH/USD"):
        times = [t for (t,) in ds.con.execute(
            f"SELECT DISTINCT epoch_us(ts_recv) FROM book WHERE symbol = '{sym}' ORDER BY 1"
        ).fetchall()]
        cps = [t for (t,) in ds.con.execute(
            f"SELECT DISTINCT epoch_us(ts_recv) FROM book_checkpoints WHERE symbol = '{sym}' "
            "ORDER BY 1").fetchall()]
        assert len(cps) >= 4
        rng = random.Random(depth)
        moments = sorted(rng.sample(times, 25) + cps[:6] + [t + 1 for t in cps[-4:]]
                         + [armed, times[-1] + 1])
        series = [(cps[1], times[-1] + 1), (cps[0] + 1, armed + 3 * S)]
        used = same_books(data, sym, moments, series, depth=min(depth, 25))
        assert used > 0, sym
        assert same_books(data, sym, [times[-1] + 1], series[:1], depth=depth) == 1


@pytest.mark.parametrize("recorded", [10], indirect=True, ids=["depth10"])
def test_renormalize_regenerates_checkpoints(recorded, tmp_path: Path) -> None:
    data, _, _ = recorded
    again = tmp_path / "again"
    with ParquetSink(again, "kraken", source="renormalize") as sink:
        counts = renormalize(data, sink.write, checkpoint_us=S)
    assert counts["book_checkpoints"] > 0
    ds = open_dataset(again)
    # Same rule as live: whole books at verified updates only.
    assert ds.con.execute("SELECT count(*) FROM (SELECT DISTINCT c.symbol, c.update_id FROM "
                  "book_checkpoints c JOIN book b USING (symbol, update_id) WHERE "
                  "b.verified IS NOT TRUE)").fetchone()[0] == 0
    at = ds.con.execute("SELECT epoch_us(max(ts_recv)) FROM book").fetchone()[0]
    for sym in ("BTC/USD", "ETH/USD"):
        assert start_point(ds, sym, at).kind == "checkpoint"
        assert ds.book(sym, to_datetime(at)) == ds.book(sym, to_datetime(at),
                                                        checkpoints=False)
