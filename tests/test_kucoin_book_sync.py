"""KuCoin's level2 calibration (recorder.exchanges.kucoin.book_sync, through the parser).

Three kinds of checks: the real level2 frames of ../shared/data/kucoin (with tardis-node's
expected book as an independent result where its rules and KuCoin's docs agree), unit
checks of each rule, and random streams with gaps, re-deliveries, price "0" entries and
updates buffered before the snapshot, whose book must equal a straightforward model.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import msgspec

from recorder.core.events import new_rows
from recorder.core.schema import column_index
from recorder.exchanges.kucoin.book_rule import RULE
from recorder.exchanges.kucoin.parse import Parser, decode, l2_message, snapshot_frame

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kucoin"
SEQ = column_index("book", "sequence")
SNAP = column_index("book", "is_snapshot")
UID = column_index("book", "update_id")
TS = column_index("book", "ts_exchange")
TS_RECV = column_index("book", "ts_recv")
DEPTH = column_index("book", "depth")
VERIFIED = column_index("book", "verified")


def _line(n: int) -> str:
    return (DATA / "ws-public.ndjson").read_text().splitlines()[n - 1]


def l2(start: int, end: int, asks=(), bids=(), symbol: str = "BTC-USDT",
       time: int | None = None) -> dict:
    data = {"changes": {"asks": [list(a) for a in asks], "bids": [list(b) for b in bids]},
            "sequenceEnd": end, "sequenceStart": start, "symbol": symbol}
    if time is not None:
        data["time"] = time
    return {"type": "message", "topic": f"/market/level2:{symbol}",
            "subject": "trade.l2update", "data": data}


def snapshot(seq: int, bids=(), asks=(), symbol: str = "BTC-USDT", depth: int | None = 100,
             time: int = 1_700_000_000_000) -> dict:
    data = msgspec.json.encode({"time": time, "sequence": str(seq), "bids": list(bids),
                                "asks": list(asks)})
    text = snapshot_frame(symbol, "GET /api/v1/market/orderbook/level2_100", depth, data)
    return decode(text.encode())


class Session:
    """A parser fed frame by frame, folding the book rows it writes into a plain book."""

    def __init__(self, **kw) -> None:
        self.parser = Parser(**kw)
        self.uid = 0
        self.book: dict[str, dict[str, str]] = {"bid": {}, "ask": {}}
        self.rows: list[tuple] = []
        self.events: list[tuple] = []
        self.calls: list[list[tuple]] = []

    def feed(self, msg: dict):
        self.uid += 1
        out = new_rows()
        control = self.parser.parse(msg, 5_000_000 + self.uid, self.uid, out)
        rows = out["book"]
        if any(r[SNAP] for r in rows):
            assert rows[0][SNAP], "snapshot rows come first"
            self.book = {"bid": {}, "ask": {}}
        for r in rows:
            side = self.book[r[4]]
            if Decimal(r[6]) == 0:
                side.pop(r[5], None)
            else:
                side[r[5]] = r[6]
        self.rows += rows
        self.events += out["events"]
        self.calls.append(rows)
        return control

    def phase(self, symbol: str = "BTC/USDT") -> str:
        return self.parser.books.phase(symbol)


# -- the real frames ----------------------------------------------------------------------


def test_level2_frames_parse_to_messages_in_sequence_order():
    for n in range(13, 25):
        m = json.loads(_line(n), parse_float=str)
        d = m["data"]
        msg = l2_message(decode(_line(n).encode())["data"], m["topic"].split(":")[1])
        assert (msg.start, msg.end) == (d["sequenceStart"], d["sequenceEnd"])
        assert msg.symbol == d["symbol"].replace("-", "/")
        assert msg.ts == (d["time"] * 1000 if "time" in d else None)
        expected = sorted(((int(s), side, p, q) for side, key in (("ask", "asks"), ("bid", "bids"))
                           for p, q, s in d["changes"][key] if Decimal(p) != 0),
                          key=lambda c: c[0])
        assert msg.changes == expected, n
    # The docs example: three changes, sequence 14103846 coalesced away, sorted by sequence.
    msg = l2_message(decode(_line(23).encode())["data"], "BTC-USDT")
    assert [c[0] for c in msg.changes] == [14103844, 14103845, 14103847]
    assert l2_message(decode(_line(15).encode())["data"], "").changes == []


def _tardis_snapshot_frame() -> dict:
    """Line 25 (tardis's wrapper around a REST level2_100 answer) as our snapshot frame."""
    raw = msgspec.json.decode(_line(25).encode(), type=dict[str, msgspec.Raw])["data"]
    return decode(snapshot_frame("BTC-USDT", "GET /api/v1/market/orderbook/level2_100", 100,
                                 bytes(raw)).encode())


def test_buffered_updates_merge_into_the_snapshot_as_tardis_expects():
    tardis = json.loads((DATA / "tardis-expected.json").read_text())["results"]
    (merged,) = [r["tardis_output"][0] for r in tardis if r["ws_public_line"] == 25]
    s = Session()
    controls = [s.feed(decode(_line(n).encode())) for n in (15, 16, 17, 18)]
    assert [c.kind if c else None for c in controls] == ["snapshot_needed", None, None, None]
    assert s.rows == [] and s.phase() == "waiting"
    assert s.feed(_tardis_snapshot_frame()) is None
    snap = json.loads(_line(25))["data"]
    # Snapshot rows (bids, asks as sent), then line 18's bid: lines 15-17 end at or below
    # the snapshot's sequence, line 18's ask is a price "0" placeholder.
    assert [(r[4], r[5], r[6], r[SNAP], r[SEQ]) for r in s.rows] == (
        [("bid", p, q, True, int(snap["sequence"])) for p, q in snap["bids"]]
        + [("ask", p, q, True, int(snap["sequence"])) for p, q in snap["asks"]]
        + [("bid", "12", "0.12", False, 1636276324356)])
    assert {r[UID] for r in s.rows} == {5} and all(r[VERIFIED] is True for r in s.rows)
    assert all(r[DEPTH] == 100 for r in s.rows)
    # tardis's book agrees on every bid; its ask 24088.8 = 0 comes from line 19, which by
    # KuCoin's continuity rule does not follow line 18 (…356 then …361): a gap for us.
    assert {Decimal(p): Decimal(q) for p, q in s.book["bid"].items()} == {
        Decimal(repr(b["price"])): Decimal(repr(b["amount"])) for b in merged["bids"]}
    control = s.feed(decode(_line(19).encode()))
    assert (control.kind, control.value, control.symbol) == ("resync", "sequence_gap",
                                                             "BTC/USDT")
    (gap,) = s.events
    assert gap[2] == "sequence_gap" and gap[3] == "BTC/USDT" and gap[4] == "book"
    assert json.loads(gap[5]) == {"expected": 1636276324357, "got": 1636276324361,
                                  "sequence_end": 1636276324361}


def test_delete_of_line_19_as_tardis_expects_after_a_fresh_snapshot():
    tardis = json.loads((DATA / "tardis-expected.json").read_text())["results"]
    (merged,) = [r["tardis_output"][0] for r in tardis if r["ws_public_line"] == 25]
    deleted = [a for a in merged["asks"] if a["amount"] == 0]
    s = Session()
    s.feed(decode(_line(19).encode()))
    snap = json.loads(_line(25))["data"]
    # The same levels, as a snapshot taken at …360 (edited here so that line 19 follows).
    s.feed(snapshot(1636276324360, snap["bids"], snap["asks"]))
    assert [(r[4], r[5], r[6], r[SEQ]) for r in s.rows if not r[SNAP]] == [
        ("ask", "24088.8", "0", 1636276324361)]
    assert [Decimal(repr(a["price"])) for a in deleted] == [Decimal("24088.8")]
    assert "24088.8" not in s.book["ask"]
    # Line 20's change carries sequence …361, not above the book's …361: skipped (tardis,
    # which skips no change once synced, applies it); line 21 is a placeholder only.
    for n in (20, 21):
        assert s.feed(decode(_line(n).encode())) is None
    assert s.calls[-2:] == [[], []]
    # Line 22 (spliced by tardis: start > end, end below the book): the sequence went back.
    assert s.feed(decode(_line(22).encode())).kind == "resync"
    assert json.loads(s.events[-1][5])["reason"] == "sequence went back"


# -- rules --------------------------------------------------------------------------------


def test_first_update_asks_for_a_snapshot_once():
    s = Session()
    c = s.feed(l2(10, 10, asks=[("101", "1", "10")]))
    assert (c.kind, c.symbol, c.channel, c.value) == ("snapshot_needed", "BTC/USDT", "book",
                                                      None)
    assert s.feed(l2(11, 11, asks=[("101", "2", "11")])) is None
    assert s.parser.books.buffered("BTC/USDT") == 2 and s.rows == []
    # Another symbol asks for its own.
    assert s.feed(l2(5, 5, symbol="ETH-USDT")).symbol == "ETH/USDT"


def test_snapshot_then_buffer_rows_share_the_snapshot_frame():
    s = Session()
    s.feed(l2(8, 9, bids=[("99", "1", "9")], time=1_700_000_000_001))
    s.feed(l2(10, 12, asks=[("101", "3", "12"), ("102", "1", "10")],
              bids=[("99", "0", "11"), ("0", "0", "12")], time=1_700_000_000_002))
    s.feed(l2(13, 13, asks=[("103", "5", "13")], time=1_700_000_000_003))
    assert s.feed(snapshot(10, bids=[["99", "2"]], asks=[["101", "1"]], depth=None)) is None
    rows = s.calls[-1]
    # Message 8-9 is covered (end 9 <= 10); in 10-12 only changes above 10 apply, in
    # sequence order; 13 follows.
    assert [(r[4], r[5], r[6], r[SNAP], r[SEQ]) for r in rows] == [
        ("bid", "99", "2", True, 10), ("ask", "101", "1", True, 10),
        ("bid", "99", "0", False, 11), ("ask", "101", "3", False, 12),
        ("ask", "103", "5", False, 13)]
    assert {r[UID] for r in rows} == {4} and {r[TS_RECV] for r in rows} == {5_000_004}
    assert [r[TS] for r in rows] == [1_700_000_000_000_000] * 2 + [1_700_000_000_002_000] * 2 \
        + [1_700_000_000_003_000]
    assert all(r[VERIFIED] is True and r[DEPTH] is None for r in rows)
    assert s.book == {"bid": {}, "ask": {"101": "3", "103": "5"}}
    assert s.phase() == "synced" and s.parser.books.sequence("BTC/USDT") == 13
    # Live: continuity, own update_id, the change's own sequence.
    assert s.feed(l2(14, 15, bids=[("98", "1", "15")])) is None
    assert [(r[UID], r[SEQ], r[DEPTH]) for r in s.calls[-1]] == [(5, 15, None)]


def test_gap_while_synced_resyncs_and_writes_nothing_until_the_snapshot():
    s = Session()
    s.feed(l2(1, 1))
    s.feed(snapshot(1, asks=[["101", "1"]]))
    assert s.feed(l2(2, 3, asks=[("101", "2", "3")])) is None
    control = s.feed(l2(6, 7, asks=[("101", "9", "7")]))
    assert (control.kind, control.value, control.symbol) == ("resync", "sequence_gap",
                                                             "BTC/USDT")
    assert json.loads(s.events[-1][5]) == {"expected": 4, "got": 6, "sequence_end": 7}
    assert s.phase() == "waiting"
    assert s.feed(l2(8, 8, asks=[("102", "1", "8")])) is None
    assert s.calls[-2:] == [[], []]
    # The fresh snapshot covers up to 6: message 6-7 (buffered at the gap) applies 7.
    s.feed(snapshot(6, asks=[["101", "5"]]))
    assert [(r[5], r[6], r[SEQ], r[SNAP]) for r in s.calls[-1]] == [
        ("101", "5", 6, True), ("101", "9", 7, False), ("102", "1", 8, False)]
    assert s.book["ask"] == {"101": "9", "102": "1"}


def test_gap_inside_the_buffer_replay():
    s = Session()
    s.feed(l2(5, 5, asks=[("101", "1", "5")]))
    s.feed(l2(6, 6, asks=[("101", "2", "6")]))
    s.feed(l2(9, 9, asks=[("101", "3", "9")]))  # 7-8 lost while waiting
    control = s.feed(snapshot(5, asks=[["101", "1"]]))
    assert control.kind == "resync"
    assert [(r[6], r[SEQ]) for r in s.calls[-1]] == [("1", 5), ("2", 6)]
    assert json.loads(s.events[-1][5]) == {"expected": 7, "got": 9, "sequence_end": 9}
    assert s.phase() == "waiting" and s.parser.books.buffered("BTC/USDT") == 1


def test_snapshot_ahead_of_the_stream_drops_what_it_covers():
    s = Session()
    s.feed(l2(5, 5))
    s.feed(snapshot(9, asks=[["101", "1"]]))  # REST answered after changes 6-9 happened
    for start in (6, 8):
        assert s.feed(l2(start, start + 1, asks=[("101", "7", str(start))])) is None
    assert s.feed(l2(10, 10, asks=[("101", "2", "10")])) is None
    assert s.events == [] and s.book["ask"] == {"101": "2"}


def test_redelivered_message_is_dropped_but_a_sequence_going_back_is_a_gap():
    s = Session()
    s.feed(l2(1, 1))
    s.feed(snapshot(1))
    s.feed(l2(2, 4, asks=[("101", "1", "4")]))
    assert s.feed(l2(2, 4, asks=[("101", "1", "4")])) is None
    assert s.events == [] and s.calls[-1] == []
    # KuCoin restarted its sequences: not silently dropped.
    assert s.feed(l2(1, 1, asks=[("101", "2", "1")])).kind == "resync"
    assert json.loads(s.events[-1][5])["reason"] == "sequence went back"


def test_full_buffer_is_a_gap():
    s = Session(buffer_limit=3)
    s.feed(l2(1, 1))
    for n in (2, 3):
        assert s.feed(l2(n, n)) is None
    control = s.feed(l2(4, 4))
    assert (control.kind, control.value) == ("resync", "sequence_gap")
    assert json.loads(s.events[-1][5]) == {"reason": "buffer_full", "buffered": 3, "got": 4,
                                           "sequence_end": 4}
    assert s.parser.books.buffered("BTC/USDT") == 1


def test_late_snapshot_is_ignored_a_newer_one_replaces_the_book():
    s = Session()
    s.feed(l2(1, 1))
    s.feed(snapshot(1, asks=[["101", "1"]]))
    s.feed(l2(2, 5, asks=[("101", "2", "5")]))
    assert s.feed(snapshot(3, asks=[["101", "9"]])) is None
    assert s.calls[-1] == [] and s.events[-1][2] == "snapshot_ignored"
    assert json.loads(s.events[-1][5]) == {"sequence": 3, "book_sequence": 5}
    s.feed(snapshot(7, asks=[["101", "4"]]))
    assert [r[SNAP] for r in s.calls[-1]] == [True] and s.book["ask"] == {"101": "4"}


def test_malformed_update_leaves_the_state_as_it_was():
    s = Session()
    s.feed(l2(1, 1))
    s.feed(snapshot(1, asks=[["101", "1"]]))
    bad = l2(2, 2, asks=[("101", "2", "2"), ("102", "x", "2")])
    try:
        s.feed(bad)
    except ValueError:
        pass
    else:
        raise AssertionError("a broken size must raise")
    assert s.phase() == "synced" and s.parser.books.sequence("BTC/USDT") == 1
    assert s.feed(l2(2, 2, asks=[("101", "2", "2")])) is None
    assert s.book["ask"] == {"101": "2"} and s.events == []


def test_book_rule():
    s = Session()
    s.feed(l2(1, 1))
    s.feed(snapshot(1, asks=[["101", "1"]], depth=100))
    first = s.calls[-1][0]
    assert RULE.max_depth(first) is None and RULE.verify(None, first) is True
    assert RULE.failure_kind == "sequence_gap" and RULE.price_bytes is RULE.qty_bytes is None
    out = new_rows()
    Parser().parse(decode(_line(26).encode()), 1, 1, out)
    top = out["book"][0]
    assert RULE.max_depth(top) == 5 and RULE.verify(None, top) is None


def test_rows_through_the_runtime_book_keeper():
    from recorder.capture.book import BookKeeper

    keeper = BookKeeper(RULE)
    s = Session()
    s.feed(l2(1, 2, asks=[("101", "1", "2")]))
    s.feed(snapshot(1, bids=[["99", "1"]], asks=[["101", "5"]]))
    s.feed(l2(3, 3, bids=[("98", "2", "3")]))
    for rows in s.calls:
        if rows:
            assert list(keeper.process(rows, 0)) == []
            assert all(r[VERIFIED] is True for r in rows)
    asks, bids = keeper.books["BTC/USDT"].top(10)
    assert asks == [("101", "1")] and bids == [("99", "1"), ("98", "2")]


# -- random streams against a model -------------------------------------------------------


def _stream(rng: random.Random, n_events: int, base: int):
    """True book after every sequence, and KuCoin-like messages (1-4 consecutive
    sequences each, one change per price kept, price "0" placeholders)."""
    prices = {"bid": [f"{90 + i}.5" for i in range(8)], "ask": [f"{100 + i}.5" for i in range(8)]}
    book = {"bid": {"90.5": "1"}, "ask": {"107.5": "2"}}
    truth = {base - 1: {k: dict(v) for k, v in book.items()}}
    events = []
    for k in range(n_events):
        seq = base + k
        if rng.random() < 0.12:
            events.append((seq, None, "0", "0"))
        else:
            side = rng.choice(("bid", "ask"))
            price = rng.choice(prices[side])
            size = "0" if rng.random() < 0.3 else f"{rng.randint(1, 40)}.{rng.randint(0, 99)}"
            if size == "0":
                book[side].pop(price, None)
            else:
                book[side][price] = size
            events.append((seq, side, price, size))
        truth[seq] = {k: dict(v) for k, v in book.items()}
    messages, i = [], 0
    while i < len(events):
        chunk = events[i:i + rng.randint(1, 4)]
        i += len(chunk)
        last: dict = {}
        for seq, side, price, size in chunk:
            last[(side, price)] = (seq, size)  # KuCoin pushes a price's last change only
        asks = [(p, sz, str(sq)) for (sd, p), (sq, sz) in last.items() if sd == "ask"]
        bids = [(p, sz, str(sq)) for (sd, p), (sq, sz) in last.items() if sd == "bid"]
        holders = [("0", "0", str(sq)) for (sd, _), (sq, _) in last.items() if sd is None]
        rng.shuffle(holders)
        asks += holders[:1]
        bids += holders[1:]
        messages.append(l2(chunk[0][0], chunk[-1][0], asks=asks, bids=bids))
    return truth, messages


def _run(seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    base = rng.choice((1, 10**6, 2**60))
    truth, messages = _stream(rng, rng.randint(50, 400), base)
    ends = [m["data"]["sequenceEnd"] for m in messages]
    p_drop, p_dup = rng.choice((0.0, 0.02, 0.08)), rng.choice((0.0, 0.05))
    s = Session()
    pending = None  # (deliver after message index, snapshot sequence)
    gaps = 0

    def check(control, idx):
        nonlocal pending, gaps
        rows = s.calls[-1]
        assert all(r[VERIFIED] is True for r in rows)
        updates = [r[SEQ] for r in rows if not r[SNAP]]
        assert updates == sorted(updates)
        if control is not None:
            assert control.kind in ("snapshot_needed", "resync"), control
            gaps += control.kind == "resync"
            if pending is None:
                # REST answers at or after the last message delivered, possibly ahead.
                hi = ends[min(idx + rng.randint(0, 3), len(ends) - 1)]
                pending = (idx + rng.randint(0, 5), rng.randint(ends[idx], hi))
        if s.phase() == "synced":
            assert s.book == truth[s.parser.books.sequence("BTC/USDT")], seed

    for idx, msg in enumerate(messages):
        # (The last message always arrives: a loss at the very end shows no gap.)
        if rng.random() >= p_drop or idx == len(messages) - 1:
            for _ in range(2 if rng.random() < p_dup else 1):
                check(s.feed(msg), idx)
        if pending is not None and pending[0] <= idx:
            seq = pending[1]
            pending = None
            t = truth[seq]
            check(s.feed(snapshot(seq, bids=[[p, q] for p, q in t["bid"].items()],
                                  asks=[[p, q] for p, q in t["ask"].items()])), idx)
    final = ends[-1]
    if s.phase() != "synced":  # a resync still under way: its snapshot arrives last
        t = truth[final]
        s.feed(snapshot(final, bids=[[p, q] for p, q in t["bid"].items()],
                        asks=[[p, q] for p, q in t["ask"].items()]))
    assert s.phase() == "synced" and s.parser.books.sequence("BTC/USDT") == final, seed
    assert s.book == truth[final], seed
    kinds = {e[2] for e in s.events}
    assert kinds <= {"sequence_gap", "snapshot_ignored"}
    assert sum(e[2] == "sequence_gap" for e in s.events) == gaps
    return gaps, len(s.rows)


def test_random_streams_equal_the_model():
    gaps = rows = 0
    for seed in range(300):
        g, r = _run(seed)
        gaps += g
        rows += r
    assert gaps > 50 and rows > 10_000  # the streams did exercise gaps and resyncs
