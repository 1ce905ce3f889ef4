"""Connection behaviour, acknowledgements and every error reply, in both API versions."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal

import pytest
import websocket

from recorder.simulator.testing import SimulatorProcess
from tests.simulator_helpers import Client, ClientBook, v1_book_message, v2_book_message

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
PRIV_ON_PUB = "Private data and trading are unavailable on this endpoint. Try ws-auth.kraken.com"
PUB_ON_PRIV = "Public market data subscriptions are unavailable on this endpoint. Try ws.kraken.com"


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "11", "--rate", "50"]) as s:
        yield s


def control(c: Client):
    """Next message that is not market data (acks, errors, pongs)."""
    return c.recv_until(lambda m: isinstance(m, dict) and m.get("channel") not in (
        "book", "trade", "ticker", "ohlc", "heartbeat") and m.get("event") != "heartbeat")


def test_greetings(sim):
    with Client(sim.urls["ws_v1"]) as c:
        raw = c.ws.recv()
        assert re.fullmatch(r'\{"connectionID":\d+,"event":"systemStatus","status":"online",'
                            r'"version":"1\.\d+\.\d+"\}', raw)
    with Client(sim.urls["ws_v2"]) as c:
        msg = c.recv()
        assert msg["channel"] == "status" and msg["type"] == "update"
        d = msg["data"][0]
        assert d["system"] == "online" and d["api_version"] == "v2"
        assert isinstance(d["connection_id"], int)


def test_ping_pong(sim):
    with Client(sim.urls["ws_v1"]) as c:
        c.recv()
        c.send({"event": "ping", "reqid": 42})
        assert c.ws.recv() == '{"event":"pong","reqid":42}'
        c.send({"event": "ping"})
        assert c.ws.recv() == '{"event":"pong"}'
    with Client(sim.urls["ws_v2"]) as c:
        c.recv()
        c.send({"method": "ping", "req_id": 101})
        msg = c.recv()
        assert list(msg) == ["method", "req_id", "time_in", "time_out"]
        assert msg["method"] == "pong" and msg["req_id"] == 101
        assert ISO.match(msg["time_in"]) and ISO.match(msg["time_out"])


def test_v1_acks_per_pair_and_unsubscribe(sim):
    with Client(sim.urls["ws_v1"]) as c:
        c.recv()
        c.send({"event": "subscribe", "pair": ["XBT/USD", "ETH/USD"], "reqid": 9,
                "subscription": {"name": "book", "depth": 25}})
        acks = [control(c), control(c)]
        assert [a["pair"] for a in acks] == ["XBT/USD", "ETH/USD"]
        a = acks[0]
        assert list(a) == ["channelID", "channelName", "event", "pair", "reqid", "status",
                           "subscription"]
        assert a["channelName"] == "book-25" and a["status"] == "subscribed"
        assert a["subscription"] == {"depth": 25, "name": "book"} and a["reqid"] == 9
        assert acks[0]["channelID"] != acks[1]["channelID"]
        for name, sub in (("ohlc-5", {"name": "ohlc", "interval": 5}),
                          ("spread", {"name": "spread"}), ("ticker", {"name": "ticker"}),
                          ("trade", {"name": "trade"})):
            c.send({"event": "subscribe", "pair": ["XBT/USD"], "subscription": sub})
            ack = control(c)
            assert ack["channelName"] == name and ack["status"] == "subscribed"
            assert "reqid" not in ack
        c.send({"event": "unsubscribe", "pair": ["XBT/USD"], "reqid": 3,
                "subscription": {"name": "book", "depth": 25}})
        ack = control(c)
        assert ack["status"] == "unsubscribed" and ack["channelID"] == acks[0]["channelID"]
        assert ack["reqid"] == 3


def test_v1_channel_shapes(sim):
    with Client(sim.urls["ws_v1"]) as c:
        c.recv()
        for sub in ({"name": "trade"}, {"name": "spread"}, {"name": "ticker"},
                    {"name": "ohlc", "interval": 1}):
            c.send({"event": "subscribe", "pair": ["XBT/USD"], "subscription": sub})
        seen: dict[str, list] = {}
        deadline = time.monotonic() + 10
        while len(seen) < 4 and time.monotonic() < deadline:
            m = c.recv()
            if isinstance(m, list):
                seen.setdefault(m[-2], m)
        trade = seen["trade"][1][0]
        assert len(trade) == 6 and trade[3] in "bs" and trade[4] in "lm"
        assert len(seen["spread"][1]) == 5
        assert set(seen["ticker"][1]) == set("abcvptlho")
        assert isinstance(seen["ticker"][1]["t"][0], int)
        ohlc = seen["ohlc-1"][1]
        assert len(ohlc) == 9 and isinstance(ohlc[8], int)
        # Prices as real v1 frames write XBT/USD's (python-kraken-sdk 2023: "27119.90000"):
        # 5 decimals, not AssetPairs' pair_decimals 1; quantities with lot_decimals 8.
        prices = [trade[0], *seen["spread"][1][:2], seen["ticker"][1]["a"][0],
                  seen["ticker"][1]["c"][0], *ohlc[2:7]]
        assert all(re.fullmatch(r"\d+\.\d0000", p) for p in prices), prices
        assert re.fullmatch(r"\d+\.\d{8}", trade[1])


def test_v2_acks_and_channels(sim):
    with Client(sim.urls["ws_v2"]) as c:
        c.recv()
        c.send({"method": "subscribe", "req_id": 5,
                "params": {"channel": "book", "symbol": ["BTC/USD", "ETH/USD"], "depth": 10}})
        acks = [control(c), control(c)]
        assert [a["result"]["symbol"] for a in acks] == ["BTC/USD", "ETH/USD"]
        a = acks[0]
        assert list(a) == ["method", "req_id", "result", "success", "time_in", "time_out"]
        assert a["result"] == {"channel": "book", "depth": 10, "snapshot": True,
                               "symbol": "BTC/USD"}
        c.send({"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"],
                                                  "event_trigger": "bbo"}})
        ack = control(c)
        assert ack["result"]["event_trigger"] == "bbo" and "req_id" not in ack
        c.send({"method": "subscribe", "params": {"channel": "trade", "symbol": ["ETH/USD"]}})
        assert control(c)["result"] == {"channel": "trade", "snapshot": False,
                                        "symbol": "ETH/USD"}
        c.send({"method": "subscribe", "params": {"channel": "ohlc", "symbol": ["ETH/USD"],
                                                  "interval": 15}})
        assert control(c)["result"]["interval"] == 15
        kinds = set()
        deadline = time.monotonic() + 10
        while len(kinds) < 4 and time.monotonic() < deadline:
            m = c.recv()
            if m.get("channel") in ("book", "ticker", "trade", "ohlc"):
                kinds.add(m["channel"])
                if m["channel"] == "trade":
                    assert isinstance(m["data"][0]["trade_id"], int)
        assert kinds == {"book", "ticker", "trade", "ohlc"}
        c.send({"method": "unsubscribe", "req_id": 8,
                "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 10}})
        ack = control(c)
        assert ack["method"] == "unsubscribe" and ack["success"] is True
        assert ack["result"] == {"channel": "book", "depth": 10, "symbol": "BTC/USD"}


def v1_error(c: Client, request: dict) -> dict:
    c.send(request)
    msg = control(c)
    assert msg["status"] == "error" or msg["event"] == "error", msg
    return msg


@pytest.mark.parametrize("request_, message, pair", [
    ({"pair": ["XBT/USD"], "subscription": {"name": "book", "depth": 42}},
     "Subscription depth not supported", "XBT/USD"),
    ({"pair": ["XBT/USD"], "subscription": {"name": "ohlc", "interval": 7}},
     "Subscription ohlc interval not supported", "XBT/USD"),
    ({"pair": ["FOO/USD"], "subscription": {"name": "trade"}},
     "Currency pair not supported FOO/USD", "FOO/USD"),
    ({"pair": ["XBTUSD"], "subscription": {"name": "trade"}},
     "Currency pair not in ISO 4217-A3 format XBTUSD", "XBTUSD"),
    ({"pair": "XBT/USD", "subscription": {"name": "trade"}}, "Pair field must be an array", None),
    ({"pair": ["XBT/USD"], "subscription": {"name": "nope"}}, "Subscription name invalid", None),
    ({"subscription": {"name": "ownTrades", "token": "abc"}}, PRIV_ON_PUB, None),
])
def test_v1_subscribe_errors(sim, request_, message, pair):
    with Client(sim.urls["ws_v1"]) as c:
        c.recv()
        msg = v1_error(c, {"event": "subscribe", "reqid": 77, **request_})
        assert msg["errorMessage"] == message
        assert msg["event"] == "subscriptionStatus" and msg["reqid"] == 77
        assert msg.get("pair") == pair
        assert msg["subscription"] == request_["subscription"]


def test_v1_state_errors(sim):
    with Client(sim.urls["ws_v1"]) as c:
        c.recv()
        sub = {"event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "book"}}
        c.send(sub)
        assert control(c)["status"] == "subscribed"
        assert v1_error(c, sub)["errorMessage"] == "Already subscribed"
        other_depth = {**sub, "subscription": {"name": "book", "depth": 100}}
        assert v1_error(c, other_depth)["errorMessage"] == "Already subscribed"
        msg = v1_error(c, {"event": "unsubscribe", "pair": ["ETH/USD"],
                           "subscription": {"name": "trade"}})
        assert msg["errorMessage"] == "Subscription Not Found" and msg["pair"] == "ETH/USD"
        c.ws.send("{not json")
        assert control(c) == {"errorMessage": "Malformed request", "event": "error"}
        assert v1_error(c, {"event": "subscribe", "pair": ["XBT/USD"]})["errorMessage"] == (
            "Subscription field must be an object")
    with Client(sim.urls["ws_auth_v1"]) as c:
        c.recv()
        msg = v1_error(c, {"event": "subscribe", "pair": ["XBT/USD"],
                           "subscription": {"name": "trade"}})
        assert msg["errorMessage"] == PUB_ON_PRIV
        msg = v1_error(c, {"event": "subscribe", "reqid": 1,
                           "subscription": {"name": "ownTrades", "token": "bogus"}})
        assert msg == {"errorMessage": "ESession:Invalid session", "event": "subscriptionStatus",
                       "reqid": 1, "status": "error",
                       "subscription": {"name": "ownTrades", "token": "bogus"}}


def v2_error(c: Client, request: dict) -> dict:
    c.send(request)
    msg = control(c)
    assert msg["success"] is False, msg
    assert ISO.match(msg["time_in"]) and ISO.match(msg["time_out"])
    return msg


@pytest.mark.parametrize("params, message, symbol", [
    ({"channel": "book", "symbol": ["BTC/USD"], "depth": 27},
     "Subscription depth not supported", None),
    ({"channel": "ohlc", "symbol": ["BTC/USD"], "interval": 2},
     "Subscription interval not supported", None),
    ({"channel": "trade", "symbol": ["XBT/USD"]}, "Currency pair not supported XBT/USD", "XBT/USD"),
    ({"channel": "trade", "symbol": ["WWW/USD"]}, "Currency pair not supported WWW/USD", "WWW/USD"),
    ({"channel": "executions", "token": "x"}, PRIV_ON_PUB, None),
])
def test_v2_subscribe_errors(sim, params, message, symbol):
    with Client(sim.urls["ws_v2"]) as c:
        c.recv()
        msg = v2_error(c, {"method": "subscribe", "req_id": 4, "params": params})
        assert msg["error"] == message and msg["method"] == "subscribe" and msg["req_id"] == 4
        assert msg.get("symbol") == symbol


def test_v2_state_errors(sim):
    with Client(sim.urls["ws_v2"]) as c:
        c.recv()
        req = {"method": "subscribe", "req_id": 2,
               "params": {"channel": "trade", "symbol": ["BTC/USD"]}}
        c.send(req)
        assert control(c)["success"] is True
        msg = v2_error(c, req)
        assert msg["error"] == "Already subscribed" and msg["symbol"] == "BTC/USD"
        msg = v2_error(c, {"method": "unsubscribe", "req_id": 3,
                           "params": {"channel": "ticker", "symbol": ["BTC/USD"]}})
        assert msg["error"] == "Subscription Not Found" and msg["req_id"] == 3
        c.ws.send("[1,2")
        assert control(c)["error"] == "Malformed request"
        assert v2_error(c, {"method": "subscribe", "params": {"symbol": ["BTC/USD"]}})[
            "error"] == "Malformed request"
        assert v2_error(c, {"method": "frobnicate"})["error"] == "Unsupported event"
    with Client(sim.urls["ws_auth_v2"]) as c:
        c.recv()
        msg = v2_error(c, {"method": "subscribe",
                           "params": {"channel": "book", "symbol": ["BTC/USD"]}})
        assert msg["error"] == PUB_ON_PRIV
        msg = v2_error(c, {"method": "subscribe", "req_id": 42,
                           "params": {"channel": "executions", "token": "bogus"}})
        assert msg["error"] == "ESession:Invalid session" and msg["channel"] == "executions"
        assert msg["status"] == "error" and msg["req_id"] == 42


def test_heartbeats_only_with_a_subscription():
    with SimulatorProcess(["--rate", "0.01", "--seed", "1"]) as s:
        cases = (
            (s.urls["ws_v1"], {"event": "subscribe", "pair": ["XBT/USD"],
                               "subscription": {"name": "trade"}}, {"event": "heartbeat"}),
            (s.urls["ws_v2"], {"method": "subscribe",
                               "params": {"channel": "trade", "symbol": ["BTC/USD"]}},
             {"channel": "heartbeat"}),
        )
        clients = [Client(url, timeout=1.3) for url, _, _ in cases]
        for c in clients:
            c.recv()
        with pytest.raises(websocket.WebSocketTimeoutException):
            clients[0].recv()  # nothing subscribed: no heartbeat
        clients[1].ws.settimeout(0.05)
        with pytest.raises(websocket.WebSocketTimeoutException):
            clients[1].recv()
        for c, (_, sub, _) in zip(clients, cases, strict=True):
            c.ws.settimeout(3)
            c.send(sub)
            c.recv()  # ack
        t0 = time.monotonic()
        for c, (_, _, beat) in zip(clients, cases, strict=True):
            assert [c.recv(), c.recv()] == [beat, beat]
        assert 1.5 < time.monotonic() - t0 < 3.0  # about one a second
        for c in clients:
            c.close()


def test_unknown_path_is_refused(sim):
    base = sim.urls["ws_v1"].rsplit("/", 1)[0]
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(base + "/nope", timeout=2)
    assert json.loads(json.dumps(sim.urls)) == sim.urls


def test_v1_book_update_shape():
    """"c" sits in the last object only; a message that changes both sides has two objects."""
    with SimulatorProcess(["--seed", "8", "--rate", "3000"]) as s, Client(s.urls["ws_v1"]) as c:
        c.recv()
        c.send({"event": "subscribe", "pair": ["XBT/USD"],
                "subscription": {"name": "book", "depth": 25}})
        books = {"XBT/USD": ClientBook(25)}
        two = one = 0
        while two < 20 or one < 200:
            m = c.recv()
            if not isinstance(m, list):
                continue
            if "as" in m[1]:
                assert v1_book_message(books, m) is None
                continue
            parts = m[1:-2]
            assert isinstance(m[0], int) and m[-2:] == ["book-25", "XBT/USD"]
            assert "c" in parts[-1] and all("c" not in p for p in parts[:-1])
            if len(parts) == 2:
                assert set(parts[0]) == {"a"} and set(parts[1]) == {"b", "c"}
                two += 1
            else:
                (side,) = set(parts[0]) - {"c"}
                assert side in ("a", "b")
                one += 1
            assert v1_book_message(books, m)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("depth", [10, 25, 100, 500, 1000])
def test_book_snapshot_has_depth_levels_per_side(sim, version, depth):
    with Client(sim.urls[f"ws_v{version}"]) as c:
        c.recv()
        if version == 1:
            c.send({"event": "subscribe", "pair": ["ETH/USD"],
                    "subscription": {"name": "book", "depth": depth}})
            snap = c.recv_until(lambda m: isinstance(m, list))
            assert len(snap[1]["as"]) == len(snap[1]["bs"]) == depth
            assert snap[-2:] == [f"book-{depth}", "ETH/USD"] and "c" not in snap[1]
            books = {"ETH/USD": ClientBook(depth)}
            assert v1_book_message(books, snap) is None
        else:
            c.send({"method": "subscribe", "params": {"channel": "book", "depth": depth,
                                                      "symbol": ["ETH/USD"]}})
            snap = c.recv_until(lambda m: m.get("channel") == "book")
            d = snap["data"][0]
            assert snap["type"] == "snapshot"
            assert len(d["bids"]) == len(d["asks"]) == depth
            books = {"ETH/USD": ClientBook(depth)}
            assert v2_book_message(books, snap)  # the snapshot's checksum verifies too
        asks = [Decimal(lv[0] if version == 1 else lv["price"])
                for lv in (snap[1]["as"] if version == 1 else d["asks"])]
        assert asks == sorted(asks) and len(set(asks)) == depth


def test_v2_ticker_bbo_updates_follow_the_book():
    """event_trigger "bbo": an update whenever the best bid or ask changes, matching the book."""
    with SimulatorProcess(["--seed", "12", "--rate", "2000"]) as s, \
            Client(s.urls["ws_v2"]) as c:
        c.recv()
        c.send({"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"]}})
        c.send({"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"],
                                                  "event_trigger": "bbo"}})
        books = {"BTC/USD": ClientBook(10)}
        updates = 0
        best = None
        while updates < 50:
            m = c.recv()
            if m.get("channel") == "book":
                assert v2_book_message(books, m)
                asks, bids = books["BTC/USD"].top()
                now = (bids[0], asks[0])
                changed = best is not None and now != best
                best = now
                if changed:
                    t = c.recv()  # the ticker follows the book update that moved the top
                    assert t["channel"] == "ticker" and t["type"] == "update", t
                    d = t["data"][0]
                    assert (d["bid"], d["bid_qty"], d["ask"], d["ask_qty"]) == (
                        bids[0][0], bids[0][1], asks[0][0], asks[0][1])
                    updates += 1
            elif m.get("channel") == "ticker":
                assert m["type"] == "snapshot" and updates == 0


def test_ohlc_interval_defaults_to_one_minute(sim):
    with Client(sim.urls["ws_v2"]) as c:
        c.recv()
        c.send({"method": "subscribe", "params": {"channel": "ohlc", "symbol": ["BTC/USD"]}})
        ack = control(c)
        assert ack["success"] is True and ack["result"]["interval"] == 1
        snap = c.recv_until(lambda m: m.get("channel") == "ohlc")
        assert snap["data"][0]["interval"] == 1
    with Client(sim.urls["ws_v1"]) as c:
        c.recv()
        c.send({"event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "ohlc"}})
        ack = control(c)
        assert ack["channelName"] == "ohlc-1" and ack["subscription"] == {"interval": 1,
                                                                         "name": "ohlc"}


def test_a_client_that_vanishes_is_not_written_to():
    """A busy feed to a client that closed its socket: the simulator stops writing at once
    (asyncio would log a warning for every frame written after the peer went away)."""

    with SimulatorProcess(["--seed", "3", "--rate", "20000"], capture_stderr=True) as sim:
        for _ in range(2):
            ws = websocket.create_connection(sim.urls["ws_v2"])
            for channel, extra in (("book", {"depth": 10}), ("trade", {})):
                ws.send(json.dumps({"method": "subscribe", "params": {
                    "channel": channel, "symbol": ["BTC/USD", "ETH/USD"], **extra}}))
            for _ in range(200):
                ws.recv()
            ws.sock.close()  # no close frame
            time.sleep(1.0)
        noise = [ln for ln in sim.stderr_lines
                 if "WARNING" in ln or "ERROR" in ln or "Traceback" in ln]
    assert noise == []
