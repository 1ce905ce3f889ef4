"""Faults on demand, from the control API and from CLI flags."""

from __future__ import annotations

import json
import time

import pytest
import websocket

from recorder.simulator.testing import SimulatorProcess
from tests.simulator_helpers import Client, ClientBook, v1_book_message, v2_book_message

CLOSED = (websocket.WebSocketConnectionClosedException, ConnectionError, OSError)


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "21", "--rate", "400"]) as s:
        yield s


def book_client(sim, version: int) -> Client:
    c = Client(sim.urls[f"ws_v{version}"])
    c.recv()
    if version == 1:
        c.send({"event": "subscribe", "pair": ["XBT/USD"],
                "subscription": {"name": "book", "depth": 10}})
    else:
        c.send({"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"]}})
    return c


def closed_how(c: Client, limit: int = 100000) -> tuple[int, int | None]:
    """Read until the connection ends: (messages read, close code or None if no frame)."""
    n = 0
    try:
        for _ in range(limit):
            op, frame = c.ws.recv_data_frame(True)
            if op == websocket.ABNF.OPCODE_CLOSE:
                return n, int.from_bytes(frame.data[:2], "big")
            n += 1
    except CLOSED:
        return n, None
    raise AssertionError("connection did not close")


def test_drop_after_messages_abort(sim):
    c = book_client(sim, 1)
    time.sleep(0.1)
    assert sim.control.drop(endpoint="ws_v1", after_messages=20)["armed"] >= 1
    n, code = closed_how(c)
    assert code is None and 20 <= n < 200  # 20 after arming, plus those already in flight


def test_drop_clean_close_after_seconds(sim):
    c = book_client(sim, 2)
    t0 = time.monotonic()
    sim.control.drop(mode="close", endpoint="ws_v2", after_seconds=0.5)
    _, code = closed_how(c)
    assert code == 1000 and 0.4 < time.monotonic() - t0 < 3


def test_stall_then_resume(sim):
    c = book_client(sim, 2)
    c.recv_until(lambda m: m.get("channel") == "book")
    sim.control.stall(1.5, endpoint="ws_v2")
    time.sleep(0.1)
    c.ws.settimeout(1.0)
    while True:  # drain what was already in flight
        try:
            c.ws.recv()
        except websocket.WebSocketTimeoutException:
            break
    c.ws.settimeout(5)
    t0 = time.monotonic()
    msg = c.recv()
    assert msg.get("channel") == "book" and time.monotonic() - t0 > 0.2
    c.close()


def test_malformed_frame(sim):
    c = book_client(sim, 1)
    sim.control.malformed(endpoint="ws_v1")
    for _ in range(1000):
        raw = c.ws.recv()
        try:
            json.loads(raw)
        except ValueError:
            break
    else:
        raise AssertionError("no malformed frame")
    c.close()


@pytest.mark.parametrize("version", [1, 2])
def test_corrupt_book_level_fails_the_client_checksum(sim, version):
    c = book_client(sim, version)
    books = {"XBT/USD": ClientBook(10), "BTC/USD": ClientBook(10)}
    results = []
    armed = False
    while len(results) < 300:
        msg = c.recv()
        ok = None
        if version == 1 and isinstance(msg, list):
            ok = v1_book_message(books, msg)
        elif version == 2 and isinstance(msg, dict) and msg.get("channel") == "book":
            ok = v2_book_message(books, msg)
        if ok is not None:
            results.append(ok)
            if not armed and len(results) == 20:
                sim.control.corrupt_book("BTC/USD", endpoint=f"ws_v{version}")
                armed = True
            if not ok:
                break
    assert all(results[:20]) and results[-1] is False
    c.close()
    # A fresh subscription (the client's resync) gets a correct book again.
    c = book_client(sim, version)
    books = {"XBT/USD": ClientBook(10), "BTC/USD": ClientBook(10)}
    checked = 0
    while checked < 50:
        msg = c.recv()
        if version == 1 and isinstance(msg, list):
            assert v1_book_message(books, msg) is not False
            checked += 1
        elif version == 2 and isinstance(msg, dict) and msg.get("channel") == "book":
            assert v2_book_message(books, msg)
            checked += 1
    c.close()


def test_status_maintenance_and_back(sim):
    c1 = Client(sim.urls["ws_v1"])
    c2 = Client(sim.urls["ws_v2"])
    c1.recv()
    c2.recv()
    sim.control.set_status("maintenance")
    m1 = c1.recv_until(lambda m: isinstance(m, dict) and m.get("event") == "systemStatus")
    m2 = c2.recv_until(lambda m: m.get("channel") == "status")
    assert m1["status"] == "maintenance" and m2["data"][0]["system"] == "maintenance"
    assert sim.control.stats()["status"] == "maintenance"
    sim.control.set_status("online")
    assert c1.recv_until(lambda m: isinstance(m, dict) and m.get("event") == "systemStatus")[
        "status"] == "online"
    assert c2.recv_until(lambda m: m.get("channel") == "status")["data"][0]["system"] == (
        "online")
    assert sim.control.stats()["status"] == "online"
    c1.close()
    c2.close()


def test_reject_subscribe_burst(sim):
    sim.control.reject_subscribes(2)
    c1 = Client(sim.urls["ws_v1"])
    c1.recv()
    c1.send({"event": "subscribe", "reqid": 5, "pair": ["XBT/USD"],
             "subscription": {"name": "trade"}})
    assert c1.recv() == {"errorMessage": "Exceeded msg rate", "event": "error", "reqid": 5}
    c2 = Client(sim.urls["ws_v2"])
    c2.recv()
    c2.send({"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}})
    msg = c2.recv()
    assert msg["error"] == "Exceeded msg rate" and msg["success"] is False
    c2.send({"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}})
    assert c2.recv()["success"] is True
    c1.close()
    c2.close()


def test_stats_and_bad_fault(sim):
    stats = sim.control.stats()
    assert stats["connections_total"] > 0 and stats["messages"]["ws_v1"]["book"] > 0
    assert stats["faults"]["drop"] >= 2
    with pytest.raises(Exception, match="endpoint must be"):
        sim.control.drop(endpoint="nowhere")


def test_cli_fault_flags_apply_to_every_connection():
    args = ["--seed", "1", "--rate", "400", "--drop-after-messages", "30",
            "--drop-mode", "close"]
    with SimulatorProcess(args) as s:
        for _ in range(2):
            c = book_client(s, 1)
            n, code = closed_how(c)
            assert code == 1000 and n <= 31
        assert s.control.stats()["faults"]["drop"] == 2


def _quiet_gap(c: Client, limit: float = 10.0) -> float:
    """The longest silence between two frames until one after a gap of over 0.8 s."""
    last = time.monotonic()
    deadline = last + limit
    while time.monotonic() < deadline:
        c.recv()
        now = time.monotonic()
        if now - last > 0.8:
            return now - last
        last = now
    raise AssertionError("no silence")


def _status_of(m: object) -> str | None:
    return m["status"] if isinstance(m, dict) and m.get("event") == "systemStatus" else None


def _flag_drop_after_seconds(s):
    c = book_client(s, 1)
    t0 = time.monotonic()
    n, code = closed_how(c)
    assert code is None and n > 0 and 0.4 < time.monotonic() - t0 < 5  # abort: no close frame


def _flag_stall(s):
    c = book_client(s, 1)
    assert _quiet_gap(c) > 1.0  # no data and no heartbeats for the stall's 1.5 s
    c.recv_until(lambda m: isinstance(m, list))  # then the feed goes on
    c.close()


def _flag_malformed(s):
    c = book_client(s, 1)
    raws = [c.ws.recv() for _ in range(12)]
    bad = []
    for raw in raws:
        try:
            json.loads(raw)
        except ValueError:
            bad.append(raw)
    assert len(bad) == 1
    c.close()


def _flag_corrupt_book(s):
    c = book_client(s, 1)
    books = {"XBT/USD": ClientBook(10)}
    results = []
    while False not in results and len(results) < 2000:
        m = c.recv()
        if isinstance(m, list):
            ok = v1_book_message(books, m)
            if ok is not None:
                results.append(ok)
    assert results[-1] is False and all(results[:-1]) and len(results) >= 5
    c.close()


def _flag_maintenance(s):
    c = book_client(s, 1)
    statuses = []
    data_while_down = 0
    deadline = time.monotonic() + 10
    while statuses != ["maintenance", "online"]:  # the greeting was read by book_client
        assert time.monotonic() < deadline, statuses
        m = c.recv()
        if _status_of(m):
            statuses.append(_status_of(m))
        elif isinstance(m, list) and statuses[-1:] == ["maintenance"]:
            data_while_down += 1
    assert data_while_down == 0
    c.recv_until(lambda m: isinstance(m, list))  # the market is back
    c.close()


def _flag_invalidate_tokens(s):
    from tests.simulator_helpers import token

    tok = token(s)
    time.sleep(1.0)
    c = Client(s.urls["ws_auth_v1"])
    c.recv()
    c.send({"event": "subscribe", "subscription": {"name": "ownTrades", "token": tok}})
    assert c.recv()["errorMessage"] == "ESession:Invalid session"
    c.send({"event": "subscribe", "subscription": {"name": "ownTrades", "token": token(s)}})
    assert c.recv()["status"] == "subscribed"  # a new token works
    c.close()


def _flag_reject_subscribes(s):
    c = Client(s.urls["ws_v2"])
    c.recv()
    req = {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}}
    c.send(req)
    assert c.recv()["error"] == "Exceeded msg rate"
    c.send(req)
    assert c.recv()["success"] is True
    c.close()


@pytest.mark.parametrize("flags, check", [
    (["--drop-after-seconds", "0.5"], _flag_drop_after_seconds),
    (["--stall-after-seconds", "0.3", "--stall-seconds", "1.5"], _flag_stall),
    (["--malformed-after-messages", "5"], _flag_malformed),
    (["--corrupt-book-after-messages", "8", "--corrupt-symbol", "XBT/USD"], _flag_corrupt_book),
    (["--maintenance-after-seconds", "0.5", "--maintenance-seconds", "1"], _flag_maintenance),
    (["--invalidate-tokens-after-seconds", "0.5"], _flag_invalidate_tokens),
    (["--reject-subscribes", "1"], _flag_reject_subscribes),
], ids=lambda v: v[0] if isinstance(v, list) else "")
def test_cli_fault_flag(flags, check):
    with SimulatorProcess(["--seed", "4", "--rate", "400", *flags]) as s:
        check(s)
        assert s.control.stats()  # still serving
