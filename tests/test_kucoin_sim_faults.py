"""KuCoin simulator faults, from the /_sim/ control API and from CLI flags: each is seen by a
client the way the real failure would be seen."""

from __future__ import annotations

import json
import time

import pytest
import websocket

from recorder.simulator.kucoin.client import KucoinClient
from recorder.simulator.testing import SimulatorProcess

CLOSED = (websocket.WebSocketConnectionClosedException, ConnectionError, OSError)


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "9", "--rate", "1000"], exchange="kucoin") as s:
        yield s


@pytest.fixture()
def client(sim):
    yield KucoinClient(sim.urls["rest"])
    sim.control.clear()


def level2_client(client: KucoinClient, symbols: str = "BTC-USDT"):
    ws, _ = client.connect()
    ws.send(json.dumps({"id": "l2", "type": "subscribe", "topic": f"/market/level2:{symbols}",
                        "response": True}))
    assert json.loads(ws.recv()) == {"id": "l2", "type": "ack"}
    return ws


def closed_how(ws, limit: int = 1_000_000) -> tuple[int, int | None]:
    """Read until the connection ends: (frames read, close code, or None without a frame)."""
    n = 0
    try:
        for _ in range(limit):
            op, frame = ws.recv_data_frame(True)
            if op == websocket.ABNF.OPCODE_CLOSE:
                return n, int.from_bytes(frame.data[:2], "big")
            n += 1
    except CLOSED:
        return n, None
    raise AssertionError("the connection did not end")


@pytest.mark.parametrize("mode,code", [("abort", None), ("close", 4001), ("eof", None)])
def test_drop(sim, client, mode, code):
    ws = level2_client(client)
    sim.control.drop(mode=mode, code=code, after_messages=20)
    n, got = closed_how(ws)
    assert n >= 20 and got == code


def test_stall_holds_everything_then_resumes_without_a_gap(sim, client):
    ws = level2_client(client)
    last = json.loads(ws.recv())["data"]["sequenceEnd"]
    sim.control.stall(1.0)
    ws.send(json.dumps({"id": "during", "type": "ping"}))
    t0 = time.monotonic()
    longest = 0.0
    before = t0
    pong_at = None
    while time.monotonic() - t0 < 1.6:
        msg = json.loads(ws.recv())
        now = time.monotonic()
        longest = max(longest, now - before)
        before = now
        if msg.get("type") == "pong":
            pong_at = now - t0
        elif msg.get("subject") == "trade.l2update":
            assert msg["data"]["sequenceStart"] == last + 1  # held, not lost
            last = msg["data"]["sequenceEnd"]
    ws.close()
    assert longest >= 0.8 and pong_at is not None and pong_at >= 0.8


def test_skip_level2_is_a_sequence_gap(sim, client):
    ws = level2_client(client, "BTC-USDT,ETH-USDT")
    sim.control.skip_level2("BTC-USDT", after_messages=10)
    last = {}
    gaps = []
    deadline = time.monotonic() + 5
    while not gaps and time.monotonic() < deadline:
        d = json.loads(ws.recv())["data"]
        sym = d["symbol"]
        if sym in last and d["sequenceStart"] != last[sym] + 1:
            gaps.append((sym, last[sym], d["sequenceStart"]))
        last[sym] = d["sequenceEnd"]
    ws.close()
    assert [g[0] for g in gaps] == ["BTC-USDT"]
    assert sim.control.stats()["skipped_level2"] >= 1


def test_limit_error_is_509_then_bye(sim, client):
    ws = level2_client(client)
    sim.control.limit_error()
    while True:
        op, frame = ws.recv_data_frame(True)
        if op == websocket.ABNF.OPCODE_CLOSE:
            assert frame.data == (1000).to_bytes(2, "big") + b"Bye"
            break
        msg = json.loads(frame.data)
        if msg.get("type") == "error":
            assert msg == {"type": "error", "code": 509, "data": "exceed max permits per second"}


def test_slow_welcome_and_requests_before_it_are_ignored(sim, client):
    sim.control.slow_welcome(1.0)
    t0 = time.monotonic()
    ws = websocket.create_connection(client.url(client.bullet(), "slow"), timeout=5)
    ws.send(json.dumps({"id": "early", "type": "ping"}))
    assert ws.recv() == '{"id":"slow","type":"welcome"}'
    assert time.monotonic() - t0 >= 0.9
    ws.send(json.dumps({"id": "late", "type": "ping"}))
    assert json.loads(ws.recv()) == {"id": "late", "type": "pong"}  # "early" got nothing
    ws.close()
    ws, _ = client.connect()  # count=1: the next connection is on time again
    ws.close()


def test_rest_errors_on_demand(sim, client):
    sim.control.rest_error("429000", count=2)
    for _ in range(2):
        status, body = client.get("/api/v1/timestamp")
        assert status == 429 and body == {"code": "429000", "msg": "Too Many Requests"}
    assert client.get("/api/v1/timestamp")[0] == 200
    sim.control.rest_error("500000", count=1, path="/api/v1/bullet-public")
    assert client.get("/api/v1/timestamp")[0] == 200
    status, body = client.request("POST", "/api/v1/bullet-public")
    assert status == 500 and body["code"] == "500000"
    assert client.bullet()["token"]


def test_reject_subscribes_and_malformed(sim, client):
    sim.control.reject_subscribes(1)
    ws, _ = client.connect()
    ws.send(json.dumps({"id": 1, "type": "subscribe", "topic": "/market/match:BTC-USDT",
                        "response": True}))
    assert json.loads(ws.recv()) == {"id": "1", "type": "error", "code": 509,
                                     "data": "exceed max permits per second"}
    sim.control.malformed()
    with pytest.raises(ValueError):
        json.loads(ws.recv())
    ws.close()


def test_connection_age_cut_from_the_control_api(sim, client):
    ws = level2_client(client)
    t0 = time.monotonic()
    sim.control.max_connection_age(1.0)
    try:
        n, code = closed_how(ws)
    finally:
        sim.control.max_connection_age(0)
    assert code == 1000 and 0.5 < time.monotonic() - t0 < 3


def test_invalidated_tokens_are_refused(sim, client):
    bullet = client.bullet()
    assert sim.control.invalidate_tokens()["invalidated"] >= 1
    ws = websocket.create_connection(client.url(bullet), timeout=5)
    assert ws.recv() == '{"type":"error","code":401,"data":"token is expired"}'
    ws.close()


def test_idle_connections_are_dropped():
    with SimulatorProcess(["--ping-interval", "400", "--ping-timeout", "400"],
                          exchange="kucoin") as sim:
        client = KucoinClient(sim.urls["rest"])
        assert client.bullet()["instanceServers"][0]["pingInterval"] == 400
        quiet, _ = client.connect()
        talking, _ = client.connect()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.6:
            talking.send(json.dumps({"id": "k", "type": "ping"}))
            assert json.loads(talking.recv())["type"] == "pong"
            time.sleep(0.2)
        assert closed_how(quiet) == (0, 1000)
        talking.close()


def test_faults_from_cli_flags():
    args = ["--rate", "1000", "--slow-welcome", "0.5", "--rest-error", "429000:1",
            "--corrupt-book-after-messages", "30", "--corrupt-symbol", "BTC-USDT",
            "--max-connection-age", "2"]
    with SimulatorProcess(args, exchange="kucoin") as sim:
        client = KucoinClient(sim.urls["rest"])
        status, body = client.request("POST", "/api/v1/bullet-public")
        assert status == 429 and body["code"] == "429000"
        t0 = time.monotonic()
        ws, welcome = client.connect()
        assert time.monotonic() - t0 >= 0.45 and welcome["type"] == "welcome"
        ws.send(json.dumps({"id": 1, "type": "subscribe", "topic": "/market/level2:BTC-USDT"}))
        last, gap = None, False
        try:
            while True:
                op, frame = ws.recv_data_frame(True)
                if op == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(frame.data[:2], "big")
                    break
                d = json.loads(frame.data)["data"]
                gap |= last is not None and d["sequenceStart"] != last + 1
                last = d["sequenceEnd"]
        except CLOSED:
            code = None
        elapsed = time.monotonic() - t0
        assert gap and code == 1000 and 1.8 < elapsed < 4
        assert sim.control.stats()["faults"]["age_cut"] == 1


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class _Stats:
    def count(self, *args) -> None:
        pass


@pytest.mark.parametrize("exchange", ["kucoin", "kraken"])
def test_a_frame_sent_after_a_stall_never_overtakes_what_the_stall_held(exchange):
    """On a busy event loop the stall's end timer can run after the next frame is sent:
    the held frames must still go out first (a frame overtaking them is a sequence gap)."""
    import random
    from types import SimpleNamespace

    if exchange == "kucoin":
        from recorder.simulator.kucoin.session import Session
    else:
        from recorder.simulator.kraken.session import Session
    sim = SimpleNamespace(stats=_Stats(), conn_rng=random.Random(1))
    ws = SimpleNamespace(transport=_Transport())
    s = (Session(sim, ws, False, "c1", 1) if exchange == "kucoin"
         else Session(sim, ws, "ws_v2"))
    s.stall_until = time.monotonic() + 60
    s.send(b"held-1", "book")
    s.send(b"held-2", "book")
    assert ws.transport.written == []
    s.stall_until = time.monotonic() - 0.001  # over, and its timer has not run yet
    s.send(b"next", "book")
    assert ws.transport.written == [b"held-1", b"held-2", b"next"]
    s._unstall()  # the late timer: nothing left to send
    assert ws.transport.written == [b"held-1", b"held-2", b"next"]
