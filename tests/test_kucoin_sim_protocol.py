"""The KuCoin simulator as a client sees it: bullet, connect, welcome, ping, subscribe, every
topic's frames shaped like the real ones in ../shared/data/kucoin/, limits, REST basics and the
private order feed with its fills.

The simulator runs as a real subprocess; the client side is websocket-client and urllib.
"""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from pathlib import Path

import pytest
import websocket

from recorder.simulator.kucoin.client import KucoinClient
from recorder.simulator.testing import SimulatorProcess

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kucoin"
CLOSED = (websocket.WebSocketConnectionClosedException, ConnectionError, OSError)
INCREMENTS = {"BTC-USDT": (1, 8), "ETH-USDT": (2, 7)}  # price, size decimals


def _lines(name: str) -> list[str]:
    return [ln for ln in (DATA / name).read_text().split("\n") if ln.strip()]


PUBLIC = _lines("ws-public.ndjson")
PRIVATE = _lines("ws-private.ndjson")


def ref(line_no: int, lines: list[str] = PUBLIC) -> dict:
    """A real frame (1-based line number, as in index.tsv), numbers parsed exactly."""
    return json.loads(lines[line_no - 1], parse_float=Decimal)


def kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | Decimal):
        return "number"
    return {str: "string", list: "list", dict: "object", type(None): "null"}[type(value)]


def assert_shape(ours: object, real: object, where: str = "") -> None:
    """Same keys (same order for objects of ``data``), same JSON types, all the way down;
    list elements are compared with the real list's first element."""
    assert kind(ours) == kind(real), f"{where}: {kind(ours)} != {kind(real)}"
    if isinstance(real, dict):
        assert set(ours) == set(real), f"{where}: keys {sorted(ours)} != {sorted(real)}"
        for k in real:
            assert_shape(ours[k], real[k], f"{where}.{k}")
    elif isinstance(real, list) and real and ours:
        for i, item in enumerate(ours):
            assert_shape(item, real[min(i, len(real) - 1)] if kind(real[0]) != "list"
                         else real[0], f"{where}[{i}]")


def decimal_text(text: str, places: int) -> None:
    """KuCoin's number text: at most the increment's decimals, no trailing zeros."""
    assert re.fullmatch(r"\d+(\.\d*[1-9])?", text), text
    assert len(text.partition(".")[2]) <= places, (text, places)


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "7", "--rate", "500", "--speed", "2", "--fill-rate", "0.3"],
                          exchange="kucoin") as s:
        yield s


@pytest.fixture(scope="module")
def client(sim):
    return KucoinClient(sim.urls["rest"])


def recv_until(ws, pred, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv(), parse_float=Decimal)
        if pred(msg):
            return msg
    raise AssertionError("condition not met in time")


def test_urls_and_bullet_answer(sim, client):
    assert sim.urls["exchange"] == "kucoin"
    assert sim.urls["rest"].startswith("http://127.0.0.1:")
    assert sim.urls["ws"].startswith("ws://127.0.0.1:")
    status, body = client.request("POST", "/api/v1/bullet-public")
    real = json.loads((DATA / "rest.json").read_text())["endpoints"][
        "POST /api/v1/bullet-public"][0]["body"]
    assert status == 200 and body["code"] == "200000"
    assert_shape(body, real, "bullet")
    assert list(body["data"]) == list(real["data"])
    server = body["data"]["instanceServers"][0]
    assert list(server) == list(real["data"]["instanceServers"][0])
    assert server == {"endpoint": sim.urls["ws"], "encrypt": False, "protocol": "websocket",
                      "pingInterval": 18000, "pingTimeout": 10000}
    assert re.fullmatch(r"[A-Za-z0-9_\-]+=\.[A-Za-z0-9_\-]+=*", body["data"]["token"])


def test_welcome_ping_and_reused_token(client):
    bullet = client.bullet()
    ws = websocket.create_connection(client.url(bullet, "my-conn-1"), timeout=5)
    assert ws.recv() == '{"id":"my-conn-1","type":"welcome"}'
    ws.send(json.dumps({"id": 1545910590801, "type": "ping"}))
    assert ws.recv() == '{"id":"1545910590801","type":"pong"}'
    # The same token a second time: KuCoin's reply, then the connection ends.
    again = websocket.create_connection(client.url(bullet, "my-conn-2"), timeout=5)
    assert again.recv() == '{"type":"error","code":401,"data":"token is expired"}'
    with pytest.raises(CLOSED):
        again.recv()
    ws.send(json.dumps({"id": "still-open", "type": "ping"}))
    assert json.loads(ws.recv())["id"] == "still-open"
    ws.close()


TOPICS = {
    "/market/match:BTC-USDT,ETH-USDT": ("trade.l3match", [12, 9]),
    "/market/level2:BTC-USDT,ETH-USDT": ("trade.l2update", [24, 14]),
    "/spotMarket/level2Depth5:BTC-USDT": ("level2", [29]),
    "/spotMarket/level2Depth50:ETH-USDT": ("level2", [30]),
    "/market/ticker:BTC-USDT": ("trade.ticker", [36]),
    "/market/snapshot:BTC-USDT": ("trade.snapshot", [43]),
    "/market/candles:BTC-USDT_1min": ("trade.candles.update", [52, 50]),
}


def test_every_topic_flows_shaped_like_the_real_frames(client):
    ws, _ = client.connect()
    for i, topic in enumerate([*TOPICS, "/market/ticker:all"], 1):
        ws.send(json.dumps({"id": i, "type": "subscribe", "topic": topic,
                            "privateChannel": False, "response": True}))
    acks: set[str] = set()
    first: dict[str, dict] = {}
    deadline = time.monotonic() + 10
    while (len(acks) < len(TOPICS) + 1 or len(first) < len(TOPICS) + 1) and \
            time.monotonic() < deadline:
        text = ws.recv()
        msg = json.loads(text, parse_float=Decimal)
        if msg["type"] == "ack":
            assert text == f'{{"id":"{msg["id"]}","type":"ack"}}'
            acks.add(msg["id"])
            continue
        assert msg["type"] == "message", text
        key = msg["topic"].split(":")[0] + ("/all" if msg["topic"].endswith(":all") else "")
        first.setdefault(key, msg)
    ws.close()
    assert len(acks) == len(TOPICS) + 1
    assert set(first) == {t.split(":")[0] for t in TOPICS} | {"/market/ticker/all"}
    for topic, (subject, lines) in TOPICS.items():
        msg = first[topic.split(":")[0]]
        assert list(msg) == ["topic", "type", "subject", "data"]
        assert msg["subject"] == subject
        for line in lines:
            real = ref(line)
            assert_shape(msg["data"], real["data"], f"{topic} vs line {line}")
    tick_all = first["/market/ticker/all"]
    assert tick_all["subject"] in INCREMENTS
    assert_shape(tick_all["data"], ref(40)["data"], "ticker:all")

    # Number text and time units.
    match = first["/market/match"]["data"]
    pd, sd = INCREMENTS[match["symbol"]]
    decimal_text(match["price"], pd)
    decimal_text(match["size"], sd)
    assert match["tradeId"] == match["sequence"] and match["sequence"].isdigit()
    assert len(match["time"]) == 19  # ns, as a string
    l2 = first["/market/level2"]["data"]
    assert isinstance(l2["sequenceStart"], int) and isinstance(l2["time"], int)
    assert len(str(l2["time"])) == 13  # ms
    pd, sd = INCREMENTS[l2["symbol"]]
    for price, size, seq in l2["changes"]["asks"] + l2["changes"]["bids"]:
        assert l2["sequenceStart"] <= int(seq) <= l2["sequenceEnd"]
        if price != "0":
            decimal_text(price, pd)
            decimal_text(size, sd)
    depth = first["/spotMarket/level2Depth5"]["data"]
    assert len(depth["asks"]) == len(depth["bids"]) == 5
    assert Decimal(depth["asks"][0][0]) > Decimal(depth["bids"][0][0])
    assert len(first["/spotMarket/level2Depth50"]["data"]["asks"]) == 50
    tick = first["/market/ticker"]["data"]
    assert len(str(tick["time"])) == 13 and tick["sequence"].isdigit()
    candle = first["/market/candles"]["data"]
    assert len(str(candle["time"])) == 19 and int(candle["candles"][0]) % 60 == 0
    snap = first["/market/snapshot"]["data"]
    assert snap["data"]["symbol"] == "BTC-USDT" and snap["sequence"].isdigit()


def test_unknown_symbol_is_an_error_and_the_others_still_flow(client):
    ws, _ = client.connect()
    ws.send(json.dumps({"id": "r1", "type": "subscribe",
                        "topic": "/market/level2:XYZ-USDT,BTC-USDT", "response": True}))
    assert json.loads(ws.recv()) == {"id": "r1", "type": "error", "code": 404,
                                     "data": "topic /market/level2:XYZ-USDT is not found"}
    assert json.loads(ws.recv()) == {"id": "r1", "type": "ack"}
    msg = recv_until(ws, lambda m: m.get("type") == "message")
    assert msg["topic"] == "/market/level2:BTC-USDT"
    ws.send(json.dumps({"id": "r2", "type": "subscribe", "topic": "/market/nothing:BTC-USDT",
                        "response": True}))
    err = recv_until(ws, lambda m: m.get("id") == "r2")
    assert err["code"] == 404 and err["data"] == "topic /market/nothing:BTC-USDT is not found"
    # Unsubscribe: an ack, and the topic stops.
    ws.send(json.dumps({"id": "u1", "type": "unsubscribe", "topic": "/market/level2:BTC-USDT",
                        "response": True}))
    recv_until(ws, lambda m: m.get("id") == "u1" and m["type"] == "ack")
    ws.settimeout(0.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        while True:
            assert json.loads(ws.recv()).get("type") != "message"
    ws.close()


def test_subscription_limits(client, sim):
    ws, _ = client.connect()
    topic = "/market/match:" + ",".join(f"S{i}-USDT" for i in range(101))
    ws.send(json.dumps({"id": 5, "type": "subscribe", "topic": topic, "response": True}))
    assert json.loads(ws.recv()) == {
        "id": "5", "type": "error", "code": 509,
        "data": "exceed max subscription count limitation of 100 per time"}
    sim.control.limits(per_session=3)
    try:
        ws.send(json.dumps({"id": 6, "type": "subscribe", "response": True,
                            "topic": "/market/match:BTC-USDT,ETH-USDT"}))
        recv_until(ws, lambda m: m.get("id") == "6" and m["type"] == "ack")
        ws.send(json.dumps({"id": 7, "type": "subscribe", "response": True,
                            "topic": "/market/level2:BTC-USDT,ETH-USDT"}))
        err = recv_until(ws, lambda m: m.get("id") == "7")
        assert err == {"id": "7", "type": "error", "code": 509,
                       "data": "exceed max subscription count limitation of 3 per session"}
    finally:
        sim.control.limits(per_session=300)
    ws.close()


def test_uplink_limit_509_then_closed(client):
    ws, _ = client.connect()
    for i in range(101):
        ws.send(json.dumps({"id": i, "type": "ping"}))
    pongs = 0
    while True:
        op, frame = ws.recv_data_frame(True)
        if op == websocket.ABNF.OPCODE_CLOSE:
            assert int.from_bytes(frame.data[:2], "big") == 1000
            break
        msg = json.loads(frame.data)
        if msg["type"] == "pong":
            pongs += 1
        else:
            assert msg == {"type": "error", "code": 509, "data": "exceed max permits per second"}
    assert pongs == 100


def test_rest_market_data(client, sim):
    status, body = client.get("/api/v2/symbols")
    assert status == 200 and [s["symbol"] for s in body["data"]] == ["BTC-USDT", "ETH-USDT"]
    real = json.loads((DATA / "rest.json").read_text())["endpoints"][
        "GET /api/v2/symbols"][1]["data_items"][0]
    ours = body["data"][0]
    assert list(ours) == list(real)
    assert ours == real  # BTC-USDT: KuCoin's increments and limits as captured
    status, body = client.get("/api/v1/timestamp")
    assert abs(body["data"] - time.time() * 1000) < 5000
    status, body = client.get("/api/v1/market/histories", symbol="BTC-USDT")
    trades = body["data"]
    assert 0 < len(trades) <= 100
    assert [list(t) for t in trades[:1]] == [["sequence", "price", "size", "side", "time"]]
    assert [int(t["sequence"]) for t in trades] == sorted(int(t["sequence"]) for t in trades)
    assert all(len(t["size"].partition(".")[2]) == 8 for t in trades)  # padded, as captured
    status, body = client.get("/api/v1/market/orderbook/level2_20", symbol="BTC-USDT")
    assert list(body["data"]) == ["time", "sequence", "bids", "asks"]
    assert len(body["data"]["bids"]) == len(body["data"]["asks"]) == 20
    status, body = client.get("/api/v1/market/orderbook/level2_100", symbol="NOPE-USDT")
    assert body["code"] == "900001"
    status, body = client.get("/api/v3/market/orderbook/level2", symbol="BTC-USDT")
    assert status == 401 and body["code"] == "400001"
    status, body = client.get("/api/v1/market/candles", symbol="BTC-USDT", type="1min")
    assert body["code"] == "200000" and len(body["data"][0]) == 7
    status, body = client.get("/api/v1/nowhere")
    assert status == 404 and body == {"code": "404000", "msg": "Url Not Found"}


def test_private_orders_and_fills(client, sim):
    ws, _ = client.connect()
    ws.send(json.dumps({"id": 1, "type": "subscribe", "topic": "/spotMarket/tradeOrdersV2",
                        "privateChannel": True, "response": True}))
    err = json.loads(ws.recv())
    assert err["type"] == "error" and err["code"] == 401  # a public token
    ws.close()
    ws, _ = client.connect(private=True)
    ws.send(json.dumps({"id": 2, "type": "subscribe", "topic": "/spotMarket/tradeOrdersV2",
                        "privateChannel": True, "response": True}))
    ws.send(json.dumps({"id": 3, "type": "subscribe", "topic": "/market/match:BTC-USDT,ETH-USDT",
                        "response": True}))
    by_type: dict[str, dict] = {}
    my_matches: dict[str, dict] = {}  # tradeId -> our match push
    public_ids: dict[str, dict] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (
            len(by_type) < 5 or not set(my_matches) & set(public_ids)):
        text = ws.recv()
        msg = json.loads(text)
        if msg.get("topic") == "/spotMarket/tradeOrdersV2":
            assert text.startswith('{"topic":"/spotMarket/tradeOrdersV2","type":"message",'
                                   '"subject":"orderChange","userId":')
            d = msg["data"]
            if d["type"] == "match":
                my_matches[d["tradeId"]] = d
            by_type.setdefault(d["type"], msg)
        elif msg.get("subject") == "trade.l3match":
            public_ids[msg["data"]["tradeId"]] = msg["data"]
    ws.close()
    assert {"received", "open", "match", "filled", "canceled"} <= set(by_type)
    real_received, real_open = ref(8, PRIVATE), ref(9, PRIVATE)
    assert_shape(by_type["open"]["data"], real_open["data"], "open")
    assert list(by_type["open"]["data"]) == list(real_open["data"])
    received = by_type["received"]["data"]
    assert set(received) - {"price"} == set(real_received["data"])
    assert list(by_type["open"]) == list(real_open)
    match = by_type["match"]["data"]
    assert {"matchPrice", "matchSize", "tradeId", "liquidity", "feeType"} <= set(match)
    assert len(str(match["ts"])) == 19 and len(str(match["orderTime"])) == 13
    # A fill is one of the public trades: the same tradeId, price and size, our order named.
    trade_id = next(t for t in my_matches if t in public_ids)
    mine, public = my_matches[trade_id], public_ids[trade_id]
    assert (mine["matchPrice"], mine["matchSize"]) == (public["price"], public["size"])
    assert mine["orderId"] == (public["makerOrderId"] if mine["liquidity"] == "maker"
                               else public["takerOrderId"])
    # The fills endpoints have it too (signed), as a string tradeId and as an integer.
    status, body = client.get("/api/v1/fills", signed=True, symbol=mine["symbol"],
                              pageSize=500)
    assert status == 200 and body["code"] == "200000"
    page = body["data"]
    assert list(page) == ["currentPage", "pageSize", "totalNum", "totalPage", "items"]
    fill = next(f for f in page["items"] if f["tradeId"] == trade_id)
    real_fill = json.loads((DATA / "rest.json").read_text())["endpoints"][
        "GET /api/v1/fills"][0]["body"]
    assert list(fill) == list(real_fill["data"]["items"][0])
    assert (fill["price"], fill["size"], fill["orderId"]) == (
        mine["matchPrice"], mine["matchSize"], mine["orderId"])
    assert Decimal(fill["funds"]) == Decimal(fill["price"]) * Decimal(fill["size"])
    status, body = client.get("/api/v1/hf/fills", signed=True, symbol=mine["symbol"], limit=100)
    items = body["data"]["items"]
    assert body["data"]["lastId"] == items[-1]["id"]
    assert any(f["tradeId"] == int(trade_id) for f in items)
    older = client.get("/api/v1/hf/fills", signed=True, symbol=mine["symbol"],
                       lastId=items[-1]["id"])[1]["data"]["items"]
    assert all(f["id"] < items[-1]["id"] for f in older)
    assert client.get("/api/v1/hf/fills", signed=True)[1]["code"] == "400100"  # symbol needed
