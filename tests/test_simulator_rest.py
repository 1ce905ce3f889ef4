"""REST: API-Sign verification, nonces, Kraken's error strings, tokens and their lifetime,
and the public endpoints."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import pytest

from recorder.exchanges.kraken.signer import api_sign
from recorder.simulator.testing import SimulatorProcess
from tests.simulator_helpers import (
    DATA,
    Client,
    post,
    token,
)


def get(sim, path: str, **query) -> dict:
    url = sim.urls["rest"] + path + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return json.loads(resp.read())






@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "5", "--rate", "400"]) as s:
        yield s


def test_official_api_sign_vector_verifies():
    vec = json.loads((DATA / "test-vectors.json").read_text())["rest_api_sign"]
    assert api_sign(vec["uri_path"], vec["nonce"], vec["encoded_payload"],
                    vec["private_key"]) == vec["expected_api_sign"]
    with SimulatorProcess(["--api-key", "vector-key", "--api-secret", vec["private_key"]]) as s:
        # The signature from Kraken's docs passes; the demo key may not trade, so the
        # answer is the permission error rather than a signature error.
        reply = post(s, vec["uri_path"], vec["encoded_payload"], key="vector-key",
                     sign=vec["expected_api_sign"])
        assert reply == {"error": ["EGeneral:Permission denied"]}
        tampered = vec["encoded_payload"].replace("1.25", "1.26").replace(
            vec["nonce"], str(int(vec["nonce"]) + 1))
        reply = post(s, vec["uri_path"], tampered, key="vector-key",
                     sign=vec["expected_api_sign"])
        assert reply == {"error": ["EAPI:Invalid signature"]}


def test_token_and_auth_errors(sim):
    path = "/0/private/GetWebSocketsToken"
    nonce = time.time_ns() // 1000
    reply = post(sim, path, f"nonce={nonce}")
    assert reply["error"] == [] and set(reply["result"]) == {"token", "expires"}
    assert reply["result"]["expires"] == 900 and len(reply["result"]["token"]) >= 30
    assert post(sim, path, f"nonce={nonce}") == {"error": ["EAPI:Invalid nonce"]}
    assert post(sim, path, f"nonce={nonce - 5}") == {"error": ["EAPI:Invalid nonce"]}
    assert post(sim, path, f"nonce={nonce + 1}", key="other") == {"error": ["EAPI:Invalid key"]}
    assert post(sim, path, f"nonce={nonce + 2}", sign="AAAA") == {
        "error": ["EAPI:Invalid signature"]}
    wrong = "a2V5IG9mIHNvbWVib2R5IGVsc2U="
    assert post(sim, path, f"nonce={nonce + 3}", secret=wrong) == {
        "error": ["EAPI:Invalid signature"]}
    assert post(sim, "/0/private/Balance", f"nonce={nonce + 4}") == {
        "error": ["EGeneral:Permission denied"]}
    assert post(sim, path, f"nonce={nonce + 5}")["error"] == []


def test_token_expires_unless_used():
    with SimulatorProcess(["--token-ttl", "1", "--seed", "2"]) as s:
        used, unused = token(s), token(s)
        with Client(s.urls["ws_auth_v2"]) as c:
            c.recv()
            c.send({"method": "subscribe", "params": {"channel": "balances", "token": used}})
            assert c.recv()["success"] is True
            time.sleep(1.3)
            # Still valid on the connection that subscribed with it...
            c.send({"method": "subscribe", "params": {"channel": "executions", "token": used}})
            assert c.recv_until(lambda m: "success" in m)["success"] is True
        for tok in (used, unused):  # ...but not on a new one after the TTL
            with Client(s.urls["ws_auth_v1"]) as c:
                c.recv()
                c.send({"event": "subscribe", "subscription": {"name": "ownTrades", "token": tok}})
                assert c.recv()["errorMessage"] == "ESession:Invalid session"


def test_invalidate_tokens_fault(sim):
    tok = token(sim)
    assert sim.control.invalidate_tokens()["invalidated"] >= 1
    with Client(sim.urls["ws_auth_v2"]) as c:
        c.recv()
        c.send({"method": "subscribe", "params": {"channel": "executions", "token": tok}})
        assert c.recv()["error"] == "ESession:Invalid session"
        c.send({"method": "subscribe", "params": {"channel": "executions", "token": token(sim)}})
        assert c.recv()["success"] is True


def test_public_endpoints(sim):
    t = get(sim, "/0/public/Time")["result"]
    assert abs(t["unixtime"] - time.time()) < 5 and t["rfc1123"].endswith("+0000")
    assert get(sim, "/0/public/SystemStatus")["result"]["status"] == "online"
    pairs = get(sim, "/0/public/AssetPairs", pair="XBTUSD,ETH/USD")["result"]
    assert pairs["XXBTZUSD"]["wsname"] == "XBT/USD" and pairs["XXBTZUSD"]["pair_decimals"] == 1
    assert pairs["XETHZUSD"]["lot_decimals"] == 8
    assert get(sim, "/0/public/AssetPairs", pair="NOPE") == {"error": ["EQuery:Unknown asset pair"]}
    depth = get(sim, "/0/public/Depth", pair="XBTUSD", count=5)["result"]["XXBTZUSD"]
    assert len(depth["asks"]) == 5 and len(depth["bids"]) == 5
    assert float(depth["asks"][0][0]) > float(depth["bids"][0][0])
    assert isinstance(depth["asks"][0][2], int)
    ohlc = get(sim, "/0/public/OHLC", pair="XBTUSD", interval=5)["result"]
    assert isinstance(ohlc["last"], int) and len(ohlc["XXBTZUSD"][-1]) == 8


def test_trades_cursor(sim):
    time.sleep(0.5)
    first = get(sim, "/0/public/Trades", pair="XBTUSD", count=3)["result"]
    rows = first["XXBTZUSD"]
    assert len(rows) == 3 and len(rows[0]) == 7 and rows[0][3] in "bs"
    ids = [r[6] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == 3
    nxt = get(sim, "/0/public/Trades", pair="XBTUSD", since=first["last"])["result"]
    assert all(r[6] > ids[-1] for r in nxt["XXBTZUSD"])
    assert int(nxt["last"]) >= int(first["last"])
