"""The book checksums the simulator emits verify with an independent, wire-text implementation.

At least 10,000 distinct updates each at depths 10 and 1000 in both API versions (--speed max,
which loops the market: the reading goes on into the next lap, which proves the loop keeps the
book coherent, but only distinct frames count), plus the real-time path.
"""

from __future__ import annotations

import json
import zlib

import pytest

from recorder.simulator.kraken.checksum import book_checksum
from recorder.simulator.testing import SimulatorProcess
from tests.simulator_helpers import (
    DATA,
    Client,
    ClientBook,
    loads_exact,
    v1_book_message,
    v2_book_message,
)

UPDATES = 10_000
# Reading stops here if a lap held fewer than UPDATES distinct updates (the test then fails).
MAX_FRAMES = 60_000


@pytest.fixture(scope="module")
def fast_sim():
    with SimulatorProcess(["--speed", "max", "--seed", "7"]) as sim:
        yield sim


def test_worked_examples_from_kraken_docs():
    vec = json.loads((DATA / "test-vectors.json").read_text())
    v1 = vec["ws_v1_book_checksum"]

    def ticks(levels):
        return [(int(p.replace(".", "")), int(q.replace(".", ""))) for p, q, *_ in levels]

    assert book_checksum(ticks(v1["asks_low_to_high"]), ticks(v1["bids_high_to_low"])) == (
        v1["expected_checksum"]
    )
    v2 = vec["ws_v2_book_checksum"]
    assert book_checksum(ticks(v2["asks_low_to_high"]), ticks(v2["bids_high_to_low"])) == (
        v2["expected_checksum"]
    )
    assert zlib.crc32(v2["crc_input_string"].encode()) == v2["expected_checksum"]


@pytest.mark.parametrize("depth", [10, 1000])
def test_v1_checksums(fast_sim, depth):
    books = {"XBT/USD": ClientBook(depth), "ETH/USD": ClientBook(depth)}
    snapshots = republished = 0
    with Client(fast_sim.urls["ws_v1"]) as c:
        c.send({"event": "subscribe", "pair": ["XBT/USD", "ETH/USD"],
                "subscription": {"name": "book", "depth": depth}})
        distinct: set[str] = set()
        frames = repeats = 0
        while (len(distinct) < UPDATES or repeats < 2000) and frames < MAX_FRAMES:
            raw = c.ws.recv()
            msg = loads_exact(raw)
            if isinstance(msg, list):
                frames += 1
                assert msg[-2] == f"book-{depth}"
                ok = v1_book_message(books, msg)
                if ok is not None:
                    repeats += raw in distinct
                    distinct.add(raw)
                if ok is None:
                    snapshots += 1
                    assert books[msg[-1]].size("a") == depth
                    assert all("c" not in part for part in msg[1:-2])
                else:
                    assert ok, msg
                    republished += any(len(lv) == 4 for part in msg[1:-2]
                                       for side in ("a", "b") for lv in part.get(side, []))
    assert len(distinct) >= UPDATES, f"only {len(distinct)} distinct updates"
    assert repeats >= 2000  # and on into the next lap, whose checksums verify too
    assert snapshots == 2
    assert republished > 0  # levels entering the window are flagged "r"
    assert all(b.failed == 0 for b in books.values())


@pytest.mark.parametrize("depth", [10, 1000])
def test_v2_checksums(fast_sim, depth):
    books = {"BTC/USD": ClientBook(depth), "ETH/USD": ClientBook(depth)}
    with Client(fast_sim.urls["ws_v2"]) as c:
        c.send({"method": "subscribe", "params": {"channel": "book", "depth": depth,
                                                  "symbol": ["BTC/USD", "ETH/USD"]}})
        distinct: set[str] = set()
        frames = snapshots = repeats = 0
        while (len(distinct) < UPDATES or repeats < 2000) and frames < MAX_FRAMES:
            raw = c.ws.recv()
            msg = loads_exact(raw)
            if isinstance(msg, dict) and msg.get("channel") == "book":
                frames += 1
                assert v2_book_message(books, msg), msg
                if msg["type"] == "snapshot":
                    snapshots += 1
                    d = msg["data"][0]
                    assert len(d["bids"]) == len(d["asks"]) == depth
                else:
                    repeats += raw in distinct
                    distinct.add(raw)
    assert len(distinct) >= UPDATES, f"only {len(distinct)} distinct updates"
    assert repeats >= 2000
    assert snapshots == 2
    assert all(b.failed == 0 for b in books.values())


def test_realtime_feed_checksums_and_precision():
    with SimulatorProcess(["--seed", "3", "--rate", "4000", "--pairs", "BTC/USD,DOGE/USD"]) as sim:
        v1 = {"XBT/USD": ClientBook(25), "XDG/USD": ClientBook(25)}
        v2 = {"BTC/USD": ClientBook(100), "DOGE/USD": ClientBook(100)}
        with Client(sim.urls["ws_v1"]) as c1, Client(sim.urls["ws_v2"]) as c2:
            c1.send({"event": "subscribe", "pair": list(v1),
                     "subscription": {"name": "book", "depth": 25}})
            c2.send({"method": "subscribe", "params": {"channel": "book", "depth": 100,
                                                       "symbol": list(v2)}})
            while sum(b.checked for b in v1.values()) < 1500:
                msg = c1.recv()
                if isinstance(msg, list):
                    assert v1_book_message(v1, msg) is not False, msg
                    if msg[-1] == "XDG/USD":  # 7 price decimals, 8 lot decimals, as strings
                        for part in msg[1:-2]:
                            for lv in part.get("a", part.get("as", [])):
                                assert len(lv[0].split(".")[1]) == 7
                                assert len(lv[1].split(".")[1]) == 8
            while sum(b.checked for b in v2.values()) < 1500:
                raw = c2.ws.recv()
                msg = json.loads(raw, parse_float=str)
                if msg.get("channel") == "book":
                    assert v2_book_message(v2, msg), raw
                    if msg["data"][0]["symbol"] == "BTC/USD":
                        for lv in msg["data"][0]["bids"]:
                            assert len(lv["price"].split(".")[1]) == 1
                            assert len(lv["qty"].split(".")[1]) == 8
