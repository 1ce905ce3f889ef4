"""Redundant collectors of one book and one trade stream in one dataset (docs/many-machines.md,
"Redundant collectors"): a rebuild follows one writer at a time and switches only where the
followed one has a gap, starting the other from its own snapshot or checkpoint; trades
recorded by several hosts count once."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from recorder.analysis.dataset import open_dataset, parse_time, to_datetime
from recorder.analysis.export import export
from recorder.analysis.rebuild import plan
from recorder.core.schema import make_row
from tests.datasets import T0, S, level, trade, write

A, B = "rec-public-host-a-4242", "rec-public-host-b-77"   # two hosts' source tokens
WA, WB = "rec-public-host-a", "rec-public-host-b"         # their writers (pid removed)
LAG = 3_000  # host B receives every frame 3 ms after host A
DEPTH = 3


def book_messages() -> list[tuple[int, str, list[tuple[str, str, str]]]]:
    """The exchange's messages: (second, kind, [(side, price, qty)]); kind is "snap" or
    "upd". A level beyond DEPTH falls out of scope (no delete is sent)."""
    return [
        (0, "snap", [("ask", "101", "1"), ("ask", "102", "1"), ("ask", "103", "1"),
                     ("bid", "99", "1"), ("bid", "98", "1"), ("bid", "97", "1")]),
        (1, "upd", [("ask", "100.5", "2")]),
        (2, "upd", [("bid", "99", "3")]),
        (3, "upd", [("ask", "100.5", "0")]),
        (4, "upd", [("bid", "99.5", "1")]),
        (5, "upd", [("ask", "101", "4")]),
        # host A is disconnected from here until its new snapshot at 8.5 s
        (6, "upd", [("bid", "99.5", "0"), ("bid", "96", "2")]),
        (7, "upd", [("ask", "100", "1")]),
        (8, "upd", [("bid", "99.7", "5")]),
        (9, "upd", [("ask", "100", "0")]),
        (10, "upd", [("bid", "99.7", "2")]),
    ]


def _book_after(n: int) -> dict[str, dict[Decimal, str]]:
    """The true book after the first n messages, cut to DEPTH after each."""
    book: dict[str, dict[Decimal, str]] = {"ask": {}, "bid": {}}
    for _, kind, levels in book_messages()[:n]:
        if kind == "snap":
            book = {"ask": {}, "bid": {}}
        for side, price, qty in levels:
            if Decimal(qty) == 0:
                book[side].pop(Decimal(price), None)
            else:
                book[side][Decimal(price)] = qty
        for side in ("ask", "bid"):
            keep = sorted(book[side], reverse=side == "bid")[:DEPTH]
            book[side] = {p: book[side][p] for p in keep}
    return book


def host_rows(start: int, lag: int, uid0: int, *, skip: tuple[int, ...] = (),
              resnap_at: float | None = None, bad: tuple[int, ...] = ()) -> list[tuple]:
    """One host's book rows: every message (but ``skip``) ``lag`` µs after the exchange sent
    it, update ids from ``uid0``; ``resnap_at``: a fresh snapshot (the book so far) received
    then, as after a reconnect; ``bad``: messages flagged verified = false (a mismatch)."""
    rows: list[tuple] = []
    uid = uid0
    msgs = book_messages()
    for i, (sec, kind, levels) in enumerate(msgs):
        t = start + sec * S + lag
        if resnap_at is not None and msgs[i - 1][0] < resnap_at <= sec:
            book = _book_after(i)
            ts = start + int(resnap_at * S) + lag
            for side in ("ask", "bid"):
                for price, qty in book[side].items():
                    rows.append(level(ts, uid, side, f"{price}", qty, True, depth=DEPTH))
            uid += 1
        if i in skip:
            continue
        for side, price, qty in levels:
            rows.append(level(t, uid, side, price, qty, kind == "snap",
                              verified=False if i in bad else True, depth=DEPTH))
        uid += 1
    return rows


START = T0 + 3600 * S


def checkpoint(host_start: int, lag: int, after: int, uid: int) -> list[tuple]:
    """A host's checkpoint: its whole book after message ``after`` (update id ``uid``)."""
    book = _book_after(after + 1)
    t = host_start + book_messages()[after][0] * S + lag
    n = len(book["ask"]) + len(book["bid"])
    return [make_row("book_checkpoints", exchange="kraken", symbol="BTC/USD", ts_recv=t,
                     update_id=uid, depth=DEPTH, side=side, price=f"{p}", qty=q, levels=n)
            for side in ("ask", "bid") for p, q in book[side].items()]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory) -> dict[str, Path]:
    """Three data directories: host A alone (a gap: messages 6-8 missed, a new snapshot at
    8.5 s), host B alone (everything, 3 ms later, with a checkpoint after message 4), and
    both together. B's update ids are lower than A's (it started earlier... by its ids) so
    that ordering both by update_id, as one collector's rows are, mixes them."""
    root = tmp_path_factory.mktemp("hosts")
    a = host_rows(START, 0, 5_000_000, skip=(6, 7, 8), resnap_at=8.5)
    b = host_rows(START, LAG, 1_000)
    b_cp = checkpoint(START, LAG, 4, 1_000 + 4)
    for name, parts in (("a", [(A, a, [])]), ("b", [(B, b, b_cp)]),
                        ("both", [(A, a, []), (B, b, b_cp)])):
        for source, rows, cps in parts:
            tables = {"book": rows}
            if cps:
                tables["book_checkpoints"] = cps
            write(root / name, tables, source=source, rotate_seconds=3)
    return {k: root / k for k in ("a", "b", "both")}


def _series(data: Path, interval: str | None, depth: int = DEPTH) -> pa.Table:
    with open_dataset(data) as ds:
        return ds.book_snapshots("BTC/USD", to_datetime(START), to_datetime(START + 11 * S),
                                 interval, depth)


def _split(t: pa.Table, at_us: int) -> tuple[list[dict], list[dict]]:
    rows = t.to_pylist()
    return ([r for r in rows if r["ts"] <= to_datetime(at_us)],
            [r for r in rows if r["ts"] > to_datetime(at_us)])


def test_the_plan_follows_a_until_its_gap_then_b(hosts):
    with open_dataset(hosts["both"]) as ds:
        legs, depth, ws = plan(ds, "BTC/USD", START, START + 11 * S)
    gap = START + 5 * S  # host A's last message before its gap
    assert ws == [WA, WB] and depth == DEPTH
    # A started first (B's copy of the snapshot came 3 ms later); B from just after A's last
    # message, and B stays followed when A is back (A's new segment started later).
    assert legs == [(WA, START, gap), (WB, gap + 1, START + 11 * S)]


@pytest.mark.parametrize("interval", ["1s", "250ms", None])
def test_the_rebuild_follows_one_host_and_the_other_across_the_gap(hosts, interval):
    gap = START + 5 * S
    both, only_a, only_b = (_series(hosts[k], interval) for k in ("both", "a", "b"))
    before, after = _split(both, gap)
    a_before, a_after = _split(only_a, gap)
    b_before, b_after = _split(only_b, gap)
    assert before == a_before and len(before) >= 5
    if interval is None:
        # A series of changes: B's copy of A's last message (3 ms later) changes nothing
        # in the book already reported; every later change is B's.
        assert after[0]["ts"] > to_datetime(gap + LAG)
        after, b_after = after, _split(only_b, gap + LAG)[1]
    assert after == b_after and len(after) >= 4
    # The hosts' books differ in the gap (A's is stale), so following B is visible.
    assert a_after != b_after


def test_the_books_are_the_true_books_never_a_mix(hosts):
    with open_dataset(hosts["both"]) as ds:
        for n, (sec, _, _) in enumerate(book_messages(), start=1):
            # Just after host B received message n (A has it too, outside its gap).
            at = START + sec * S + LAG
            book = ds.book("BTC/USD", to_datetime(at), depth=DEPTH)
            want = _book_after(n)
            assert [(p, Decimal(q)) for p, q in sorted(want["ask"].items())] == book.asks, sec
            assert [(p, Decimal(q)) for p, q in sorted(want["bid"].items(), reverse=True)] \
                == book.bids, sec
            assert book.verified is True
        # In A's gap the book is B's, started from B's checkpoint (after message 4) or
        # snapshot: the same book either way.
        in_gap = to_datetime(START + 7 * S + LAG)
        assert ds.book("BTC/USD", in_gap, DEPTH).snapshot_at == to_datetime(START + LAG)
        assert (ds.book("BTC/USD", in_gap, DEPTH) ==
                ds.book("BTC/USD", in_gap, DEPTH, checkpoints=False))


def test_an_unverified_stretch_is_a_gap_too(tmp_path):
    """Host A's checksum fails at message 6 (rows flagged false until a resync snapshot at
    8.5 s); host B verifies throughout: the rebuild follows B from A's last good message,
    and never reports A's wrong book."""
    a = host_rows(START, 0, 5_000_000, bad=(6, 7, 8), resnap_at=8.5)
    b = host_rows(START, LAG, 1_000)
    write(tmp_path / "both", {"book": a}, source=A)
    write(tmp_path / "both", {"book": b}, source=B)
    write(tmp_path / "a", {"book": a}, source=A)
    write(tmp_path / "b", {"book": b}, source=B)
    both = _series(tmp_path / "both", "1s")
    assert all(r["verified"] is True for r in both.to_pylist())
    assert False in _series(tmp_path / "a", "1s").column("verified").to_pylist()
    before, after = _split(both, START + 5 * S)
    assert before == _split(_series(tmp_path / "a", "1s"), START + 5 * S)[0]
    assert after == _split(_series(tmp_path / "b", "1s"), START + 5 * S)[1]


def test_a_host_that_stops_hands_over_and_one_alone_is_unchanged(tmp_path):
    """Host A stops for good after message 5 (SIGTERM): the book goes on with B. A single
    host's book is folded as before (no plan)."""
    a = host_rows(START, 0, 5_000_000, skip=(6, 7, 8, 9, 10))
    b = host_rows(START, LAG, 1_000)
    write(tmp_path / "both", {"book": a}, source=A)
    write(tmp_path / "both", {"book": b}, source=B)
    write(tmp_path / "b", {"book": b}, source=B)
    both = _series(tmp_path / "both", None)
    # B's copy of A's last message (3 ms later) changes nothing already reported.
    _, after = _split(both, START + 5 * S)
    assert after == _split(_series(tmp_path / "b", None), START + 5 * S + LAG)[1] != []
    with open_dataset(tmp_path / "b") as ds:
        assert plan(ds, "BTC/USD", START, START + 11 * S)[0] == []


def test_book_export_of_both_hosts_equals_the_followed_hosts(hosts, tmp_path):
    gap = START + 5 * S
    rows = {}
    for k in ("both", "a", "b"):
        out = tmp_path / f"{k}.csv"
        with open_dataset(hosts[k]) as ds:
            export(ds, "book", out, symbols="BTC/USD", start=to_datetime(START),
                   end=to_datetime(START + 11 * S), interval="1s", depth=DEPTH)
        rows[k] = list(csv.DictReader(out.open()))
    def part(k: str, after: bool) -> list[dict]:
        return [r for r in rows[k]
                if (parse_time(r["ts"].replace("Z", "+00:00")) > gap) == after]

    assert part("both", False) == part("a", False) != []
    assert part("both", True) == part("b", True) != []
    assert part("a", True) != part("b", True)


# -- trades --------------------------------------------------------------------------------


def _trades(ids: bool) -> list[tuple]:
    """A few trades, two of them with the same content (one taker order filling two equal
    maker orders: distinct trades, which only an id tells apart)."""
    out = []
    for i in range(6):
        t = START + i * S
        out.append(trade("BTC/USD", t, f"{100 + i}.5", "0.25", "buy" if i % 2 else "sell",
                         tid=i + 1, tx=t - 500))
    twin = trade("BTC/USD", START + 7 * S, "107", "1", "buy", tid=7, tx=START + 7 * S - 500)
    out += [twin, twin[:7] + ("8" if ids else None,) + twin[8:]]
    if not ids:
        out = [r[:7] + (None,) + r[8:] for r in out]
    return out


def _as_rest(rows: list[tuple], recv_shift: int) -> list[tuple]:
    """The same trades as a backfill on another host writes them: source "rest", received
    (fetched) later."""
    from recorder.core.schema import column_index

    src, recv = column_index("trades", "source"), column_index("trades", "ts_recv")
    out = []
    for r in rows:
        r = list(r)
        r[src], r[recv] = "rest", r[recv] + recv_shift
        out.append(tuple(r))
    return out


@pytest.mark.parametrize("ids", [True, False], ids=["trade_ids", "kraken_v1_no_ids"])
def test_trades_of_two_hosts_count_once(tmp_path, ids):
    trades = _trades(ids)
    # Host A streamed all of them; host B streamed the first four, then repaired the rest
    # from the REST history after a gap (a later ts_recv).
    write(tmp_path / "both", {"trades": trades}, source=A)
    write(tmp_path / "both", {"trades": trades[:4] + _as_rest(trades[4:], 60 * S)},
          source=B)
    write(tmp_path / "a", {"trades": trades}, source=A)
    with open_dataset(tmp_path / "both") as ds, open_dataset(tmp_path / "a") as one:
        assert ds.sql("SELECT count(*) FROM trades").fetchall()[0][0] == 2 * len(trades)
        unique = ds.sql("SELECT count(*), count(*) FILTER (WHERE source = 'rest') "
                        "FROM trades_unique").fetchall()[0]
        assert unique == (len(trades), 0)   # the twin trades stay two; live copies kept
        assert ds.arrow("trades", unique=True).num_rows == len(trades)
        assert ds.bars("1m").equals(one.bars("1m"))
        assert ds.bars("1s", time="recv").equals(one.bars("1s", time="recv"))
        got = ds.bars("1d").to_pylist()
        assert len(got) == 1 and got[0]["trades"] == len(trades)
        assert got[0]["volume"] == sum(Decimal(r[5]) for r in trades)
    for k in ("both", "a"):
        export(open_dataset(tmp_path / k), "tardis-trades", tmp_path / f"{k}.csv")
    assert (tmp_path / "both.csv").read_text() == (tmp_path / "a.csv").read_text()


def test_v1_trades_repaired_with_ids_on_another_host_count_once(tmp_path):
    """A Kraken v1 stream (no trade ids) on host A; host B repaired the same trades from the
    REST history, which has ids: the same trades (same time, price, qty, side), once."""
    with_ids = _trades(True)
    no_ids = [r[:7] + (None,) + r[8:] for r in with_ids]
    write(tmp_path, {"trades": no_ids}, source=A)
    write(tmp_path, {"trades": _as_rest(with_ids, 60 * S)}, source=B)
    with open_dataset(tmp_path) as ds:
        assert ds.sql("SELECT count(*) FROM trades_unique").fetchall()[0][0] == len(with_ids)
        assert ds.bars("1d").to_pylist()[0]["trades"] == len(with_ids)


def test_one_host_keeps_every_row_and_the_catalog_has_the_view(tmp_path):
    from recorder.analysis.query import write_catalog

    trades = _trades(True)
    write(tmp_path / "d", {"trades": trades}, source=A)
    with open_dataset(tmp_path / "d") as ds:
        assert ds.sql("SELECT count(*) FROM trades_unique").fetchall()[0][0] == len(trades)
    import duckdb

    write_catalog(tmp_path / "d", tmp_path / "c.duckdb")
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM trades_unique").fetchall()[0][0] == len(trades)
    con.close()
