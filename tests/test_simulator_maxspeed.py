"""--speed max keeps the documented faults and private feeds: corrupt_book, maintenance, fills,
and --seed determinism of the looped market."""

from __future__ import annotations

import json
import time

import pytest
import websocket

from recorder.simulator.testing import SimulatorProcess
from tests.simulator_helpers import (
    Client,
    book_check,
    is_market_data,
    loads_exact,
    new_books,
    subscribe_book,
    token,
)


@pytest.fixture(scope="module")
def fast():
    with SimulatorProcess(["--speed", "max", "--seed", "13", "--fill-rate", "1"]) as s:
        yield s


def failure_runs(results: list[bool]) -> int:
    return sum(1 for i, ok in enumerate(results) if not ok and (i == 0 or results[i - 1]))


@pytest.mark.parametrize("version", [1, 2])
def test_corrupt_book_garbles_exactly_one_frame(fast, version):
    books = new_books(version, ["BTC/USD", "ETH/USD"])
    bad_symbol = "XBT/USD" if version == 1 else "BTC/USD"
    results: dict[str, list[bool]] = {name: [] for name in books}
    with Client(fast.urls[f"ws_v{version}"]) as c:
        subscribe_book(c, version, ["BTC/USD", "ETH/USD"])
        armed_at = None
        bad = results[bad_symbol]
        failed, ok_since = False, 0
        # Up to a few MB of frames are in flight (socket buffers) when the fault is armed,
        # more when the machine is loaded; read until the failure has come and gone, then
        # 5,000 more.
        for _ in range(600_000):
            if armed_at is not None and failed and ok_since >= 5000:
                break
            msg = c.recv()
            ok = book_check(books, version, msg)
            if ok is None:
                continue
            symbol = msg[-1] if version == 1 else msg["data"][0]["symbol"]
            results[symbol].append(ok)
            if symbol == bad_symbol:
                failed = failed or not ok
                ok_since = ok_since + 1 if ok else 0
            if armed_at is None and len(results[bad_symbol]) == 3000:
                assert fast.control.corrupt_book("BTC/USD", endpoint=f"ws_v{version}")[
                    "armed"] == 1
                armed_at = len(results[bad_symbol])
    assert all(bad[:armed_at]) and all(results[name] for name in books if name != bad_symbol)
    # One garbled level: the checks fail from that frame until an update of the level (or
    # its leaving the top 10) heals the client's book, and only once.
    assert failure_runs(bad) == 1, "expected exactly one corrupted frame"
    assert bad[-1] is True


@pytest.mark.parametrize("version", [1, 2])
def test_maintenance_pauses_the_market_and_online_resumes_it(fast, version):
    books = new_books(version, ["BTC/USD"])
    with Client(fast.urls[f"ws_v{version}"]) as c:
        c.recv()
        subscribe_book(c, version, ["BTC/USD"])
        checked = 0
        while checked < 500:
            checked += book_check(books, version, c.recv()) is not None

        def status_of(m: object) -> str | None:
            if version == 1 and isinstance(m, dict) and m.get("event") == "systemStatus":
                return m["status"]
            if version == 2 and isinstance(m, dict) and m.get("channel") == "status":
                return m["data"][0]["system"]
            return None

        fast.control.set_status("maintenance")
        while status_of(msg := c.recv()) is None:
            assert book_check(books, version, msg) is not False
        assert status_of(msg) == "maintenance"
        # Nothing but heartbeats while the market stands still.
        quiet: list[object] = []
        c.ws.settimeout(0.3)
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            try:
                quiet.append(c.recv())
            except websocket.WebSocketTimeoutException:
                pass
        beat = {"event": "heartbeat"} if version == 1 else {"channel": "heartbeat"}
        assert quiet and all(m == beat for m in quiet), quiet[:3]
        c.ws.settimeout(5)
        fast.control.set_status("online")
        assert status_of(c.recv_until(lambda m: status_of(m) is not None)) == "online"
        resumed = 0
        while resumed < 2000:  # the same loop goes on, so the client's book is still right
            ok = book_check(books, version, c.recv())
            if ok is not None:
                assert ok
                resumed += 1


def test_private_fills_at_max_speed(fast):
    with Client(fast.urls["ws_auth_v1"]) as c1, Client(fast.urls["ws_auth_v2"]) as c2:
        c1.recv()
        c2.recv()
        c1.send({"event": "subscribe", "subscription": {"name": "ownTrades", "token": token(fast)}})
        c2.send({"method": "subscribe",
                 "params": {"channel": "executions", "token": token(fast), "snap_orders": False}})
        v1_fills = c1.recv_until(lambda m: isinstance(m, list) and m[2]["sequence"] > 1)
        (txid, fill), = v1_fills[0][0].items()
        assert txid.startswith("T") and fill["pair"] in ("XBT/USD", "ETH/USD")
        trades = []
        while len(trades) < 3:
            m = c2.recv()
            if m.get("channel") == "executions" and m["type"] == "update":
                trades += [d for d in m["data"] if d.get("exec_type") == "trade"]
        assert all(isinstance(d["trade_id"], int) for d in trades)
        for symbol in {d["symbol"] for d in trades}:  # trade ids increase per pair
            ids = [d["trade_id"] for d in trades if d["symbol"] == symbol]
            assert ids == sorted(set(ids))


def test_private_fills_stop_in_maintenance(fast):
    with Client(fast.urls["ws_auth_v2"]) as c:
        c.recv()
        c.send({"method": "subscribe", "params": {"channel": "balances", "token": token(fast)}})
        c.recv_until(lambda m: m.get("channel") == "balances" and m["type"] == "update")
        fast.control.set_status("maintenance")
        try:
            c.recv_until(lambda m: m.get("channel") == "status")
            c.ws.settimeout(0.5)
            seen = []
            t_end = time.monotonic() + 1.5
            while time.monotonic() < t_end:
                try:
                    seen.append(c.recv())
                except websocket.WebSocketTimeoutException:
                    pass
            assert not [m for m in seen if m.get("channel") == "balances"]
        finally:
            fast.control.set_status("online")
        c.ws.settimeout(5)
        c.recv_until(lambda m: m.get("channel") == "balances")


def _frames(seed: int, n: int) -> list[object]:
    """The first ``n`` v2 book and trade frames at --speed max, without their wall-clock
    timestamps (which --seed does not fix)."""
    with SimulatorProcess(["--speed", "max", "--seed", str(seed)]) as sim:
        with Client(sim.urls["ws_v2"]) as c:
            c.recv()
            for ch in ("book", "trade"):
                c.send({"method": "subscribe",
                        "params": {"channel": ch, "symbol": ["BTC/USD", "ETH/USD"]}})
            out: list[object] = []
            while len(out) < n:
                raw = c.ws.recv()
                msg = loads_exact(raw)
                if is_market_data(msg):
                    for d in msg["data"]:
                        d.pop("timestamp", None)
                    out.append(msg)
    return out


def test_seed_makes_the_market_deterministic():
    a, b, other = _frames(5, 3000), _frames(5, 3000), _frames(6, 3000)
    assert a == b
    assert a != other
    trades = [m for m in a if m["channel"] == "trade" and m["type"] == "update"]
    assert trades and json.dumps(trades) == json.dumps(
        [m for m in b if m["channel"] == "trade" and m["type"] == "update"])
