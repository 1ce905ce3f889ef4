"""Replaying KuCoin traffic: the shared captures and the recorder's own raw Parquet, frames
byte for byte, recorded REST answers from the REST endpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import websocket

from recorder.simulator.kucoin.client import KucoinClient
from recorder.simulator.testing import SimulatorProcess

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kucoin"
CAPTURE = DATA / "ws-public.ndjson"
TOPICS = ["/market/level2:BTC-USDT,RUNE-USDC", "/market/match:BTC-USDT,LMR-BTC",
          "/market/ticker:all", "/market/snapshot:BTC", "/market/candles:BTC-USDT_1min",
          "/spotMarket/level2Depth5:BTC-USDT"]


def expected_lines(path: Path, topics: list[str]) -> list[str]:
    wanted = set()
    for t in topics:
        prefix, _, args = t.partition(":")
        wanted |= {f"{prefix}:{a}" for a in args.split(",")}
    out = []
    for line in path.read_text().split("\n"):
        if line.strip():
            obj = json.loads(line)
            if obj.get("type") == "message" and obj.get("topic") in wanted:
                out.append(line)
    return out


def receive_all(ws, n: int, extra_wait: float = 0.3) -> list[str]:
    """``n`` frames, then whatever else comes within ``extra_wait`` (nothing, if all is well)."""
    ws.settimeout(10)
    got = [ws.recv() for _ in range(n)]
    ws.settimeout(extra_wait)
    try:
        while True:
            got.append(ws.recv())
    except websocket.WebSocketTimeoutException:
        pass
    return got


def subscribe_all(ws, topics: list[str]) -> None:
    for i, topic in enumerate(topics):
        ws.send(json.dumps({"id": i, "type": "subscribe", "topic": topic, "response": True}))


@pytest.mark.parametrize("speed", ["max", "50"])
def test_shared_capture_is_replayed_byte_for_byte(speed):
    want = expected_lines(CAPTURE, TOPICS)
    assert len(want) >= 20
    with SimulatorProcess(["--replay", str(CAPTURE), "--speed", speed],
                          exchange="kucoin") as sim:
        client = KucoinClient(sim.urls["rest"])
        ws, _ = client.connect()
        subscribe_all(ws, TOPICS)
        got = receive_all(ws, len(want) + len(TOPICS))
        ws.close()
        acks = [g for g in got if '"type":"ack"' in g and g.startswith('{"id"')]
        assert len(acks) == len(TOPICS)
        assert [g for g in got if g not in acks] == want
        sim.wait_for(lambda st: st["replay_finished"] == 1)
        # tardis's level2Snapshot wrapper answers the REST snapshot of its symbol.
        status, body = client.get("/api/v1/market/orderbook/level2_100", symbol="BTC-USDT")
        snap = json.loads(CAPTURE.read_text().split("\n")[24])
        assert status == 200 and body == {"code": "200000", "data": snap["data"]}
        assert client.get("/api/v2/symbols")[1]["data"][0]["symbol"] == "BTC-USDT"


def _l2(seq: int, price: str, size: str) -> str:
    return ('{"topic":"/market/level2:BTC-USDT","type":"message","subject":"trade.l2update",'
            f'"data":{{"changes":{{"asks":[["{price}","{size}","{seq}"]],"bids":[]}},'
            f'"sequenceEnd":{seq},"sequenceStart":{seq},"symbol":"BTC-USDT",'
            f'"time":{1729816425625 + seq}}}}}')


def _raw_table(path: Path) -> tuple[list[str], bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ws_url = "ws://127.0.0.1:1/?connectId=1"
    frames = [_l2(100 + i, f"67993.{i}", "1.0" if i % 3 else "0") for i in range(1, 11)]
    snapshot = ('{"code":"200000","data":{"time":1729816425700,"sequence":"104",'
                '"bids":[["67990","0.5"]],"asks":[["67993.1","1.0"],["67993.2","1.0"]]}}')
    rows = [  # (exchange, ts_recv µs, conn_id, endpoint, frame)
        ("kucoin", 1_000, 1, ws_url, '{"id":"1","type":"welcome"}'),
        ("kraken", 1_500, 9, "wss://ws.kraken.com/v2", '{"channel":"heartbeat"}'),
    ]
    t = 2_000
    for i, frame in enumerate(frames):
        rows.append(("kucoin", t, 1, ws_url, frame))
        if i == 4:
            rows.append(("kucoin", t + 1, 1,
                         "GET /api/v1/market/orderbook/level2_100?symbol=BTC-USDT", snapshot))
        if i >= 7:  # a rotation's overlap: the new connection records the same frames
            rows.append(("kucoin", t + 2, 2, ws_url, frame))
        t += 20_000
    table = pa.table({
        "exchange": [r[0] for r in rows],
        "ts_recv": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
        "conn_id": pa.array([r[2] for r in rows], pa.int64()),
        "endpoint": [r[3] for r in rows],
        "frame": [r[4] for r in rows],
    })
    path.mkdir(parents=True)
    pq.write_table(table, path / "raw-0001.parquet")
    return frames, snapshot.encode()


def test_raw_parquet_replay_serves_frames_and_rest_snapshots(tmp_path):
    folder = tmp_path / "raw" / "exchange=kucoin"
    frames, snapshot = _raw_table(folder)
    with SimulatorProcess(["--replay", str(tmp_path / "raw")], exchange="kucoin") as sim:
        client = KucoinClient(sim.urls["rest"])
        ws, _ = client.connect()
        subscribe_all(ws, ["/market/level2:BTC-USDT"])
        got = receive_all(ws, len(frames) + 1)
        ws.close()
        assert got[0] == '{"id":"0","type":"ack"}'
        assert got[1:] == frames  # in order, once each, byte for byte
        status, body = client.get("/api/v1/market/orderbook/level2_100", symbol="BTC-USDT")
        assert status == 200 and json.dumps(body, separators=(",", ":")).encode() == snapshot
        # The full-depth path falls back to the recorded level2 snapshot.
        assert client.get("/api/v3/market/orderbook/level2", True, symbol="BTC-USDT")[1] == body
        assert client.get("/api/v1/market/orderbook/level2_100", symbol="ETH-USDT")[0] == 200
    # Calibrating with the recorded snapshot (sequence 104) on the replayed stream works.
    book = {"asks": {"67993.1": "1.0", "67993.2": "1.0"}}
    seq = 104
    for frame in frames:
        d = json.loads(frame)["data"]
        if d["sequenceEnd"] <= seq:
            continue
        assert d["sequenceStart"] == seq + 1
        for price, size, _ in d["changes"]["asks"]:
            if size == "0":
                book["asks"].pop(price, None)
            else:
                book["asks"][price] = size
        seq = d["sequenceEnd"]
    assert seq == 110 and "67993.6" not in book["asks"] and book["asks"]["67993.7"] == "1.0"


def test_bad_replay_files_are_refused(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    for path in (bad, tmp_path / "missing.ndjson"):
        proc = subprocess.run([sys.executable, "-m", "recorder.simulator", "--exchange", "kucoin",
                               "--replay", str(path)], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 2
        assert proc.stderr.startswith("recorder simulate: error: ")
        assert len(proc.stderr.strip().splitlines()) == 1
