"""Level2 stream and REST snapshots agree: KuCoin's calibration procedure, done here on the
client side from wire text only, rebuilds the simulator's book exactly, in real time and in
--speed max (where the stream loops and every sequence is rewritten each lap)."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from recorder.simulator.kucoin.client import KucoinClient
from recorder.simulator.testing import SimulatorProcess


class Gap(Exception):
    pass


class Level2Book:
    """A client's book: a REST snapshot, then l2updates by the documented procedure."""

    def __init__(self, snapshot: dict) -> None:
        self.seq = int(snapshot["sequence"])
        self.sides = {side: {p: q for p, q in snapshot[side]} for side in ("asks", "bids")}
        self.applied = 0

    def apply(self, data: dict) -> bool:
        start, end = data["sequenceStart"], data["sequenceEnd"]
        if end <= self.seq:
            return False  # the snapshot already has it
        if start > self.seq + 1:
            raise Gap(f"{data['symbol']}: expected {self.seq + 1}, got {start}..{end}")
        for side in ("asks", "bids"):
            for price, size, seq in data["changes"][side]:
                assert start <= int(seq) <= end
                if int(seq) <= self.seq or price == "0":
                    continue  # covered by the snapshot / a sequence-only placeholder
                if Decimal(size) == 0:
                    self.sides[side].pop(price, None)
                else:
                    self.sides[side][price] = size
        self.seq = end
        self.applied += 1
        return True

    def view(self, within: dict | None = None) -> dict:
        """{side: {price: size}}; ``within``: only prices inside an earlier snapshot's range."""
        out = {}
        for side, levels in self.sides.items():
            keep = levels
            if within is not None:
                edge = Decimal(within[side][-1][0])
                keep = {p: q for p, q in levels.items()
                        if (Decimal(p) <= edge if side == "asks" else Decimal(p) >= edge)}
            out[side] = keep
        return out


def _tighter(a: dict, b: dict) -> dict:
    """A range (for ``view``) where both top-N snapshots ``a`` and ``b`` list every level."""
    asks = min((a["asks"][-1], b["asks"][-1]), key=lambda lv: Decimal(lv[0]))
    bids = max((a["bids"][-1], b["bids"][-1]), key=lambda lv: Decimal(lv[0]))
    return {"asks": [asks], "bids": [bids]}


def snapshot_view(snapshot: dict, within: dict | None = None) -> dict:
    book = Level2Book(snapshot)
    return book.view(within)


def read_level2(ws, symbol: str, until, timeout: float = 20.0) -> list[dict]:
    """l2update data of ``symbol`` until ``until(data)`` is true (inclusive)."""
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("subject") != "trade.l2update" or msg["data"]["symbol"] != symbol:
            continue
        out.append(msg["data"])
        if until(msg["data"]):
            return out
    raise AssertionError("the level2 stream did not get there in time")


def subscribe(ws, topic: str) -> None:
    ws.send(json.dumps({"id": "s", "type": "subscribe", "topic": topic, "response": True}))


def sync_and_compare(client: KucoinClient, ws, symbol: str, path: str, signed: bool,
                     window: bool) -> Level2Book:
    # 1. subscribe first and buffer; 2. the snapshot; 3. replay the buffer, then go on live.
    buffered = read_level2(ws, symbol, lambda d: True)
    _, body = client.get(path, signed=signed, symbol=symbol)
    first = body["data"]
    book = Level2Book(first)
    live = read_level2(ws, symbol, lambda d: d["sequenceEnd"] > book.seq)
    overlap = [d for d in buffered + live if d["sequenceEnd"] > book.seq][0]
    assert overlap["sequenceStart"] <= book.seq + 1 <= overlap["sequenceEnd"]
    for d in buffered + live:
        book.apply(d)
    for d in read_level2(ws, symbol, lambda d: d["sequenceEnd"] >= book.seq + 300):
        book.apply(d)
    # 4. a later snapshot S2: the stream reaches exactly S2, and the books are equal there.
    _, body = client.get(path, signed=signed, symbol=symbol)
    later = body["data"]
    target = int(later["sequence"])
    assert target > book.seq - 5000
    for d in read_level2(ws, symbol, lambda d: d["sequenceEnd"] >= target):
        book.apply(d)
    assert book.seq == target, "a snapshot's sequence is where a level2 message ends"
    # A top-100 snapshot knows only its own range: compare where both snapshots reach (the
    # market may move between them, more so on a loaded machine).
    within = _tighter(first, later) if window else None
    assert book.view(within) == snapshot_view(later, within)
    return book


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "11", "--rate", "2000"], exchange="kucoin") as s:
        yield s


def test_full_depth_snapshot_and_stream_agree(sim):
    client = KucoinClient(sim.urls["rest"])
    ws, _ = client.connect()
    subscribe(ws, "/market/level2:BTC-USDT,ETH-USDT")
    book = sync_and_compare(client, ws, "ETH-USDT", "/api/v3/market/orderbook/level2",
                            signed=True, window=False)
    assert book.applied > 100
    assert min(len(book.sides["asks"]), len(book.sides["bids"])) > 250  # the whole book
    ws.close()


def test_public_level2_100_agrees_within_its_range(sim):
    client = KucoinClient(sim.urls["rest"])
    ws, _ = client.connect()
    subscribe(ws, "/market/level2:BTC-USDT")
    sync_and_compare(client, ws, "BTC-USDT", "/api/v1/market/orderbook/level2_100",
                     signed=False, window=True)
    ws.close()


def test_placeholders_and_coalesced_changes_appear(sim):
    """KuCoin's quirks are in the synthetic stream: ["0","0",seq] changes, and messages whose
    range has sequences no change carries (a price's earlier change in the message)."""
    client = KucoinClient(sim.urls["rest"])
    ws, _ = client.connect()
    subscribe(ws, "/market/level2:BTC-USDT,ETH-USDT")
    placeholder = coalesced = False
    deadline = time.monotonic() + 10
    while not (placeholder and coalesced) and time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("subject") != "trade.l2update":
            continue
        d = msg["data"]
        changes = d["changes"]["asks"] + d["changes"]["bids"]
        placeholder |= any(c[0] == "0" and c[1] == "0" for c in changes)
        coalesced |= len(changes) < d["sequenceEnd"] - d["sequenceStart"] + 1
    ws.close()
    assert placeholder and coalesced


def test_max_speed_snapshot_and_looped_stream_agree():
    with SimulatorProcess(["--seed", "3", "--speed", "max"], exchange="kucoin") as sim:
        client = KucoinClient(sim.urls["rest"])
        ws, _ = client.connect(skip_utf8_validation=True)
        subscribe(ws, "/market/level2:BTC-USDT")
        book = sync_and_compare(client, ws, "BTC-USDT", "/api/v3/market/orderbook/level2",
                                signed=True, window=False)
        ws.close()
        assert sim.control.stats()["fast_lap"] >= 1  # the stream looped at least once
        assert book.applied > 1000
