"""Replaying each real capture reproduces its data frames; bad input exits with code 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.schema import arrow_schema
from recorder.simulator.testing import SimulatorProcess
from tests.captures import DATA, cryptofeed_frames, flashbook_frames, sdk_v1_frames
from tests.simulator_helpers import Client, ClientBook, v2_book_message


def is_data(text: str) -> bool:
    obj = json.loads(text)
    if isinstance(obj, list):
        return True
    return obj.get("channel") in ("book", "trade", "ticker", "ohlc")


def replay(path, expected: list[str], requests: list[dict], url_key: str,
           extra: tuple[str, ...] = ()) -> tuple[list[str], list[dict]]:
    with SimulatorProcess(["--replay", str(path), "--speed", "max", *extra]) as sim:
        with Client(sim.urls[url_key], timeout=10) as c:
            c.recv()
            for r in requests:
                c.send(r)
            got, acks = [], []
            while len(got) < len(expected):
                raw = c.ws.recv()
                if is_data(raw):
                    got.append(raw)
                else:
                    acks.append(json.loads(raw))
        sim.wait_for(lambda st: st["replay_finished"] == 1)
    return got, acks


@pytest.mark.parametrize("name, channel", [
    ("KRAKEN.ws.50.0", {"name": "book", "depth": 1000}),
    ("KRAKEN.ws.48.0", {"name": "trade"}),
    ("KRAKEN.ws.49.0", {"name": "ticker"}),
])
def test_cryptofeed_v1(name, channel):
    frames = list(cryptofeed_frames(name))
    expected = [f for f in frames if is_data(f)]
    capture_acks = {(a["channelName"], a["pair"]): a["channelID"] for a in map(json.loads, frames)
                    if isinstance(a, dict) and a.get("event") == "subscriptionStatus"}
    pairs = [p for _, p in capture_acks]
    got, acks = replay(DATA / "cryptofeed" / name, expected,
                       [{"event": "subscribe", "pair": pairs, "subscription": channel}], "ws_v1")
    assert got == expected  # byte for byte, in order
    assert {(a["channelName"], a["pair"]): a["channelID"] for a in acks
            if a.get("event") == "subscriptionStatus"} == capture_acks


def test_python_kraken_sdk_v1():
    expected = [f for f in sdk_v1_frames() if is_data(f)]
    got, acks = replay(DATA / "python-kraken-sdk" / "orderbook-v1.json", expected,
                       [{"event": "subscribe", "pair": ["XBT/USD"],
                         "subscription": {"name": "book", "depth": 10}}], "ws_v1")
    assert got == expected
    assert [a["channelID"] for a in acks if a.get("event") == "subscriptionStatus"] == [336]


def test_python_kraken_sdk_v2_rerendered_and_checksums_verify():
    doc = json.loads((DATA / "python-kraken-sdk" / "orderbook-v2.json").read_text(),
                     parse_float=Decimal)
    n = 1 + len(doc["updates"])
    got, _ = replay(DATA / "python-kraken-sdk" / "orderbook-v2.json", ["x"] * n,
                    [{"method": "subscribe",
                      "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 10}}],
                    "ws_v2")
    books = {"BTC/USD": ClientBook(10)}
    for raw, orig in zip(got, [doc["init"], *doc["updates"]], strict=True):
        msg = json.loads(raw, parse_float=str)
        assert v2_book_message(books, msg), raw
        d, o = msg["data"][0], orig["data"][0]
        assert d["checksum"] == o["checksum"] and d.get("timestamp") == o.get("timestamp")
        for side in ("bids", "asks"):
            for lv, olv in zip(d[side], o[side], strict=True):
                assert Decimal(lv["price"]) == olv["price"] and Decimal(lv["qty"]) == olv["qty"]
                assert len(lv["qty"].split(".")[1]) == 8 and len(lv["price"].split(".")[1]) == 1
    assert books["BTC/USD"].checked == n and books["BTC/USD"].failed == 0


def flashbook_requests() -> list[dict]:
    return [{"method": "subscribe", "params": {"channel": "book", "depth": 10,
                                                "symbol": ["BTC/USD", "ETH/USD"]}},
            {"method": "subscribe", "params": {"channel": "trade",
                                                "symbol": ["BTC/USD", "ETH/USD"]}}]


def test_flashbook_ndjson_v2():
    expected = [f for f in flashbook_frames() if is_data(f)]
    got, _ = replay(DATA / "flashbook" / "live-btc-eth.ndjson", expected, flashbook_requests(),
                    "ws_v2")
    assert got == expected


def test_recorder_raw_parquet(tmp_path):
    frames = list(flashbook_frames())
    n = len(frames)
    t0 = 1_783_465_203_000_000
    table = pa.table({
        "exchange": ["kraken"] * n,
        "ts_recv": pa.array([t0 + i * 100 for i in range(n)], pa.timestamp("us", tz="UTC")),
        "conn_id": [1] * n, "endpoint": ["ws_v2"] * n, "frame": frames,
    }, schema=arrow_schema("raw"))
    pq.write_table(table.slice(0, n // 2), tmp_path / "a.parquet")
    pq.write_table(table.slice(n // 2), tmp_path / "b.parquet")
    expected = [f for f in frames if is_data(f)]
    got, _ = replay(tmp_path, expected, flashbook_requests(), "ws_v2")
    assert got == expected


def test_realtime_pace_and_idle_after_the_end():
    path = DATA / "cryptofeed" / "KRAKEN.ws.48.0"
    frames = [(float(line.split(": ", 1)[0]), line.split(": ", 1)[1])
              for line in path.read_text().splitlines() if line[:1].isdigit()]
    data = [(t, f) for t, f in frames if is_data(f)]
    span = data[-1][0] - data[0][0]
    speed = 25
    with SimulatorProcess(["--replay", str(path), "--speed", str(speed)]) as sim:
        with Client(sim.urls["ws_v1"], timeout=5) as c:
            c.recv()
            c.send({"event": "subscribe", "pair": ["XMR/USD", "SC/EUR"],
                    "subscription": {"name": "trade"}})
            wanted = [f for _, f in data if json.loads(f)[-1] in ("XMR/USD", "SC/EUR")]
            got = []
            t0 = time.monotonic()
            while len(got) < len(wanted):
                raw = c.ws.recv()
                if is_data(raw):
                    got.append(raw)
            elapsed = time.monotonic() - t0
            assert got == wanted
            assert elapsed < span / speed + 1.0
            assert c.recv() == {"event": "heartbeat"}  # idles with heartbeats after the end
            assert sim.control.stats()["replay_finished"] == 1


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recorder.simulator", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args, needle", [
    (["--replay", "/nonexistent/capture.ndjson"], "replay file not found"),
    (["--speed", "fast"], "--speed"),
    (["--speed", "0"], "--speed"),
    (["--pairs", "FOO/BAR"], "unknown pair"),
    (["--drop-mode", "explode"], "--drop-mode"),
])
def test_bad_input_exits_2(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and r.stdout == ""


def test_unreadable_replay_file_exits_2(tmp_path):
    bad = tmp_path / "garbage.txt"
    bad.write_bytes(b"\x00\xff not a capture \xfe")
    r = run_cli("--replay", str(bad))
    assert r.returncode == 2 and "replay" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
