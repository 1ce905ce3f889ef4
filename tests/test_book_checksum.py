"""Kraken's checksum rule and the book keeper, against the documented worked examples and
every checksum in the real captures."""

from __future__ import annotations

import json

import pytest

from recorder.capture.book import BookKeeper
from recorder.exchanges.kraken import v1, v2
from recorder.exchanges.kraken.book_rule import RULE
from recorder.exchanges.kraken.checksum import book_checksum, level_text
from recorder.exchanges.kraken.common import new_rows
from tests.captures import DATA, cryptofeed_frames, flashbook_frames, sdk_v1_frames

VECTORS = json.loads((DATA / "test-vectors.json").read_text())


@pytest.mark.parametrize("name", ["ws_v1_book_checksum", "ws_v2_book_checksum"])
def test_documented_worked_examples(name):
    v = VECTORS[name]
    asks = [(p, q) for p, q, *_ in v["asks_low_to_high"]]
    bids = [(p, q) for p, q, *_ in v["bids_high_to_low"]]
    assert "".join(level_text(p, q) for p, q in asks + bids) == v["crc_input_string"]
    assert book_checksum(asks, bids) == v["expected_checksum"]


def test_level_text_strips_point_and_leading_zeros():
    assert level_text("0.05005", "0.00000500") == "5005500"
    assert level_text("45285.2", "0.00100000") == "452852100000"


def _replay(mod, frames, **kw):
    keeper, out = BookKeeper(RULE), new_rows()
    mismatches = []
    for i, frame in enumerate(frames):
        start = len(out["book"])
        mod.parse(mod.decode(frame.encode()), i, i, out, **kw)
        if len(out["book"]) > start:
            mismatches += keeper.process(out["book"], start)
    return keeper, out["book"], mismatches


@pytest.mark.parametrize("source,expected", [("cryptofeed", 4269), ("sdk", 979)])
def test_every_real_v1_checksum_verifies(source, expected):
    frames = cryptofeed_frames("KRAKEN.ws.50.0") if source == "cryptofeed" else sdk_v1_frames()
    keeper, rows, mismatches = _replay(v1, frames)
    assert mismatches == []
    assert keeper.verified == expected
    assert all(r[-1] is True for r in rows if not r[7])
    assert all(r[-1] is None for r in rows if r[7]), "v1 snapshots carry no checksum"


def test_every_real_v2_checksum_verifies():
    depths = {"BTC/USD": 10, "ETH/USD": 10}
    keeper, rows, mismatches = _replay(v2, flashbook_frames(), book_depths=depths)
    assert mismatches == [] and keeper.verified == 2962
    assert all(r[-1] is True for r in rows)


def test_corrupted_level_detected_on_first_update_and_marks_until_snapshot():
    frames = list(sdk_v1_frames())
    # Corrupt the quantity of the first update's first level, as a flawed feed would.
    idx = next(i for i, f in enumerate(frames) if '"c":' in f)
    m = json.loads(frames[idx])
    side = "a" if "a" in m[1] else "b"
    m[1][side][0][1] = "999.00000000"
    frames[idx] = json.dumps(m, separators=(",", ":"))
    keeper, rows, mismatches = _replay(v1, frames[: idx + 5])
    assert len(mismatches) == 1 and mismatches[0].symbol == "BTC/USD"
    assert mismatches[0].detail["expected"] == int(m[-3]["c"] if len(m) == 5 else m[1]["c"])
    bad = [r for r in rows if r[8] >= idx]
    assert bad and all(r[-1] is False for r in bad)


def test_items_of_one_message_verified_each_against_its_own_book():
    """A v2 message whose data holds A, then B, then A again: B's level never lands in A's
    book, and each item is checked against its own checksum."""
    books = {"A/USD": ([("10.0", "1.0")], [("9.0", "1.0")]),
             "B/USD": ([("20.0", "2.0")], [("19.0", "2.0")])}

    def item(symbol, asks, bids, crc):
        return {"symbol": symbol, "asks": [{"price": p, "qty": q} for p, q in asks],
                "bids": [{"price": p, "qty": q} for p, q in bids], "checksum": crc,
                "timestamp": "2026-12-07T00:00:00.000000Z"}

    snapshot = {"channel": "book", "type": "snapshot",
                "data": [item(s, a, b, book_checksum(a, b)) for s, (a, b) in books.items()]}
    a_first = ([("10.0", "1.0"), ("11.0", "3.0")], [("9.0", "1.0")])
    b_after = ([("20.0", "2.0")], [("19.0", "2.0"), ("18.0", "5.0")])
    a_after = ([("10.0", "1.0"), ("11.0", "3.0")], [("9.0", "1.0"), ("8.0", "4.0")])
    update = {"channel": "book", "type": "update", "data": [
        item("A/USD", [("11.0", "3.0")], [], book_checksum(*a_first)),
        item("B/USD", [], [("18.0", "5.0")], book_checksum(*b_after)),
        item("A/USD", [], [("8.0", "4.0")], book_checksum(*a_after))]}
    frames = [json.dumps(m, separators=(",", ":")) for m in (snapshot, update)]
    keeper, rows, mismatches = _replay(v2, frames, book_depths={"A/USD": 10, "B/USD": 10})
    assert mismatches == [] and keeper.verified == 5  # two snapshots, three items
    assert all(r[-1] is True for r in rows)
    assert keeper.books["A/USD"].top(10) == (a_after[0], a_after[1])
    assert keeper.books["B/USD"].top(10) == (b_after[0], b_after[1])


@pytest.mark.parametrize("with_text", [True, False])
def test_a_side_stays_exact_and_its_price_memory_bounded(monkeypatch, with_text):
    """A side holds what a book rebuilt from scratch holds, after each of 20,000 random
    updates on a walking price cut to 10 levels, with the same price sent in two spellings:
    the side with a checksum text (Kraken's) remembering prices in a memory small enough
    to be forgotten many times over, and the plain side (KuCoin's)."""
    import random

    from recorder.capture import book as book_module
    from recorder.exchanges.kraken.checksum import digits

    monkeypatch.setattr(book_module, "_PRICES_REMEMBERED", 40)
    # bids: best (highest) first
    side = book_module._TextSide(-1.0, digits, digits) if with_text else book_module._Side(-1.0)
    rng = random.Random(7)
    reference: dict[float, tuple[str, str]] = {}
    mid, clears, largest = 50_000, 0, 0
    for _ in range(20_000):
        mid += rng.choice((-1, 0, 1))
        tick = mid - rng.randrange(0, 30)
        price = f"{tick / 10:.1f}" if rng.random() < 0.5 else f"{tick / 10:.2f}"
        qty = "0.00000000" if rng.random() < 0.3 else f"{rng.randrange(1, 10**6) / 10**6:.8f}"
        before = len(side.prices) if with_text else 0
        side.apply(price, qty)
        side.truncate(10)
        if with_text:
            clears += len(side.prices) < before
            largest = max(largest, len(side.prices))
        if float(qty) == 0:
            reference.pop(float(price), None)
        else:
            reference[float(price)] = (price, qty)
        best = sorted(reference, reverse=True)
        for k in best[10:]:  # the subscribed depth, as the keeper cuts it
            del reference[k]
        best = best[:10]
        assert side.top(len(best)) == side.ordered() == [reference[k] for k in best]
        if with_text:
            assert side.top_text() == "".join(level_text(*reference[k]) for k in best).encode()
    assert not with_text or (clears > 10 and largest <= 40)


def test_the_rules_crc32_is_zlibs():
    """The keeper's CRC32 (ISA-L's when installed) gives zlib's values, chained the way the
    rule chains the asks' text into the bids'."""
    import random
    import zlib

    from recorder.exchanges.kraken import book_rule

    rng = random.Random(3)
    for n in (0, 1, 7, 64, 150, 1000):
        asks, bids = rng.randbytes(n), rng.randbytes(rng.randrange(0, 300))
        seed = book_rule.crc32(asks)
        assert seed == zlib.crc32(asks)
        assert book_rule.crc32(bids, seed) == zlib.crc32(asks + bids)
