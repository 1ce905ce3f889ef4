"""Replaying each real capture reproduces its data frames; bad input exits with code 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import websocket

from recorder.core.schema import arrow_schema
from recorder.simulator.testing import SimulatorProcess
from tests.captures import DATA, cryptofeed_frames, flashbook_frames, sdk_v1_frames
from tests.simulator_helpers import (
    Client,
    ClientBook,
    book_check,
    loads_exact,
    token,
    v2_book_message,
)


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
            # Paced both ways: a replay that ignored the timing would be done at once.
            assert span / speed * 0.9 < elapsed < span / speed + 1.0
            assert c.recv() == {"event": "heartbeat"}  # idles with heartbeats after the end
            assert sim.control.stats()["replay_finished"] == 1


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recorder.simulator", *args],
                          capture_output=True, text=True, timeout=30)


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    (tmp / "empty-dir").mkdir()
    (tmp / "csv-dir").mkdir()
    (tmp / "csv-dir" / "x.csv").write_text("a,b\n1,2\n")
    (tmp / "empty.ndjson").write_text("")
    (tmp / "notes.txt").write_text("hello, not a capture\n")
    return {"TMP": tmp}


@pytest.mark.parametrize("args, needle", [
    (["--replay", "/nonexistent/capture.ndjson"], "replay file not found"),
    (["--replay", "TMP/empty-dir"], "holds no Parquet files of the recorder's raw table"),
    (["--replay", "TMP/csv-dir"], "holds no Parquet files of the recorder's raw table"),
    (["--replay", "TMP/empty.ndjson"], "empty.ndjson is empty"),
    (["--replay", "TMP/notes.txt"], "notes.txt is not a capture"),
    (["--speed", "fast"], "--speed"),
    (["--speed", "0"], "--speed"),
    (["--pairs", "FOO/BAR"], "--pairs: unknown pair 'FOO/BAR'"),
    (["--corrupt-symbol", "FOO/BAR", "--corrupt-book-after-messages", "5"],
     "--corrupt-symbol: unknown pair 'FOO/BAR'"),
    (["--drop-mode", "explode"], "--drop-mode"),
])
def test_bad_input_exits_2(tmp_path, args, needle):
    _bad_inputs(tmp_path)
    r = run_cli(*[a.replace("TMP", str(tmp_path)) for a in args])
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    (line,) = r.stderr.strip().splitlines()  # one line, no traceback or library dump
    assert line.startswith("recorder simulate: error: ") and needle in line, line


def test_unreadable_replay_file_exits_2(tmp_path):
    bad = tmp_path / "garbage.txt"
    bad.write_bytes(b"\x00\xff not a capture \xfe")
    r = run_cli("--replay", str(bad))
    assert r.returncode == 2 and "replay" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _exchange_time(msg: object) -> float:
    """Latest exchange timestamp in a frame, read here without the simulator's code."""
    if isinstance(msg, list):
        return max(float(lv[2]) for part in msg[1:-2] for side in part.values()
                   if isinstance(side, list) for lv in side)
    stamp = msg["data"][0]["timestamp"]
    return datetime.fromisoformat(stamp.replace("Z", "")[:26] + "+00:00").timestamp()


@pytest.mark.parametrize("path, url_key, requests, speed, n", [
    (DATA / "flashbook" / "live-btc-eth.ndjson", "ws_v2", flashbook_requests(), 10,
     sum(map(is_data, flashbook_frames()))),
    (DATA / "python-kraken-sdk" / "orderbook-v1.json", "ws_v1",
     [{"event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "book"}}], 60, 980),
])
def test_paced_by_exchange_timestamps(path, url_key, requests, speed, n):
    """Formats without receive times go out at the pace of the exchange's own timestamps."""
    with SimulatorProcess(["--replay", str(path), "--speed", str(speed)]) as sim:
        with Client(sim.urls[url_key], timeout=10) as c:
            c.recv()
            for r in requests:
                c.send(r)
            arrivals: list[tuple[float, float]] = []
            t0 = time.monotonic()
            while len(arrivals) < n:
                raw = c.ws.recv()
                if is_data(raw):
                    arrivals.append((time.monotonic() - t0, _exchange_time(json.loads(raw))))
    clock = arrivals[0][1]
    late = 0.0
    for got_at, t in arrivals:
        clock = max(clock, t)  # frames that step back in time go out at once
        due = (clock - arrivals[0][1]) / speed
        assert got_at >= due - 0.05, (got_at, due)  # never early
        late = max(late, got_at - due)
    span = (clock - arrivals[0][1]) / speed
    assert span > 1.0 and arrivals[-1][0] >= span * 0.95
    assert late < 2.0


def _sdk(version: int) -> tuple[Path, str, dict]:
    if version == 1:
        return (DATA / "python-kraken-sdk" / "orderbook-v1.json", "ws_v1",
                {"event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "book"}})
    return (DATA / "python-kraken-sdk" / "orderbook-v2.json", "ws_v2",
            {"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"]}})


def _read_replay(sim: SimulatorProcess, url_key: str, request: dict, n: int) -> list[str]:
    with Client(sim.urls[url_key], timeout=10) as c:
        c.recv()
        c.send(request)
        got: list[str] = []
        while len(got) < n:
            raw = c.ws.recv()
            if is_data(raw):
                got.append(raw)
    return got


def _check_all(version: int, frames: list[str]) -> list[bool]:
    books = {"XBT/USD": ClientBook(10), "BTC/USD": ClientBook(10)}
    out = []
    for raw in frames:
        ok = book_check(books, version, loads_exact(raw))
        if ok is not None:
            out.append(ok)
    return out


@pytest.mark.parametrize("version", [1, 2])
def test_corrupt_book_in_a_max_speed_replay(version):
    path, url_key, request = _sdk(version)
    n = 980 if version == 1 else 510
    with SimulatorProcess(["--replay", str(path), "--speed", "max"]) as sim:
        clean = _read_replay(sim, url_key, request, n)
        sim.control.fault(kind="corrupt_book", symbol="BTC/USD", persistent=True)
        garbled = _read_replay(sim, url_key, request, n)
    assert all(_check_all(version, clean))
    diff = [i for i, (a, b) in enumerate(zip(clean, garbled, strict=True)) if a != b]
    assert len(diff) == 1, diff  # exactly one frame, and its checksum no longer verifies
    results = _check_all(version, garbled)
    first_bad = results.index(False)
    assert all(results[:first_bad])
    assert first_bad == diff[0] - 1  # results leave out the snapshot


def test_cli_corrupt_book_in_a_paced_replay():
    path, url_key, request = _sdk(2)
    with SimulatorProcess(["--replay", str(path), "--speed", "max"]) as sim:
        expected = _read_replay(sim, url_key, request, 510)
    args = ["--replay", str(path), "--speed", "100", "--corrupt-book-after-messages", "40",
            "--corrupt-symbol", "XBT/USD"]
    with SimulatorProcess(args) as sim:
        garbled = _read_replay(sim, url_key, request, 510)
    diff = [i for i, (a, b) in enumerate(zip(expected, garbled, strict=True)) if a != b]
    assert len(diff) == 1 and diff[0] >= 38  # after 40 messages (greeting and ack included)
    results = _check_all(2, garbled)
    assert all(results[:diff[0] - 1]) and results[diff[0] - 1] is False


def _status(msg: object) -> str | None:
    if isinstance(msg, dict) and msg.get("event") == "systemStatus":
        return msg["status"]
    if isinstance(msg, dict) and msg.get("channel") == "status":
        return msg["data"][0]["system"]
    return None


def _quiet(c: Client, seconds: float) -> list[object]:
    """What arrives in ``seconds``."""
    out = []
    c.ws.settimeout(0.2)
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        try:
            out.append(c.recv())
        except websocket.WebSocketTimeoutException:
            pass
    c.ws.settimeout(10)
    return out


def test_maintenance_pauses_a_paced_replay():
    path = DATA / "flashbook" / "live-btc-eth.ndjson"
    expected = [f for f in flashbook_frames() if is_data(f)]
    with SimulatorProcess(["--replay", str(path), "--speed", "8"]) as sim:
        with Client(sim.urls["ws_v2"], timeout=10) as c:
            c.recv()
            for r in flashbook_requests():
                c.send(r)
            got: list[str] = []
            while len(got) < 100:
                raw = c.ws.recv()
                if is_data(raw):
                    got.append(raw)
            sim.control.set_status("maintenance")
            while _status(msg := loads_exact(raw := c.ws.recv())) is None:
                if is_data(raw):
                    got.append(raw)
            assert _status(msg) == "maintenance"
            during = _quiet(c, 1.5)
            assert during and all(m == {"channel": "heartbeat"} for m in during), during[:3]
            sim.control.set_status("online")
            while len(got) < len(expected):
                raw = c.ws.recv()
                if is_data(raw):
                    got.append(raw)
    assert got == expected  # the capture's clock stopped: nothing was skipped


def test_maintenance_holds_a_max_speed_replay():
    path, url_key, request = _sdk(2)
    with SimulatorProcess(["--replay", str(path), "--speed", "max"]) as sim:
        sim.control.set_status("maintenance")
        with Client(sim.urls[url_key], timeout=10) as c:
            assert _status(c.recv()) == "maintenance"
            c.send(request)
            during = _quiet(c, 1.5)
            assert [m for m in during if not isinstance(m, dict) or m.get("channel") not in
                    ("heartbeat", None)] == [], during[:3]
            assert any(m.get("method") == "subscribe" for m in during)  # the ack only
            sim.control.set_status("online")
            got = []
            while len(got) < 510:
                raw = c.ws.recv()
                if is_data(raw):
                    got.append(raw)
    assert all(_check_all(2, got))


def _capture_trades(frames: list[str]) -> list[tuple[str, str]]:
    """(price, qty) of the first trade of each trade frame."""
    out = []
    for raw in frames:
        msg = loads_exact(raw)
        if isinstance(msg, list) and msg[-2] == "trade":
            out.append((msg[1][0][0], msg[1][0][1]))
        elif isinstance(msg, dict) and msg.get("channel") == "trade":
            d = msg["data"][0]
            out.append((d["price"], d["qty"]))
    return out


def test_replayed_trades_fill_the_demo_account_v2():
    path = DATA / "flashbook" / "live-btc-eth.ndjson"
    trade_ids = [json.loads(f)["data"][0]["trade_id"] for f in flashbook_frames()
                 if json.loads(f).get("channel") == "trade"]
    assert len(trade_ids) == 10
    with SimulatorProcess(["--replay", str(path), "--speed", "max", "--fill-rate", "1"]) as sim:
        with Client(sim.urls["ws_auth_v2"], timeout=10) as c:
            c.recv()
            c.send({"method": "subscribe", "params": {"channel": "executions",
                                                      "token": token(sim)}})
            fills = []
            while len(fills) < len(trade_ids):
                m = c.recv()
                if m.get("channel") == "executions" and m["type"] == "update":
                    fills += [d for d in m["data"] if d.get("exec_type") == "trade"]
    assert [d["trade_id"] for d in fills] == trade_ids
    assert [(d["last_price"], d["last_qty"]) for d in fills] == _capture_trades(
        list(flashbook_frames()))


def test_replayed_trades_fill_the_demo_account_v1():
    name = "KRAKEN.ws.48.0"
    wanted = _capture_trades(list(cryptofeed_frames(name)))
    with SimulatorProcess(["--replay", str(DATA / "cryptofeed" / name), "--speed", "max",
                           "--fill-rate", "1"]) as sim:
        with Client(sim.urls["ws_auth_v1"], timeout=10) as c:
            c.recv()
            c.send({"event": "subscribe",
                    "subscription": {"name": "ownTrades", "token": token(sim)}})
            fills = []
            while len(fills) < len(wanted):
                m = c.recv()
                if isinstance(m, list) and m[2]["sequence"] > 1:
                    fills += [t for e in m[0] for t in e.values()]
    # At the pair's decimals (the 2021 capture padded prices to 8)
    assert [(Decimal(f["price"]), Decimal(f["vol"])) for f in fills] == [
        (Decimal(p), Decimal(q)) for p, q in wanted]
    assert {f["pair"] for f in fills} == {"XMR/USD", "SC/EUR"}
