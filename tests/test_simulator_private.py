"""Private feeds driven by demo-account fills: sequences, snapshots, stable ids."""

from __future__ import annotations

import json

import pytest

from recorder.simulator.testing import SimulatorProcess
from tests.simulator_helpers import Client, token


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "9", "--rate", "400", "--fill-rate", "1"]) as s:
        yield s


def test_v1_own_trades_and_open_orders(sim):
    with Client(sim.urls["ws_auth_v1"]) as c:
        c.recv()
        tok = token(sim)
        for name in ("ownTrades", "openOrders"):
            c.send({"event": "subscribe", "reqid": 1, "subscription": {"name": name, "token": tok}})
        seqs: dict[str, list[int]] = {"ownTrades": [], "openOrders": []}
        acks = []
        txids = []
        while len(seqs["ownTrades"]) < 4:
            m = c.recv()
            if isinstance(m, dict):
                if m.get("event") == "subscriptionStatus":
                    acks.append(m)
                continue
            body, name, seq = m
            assert set(seq) == {"sequence"}
            seqs[name].append(seq["sequence"])
            if name == "ownTrades" and seq["sequence"] > 1:
                (entry,) = body
                (txid, fill), = entry.items()
                txids.append(txid)
                assert fill["type"] in ("buy", "sell") and fill["pair"] in ("XBT/USD", "ETH/USD")
                assert fill["ordertxid"].startswith("O") and txid.startswith("T")
        assert [a["channelName"] for a in acks] == ["ownTrades", "openOrders"]
        assert acks[0] == {"channelName": "ownTrades", "event": "subscriptionStatus", "reqid": 1,
                           "status": "subscribed", "subscription": {"name": "ownTrades"}}
        for name, got in seqs.items():
            assert got == list(range(1, len(got) + 1)), (name, got)
    # A new connection: the snapshot repeats the same trade ids, so they can be deduplicated.
    with Client(sim.urls["ws_auth_v1"]) as c:
        c.recv()
        c.send({"event": "subscribe", "subscription": {"name": "ownTrades", "token": token(sim)}})
        snap = c.recv_until(lambda m: isinstance(m, list))
        assert snap[2] == {"sequence": 1}
        snap_ids = [next(iter(e)) for e in snap[0]]
        assert set(txids) <= set(snap_ids) and len(snap_ids) <= 50


def test_v2_executions_and_balances(sim):
    with Client(sim.urls["ws_auth_v2"]) as c:
        c.recv()
        tok = token(sim)
        c.send({"method": "subscribe", "req_id": 3,
                "params": {"channel": "executions", "token": tok, "snap_trades": True}})
        c.send({"method": "subscribe", "params": {"channel": "balances", "token": tok}})
        seqs: dict[str, list[int]] = {"executions": [], "balances": []}
        trade_ids = []
        while len(seqs["balances"]) < 3:
            m = c.recv()
            if m.get("channel") in seqs:
                seqs[m["channel"]].append(m["sequence"])
                for d in m["data"]:
                    if d.get("exec_type") == "trade":
                        trade_ids.append((d["exec_id"], d["trade_id"]))
                        assert isinstance(d["trade_id"], int)
                        assert len(d["last_qty"].split(".")[1]) == 8
            elif "success" in m:
                assert m["success"] is True
        for name, got in seqs.items():
            assert got == list(range(1, len(got) + 1)), (name, got)
    with Client(sim.urls["ws_auth_v2"]) as c:
        c.recv()
        c.send({"method": "subscribe",
                "params": {"channel": "executions", "token": token(sim), "snap_trades": True}})
        snap = c.recv_until(lambda m: m.get("channel") == "executions")
        assert snap["type"] == "snapshot" and snap["sequence"] == 1
        snap_ids = {(d["exec_id"], d["trade_id"]) for d in snap["data"] if "exec_id" in d}
        assert set(trade_ids) & snap_ids


def test_invalidate_with_kick_drops_private_connection(sim):
    import websocket

    c = Client(sim.urls["ws_auth_v2"])
    c.recv()
    c.send({"method": "subscribe", "params": {"channel": "balances", "token": token(sim)}})
    c.recv_until(lambda m: m.get("channel") == "balances")
    sim.control.invalidate_tokens(kick=True)
    msg = c.recv_until(lambda m: m.get("error") is not None)
    assert msg["error"] == "ESession:Invalid session"
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        for _ in range(100):
            json.dumps(c.recv())
