"""End to end: own fills and orders recorded from the simulator's private WebSocket by
`recorder run`.

The simulator's account runs with the session's sentinel key pair (tests/sentinel.py), given
to both processes through environment variables; every test checks its own outputs and
folder, and the session plugin checks everything else (tests/sentinel_plugin.py).

Truth for fills comes from the simulator itself, after the recording: the account's last 50
fills in a fresh snapshot taken by this test's own client. The simulator is started per test,
with a low fill rate, so that this snapshot holds *every* fill of its life (asserted). Truth
for orders is what the simulator sent: an observer connection, subscribed before the
recorder, receives the same frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import psutil
import pytest
import websocket

from recorder.capture.supervisor import read_states
from recorder.exchanges.kraken.token import TokenHelper
from recorder.simulator.testing import SimulatorProcess
from tests.e2e import db
from tests.private_helpers import (
    KEY,
    ROOT,
    SECRET,
    RevokingRest,
    _config,
    _env,
    _finish,
    _sim,
    _start,
)
from tests.sentinel import WRONG_SECRET, assert_clean

# -- helpers ---------------------------------------------------------------------------------












def _wait(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _private_connections(sim: SimulatorProcess, api: str) -> int:
    return sim.control.stats()["connections_by_endpoint"].get(f"ws_auth_{api}", 0)


def _freeze(sim: SimulatorProcess) -> None:
    # No market, no new fills: the recorder and the truth snapshot see the same account.
    sim.control.set_status("maintenance")
    time.sleep(1.0)


def _subscribe(ws: websocket.WebSocket, api: str, token: str) -> None:
    if api == "v1":
        for name in ("ownTrades", "openOrders"):
            ws.send(json.dumps({"event": "subscribe", "subscription": {
                "name": name, "token": token, "snapshot": True}}))
    else:
        ws.send(json.dumps({"method": "subscribe", "params": {
            "channel": "executions", "token": token, "snap_trades": True,
            "snap_orders": True}}))


def _truth(sim: SimulatorProcess, api: str) -> list[dict]:
    """The account's fills, from a fresh snapshot, as plain dicts of wire text."""
    token = TokenHelper(sim.urls["rest"], KEY, SECRET).fresh()
    ws = websocket.create_connection(sim.urls[f"ws_auth_{api}"], timeout=5)
    try:
        _subscribe(ws, api, token)
        while True:
            msg = json.loads(ws.recv(), parse_float=str)
            if api == "v1" and isinstance(msg, list) and msg[-2] == "ownTrades":
                return [{"trade_id": txid, **t} for e in msg[0] for txid, t in e.items()]
            if api == "v2" and isinstance(msg, dict) and msg.get("channel") == "executions":
                return [e for e in msg["data"] if e.get("exec_type") == "trade"]
    finally:
        ws.close()


class Observer:
    """A private connection of the test's own, open for the whole recording: it receives
    every private frame the simulator sends, in order (exact number text kept)."""

    def __init__(self, sim: SimulatorProcess, api: str) -> None:
        self.api = api
        self.frames: list = []
        self._stop = threading.Event()
        token = TokenHelper(sim.urls["rest"], KEY, SECRET).fresh()
        self.ws = websocket.create_connection(sim.urls[f"ws_auth_{api}"], timeout=0.5)
        _subscribe(self.ws, api, token)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        _wait(lambda: any(self._is_snapshot(f) for f in self.frames), what="observer snapshot")

    def _is_snapshot(self, f) -> bool:
        if self.api == "v1":
            return isinstance(f, list) and f[-2] == "openOrders" and f[-1]["sequence"] == 1
        return isinstance(f, dict) and f.get("channel") == "executions" and (
            f.get("type") == "snapshot")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(json.loads(self.ws.recv(), parse_float=str))
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.ws.close()

    def order_rows(self) -> list[tuple[bool, tuple]]:
        """(is_snapshot, row) per order event, mapped as docs/private.md documents."""
        rows: list[tuple[bool, tuple]] = []
        known: dict[str, tuple] = {}
        for f in self.frames:
            if self.api == "v1" and isinstance(f, list) and f[-2] == "openOrders":
                snap = f[-1]["sequence"] == 1
                for entry in f[0]:
                    for oid, o in entry.items():
                        rows.append((snap, _v1_order(oid, o, snap, known)))
            elif (self.api == "v2" and isinstance(f, dict)
                  and f.get("channel") == "executions" and "data" in f):
                snap = f.get("type") == "snapshot"
                for e in f["data"]:
                    oid = e.get("order_id")
                    before = known.get(oid, (None, None, None))
                    known[oid] = tuple(e.get(k) or b for k, b in
                                       zip(("symbol", "side", "order_type"), before,
                                           strict=True))
                    if e.get("exec_type") != "trade":
                        rows.append((snap, _v2_order(e, snap, known[oid])))
        return rows


_V1_ORDER_COLUMNS = {"status", "vol", "vol_exec", "avg_price", "descr", "lastupdated"}
_V2_ORDER_COLUMNS = {"order_id", "symbol", "timestamp", "order_status", "side", "order_type",
                     "limit_price", "order_qty", "cum_qty", "avg_price"}


def _dec(text) -> Decimal | None:
    return None if text is None else Decimal(str(text))


def _detail(fields: dict, snap: bool) -> str:
    out = {k: v for k, v in fields.items() if v is not None}
    if snap:
        out["snapshot"] = True
    return json.dumps(out, sort_keys=True)


def _v1_order(oid: str, o: dict, snap: bool, known: dict) -> tuple:
    descr = o.get("descr") or {}
    if descr:
        known[oid] = (descr["pair"].replace("XBT", "BTC"), descr.get("type"),
                      descr.get("ordertype"))
    symbol, side, kind = known.get(oid, (None, None, None))
    ts = o.get("lastupdated") or (o.get("opentm") if o.get("status") == "pending" else None)
    limit = None
    if descr.get("ordertype") == "limit":
        limit = descr.get("price")
    elif (descr.get("ordertype") or "").endswith("-limit"):
        limit = descr.get("price2")
    extra = {k: v for k, v in o.items() if k not in _V1_ORDER_COLUMNS}
    if descr:
        extra["descr_order"] = descr.get("order")
    return ("kraken", symbol, _epoch_us(ts), oid, o.get("status"), side, kind, _dec(limit),
            _dec(o.get("vol")), _dec(o.get("vol_exec")), _dec(o.get("avg_price")), None,
            _detail(extra, snap))


def _v2_order(e: dict, snap: bool, known: tuple) -> tuple:
    extra = {k: v for k, v in e.items() if k not in _V2_ORDER_COLUMNS}
    return ("kraken", known[0], _epoch_us(e.get("timestamp")), e["order_id"],
            e.get("order_status"), known[1], known[2], _dec(e.get("limit_price")),
            _dec(e.get("order_qty")), _dec(e.get("cum_qty")), _dec(e.get("avg_price")),
            e.get("exec_type"), _detail(extra, snap))


def _recorded_orders(data: Path) -> list[tuple[bool, tuple]]:
    rows = db(data).execute(
        "SELECT is_snapshot, exchange, symbol, epoch_us(ts_exchange), order_id, status, side, "
        "ord_type, limit_price, order_qty, filled_qty, avg_price, exec_type, detail, "
        "epoch_us(ts_recv) FROM orders ORDER BY ts_recv").fetchall()
    assert all(r[-1] is not None for r in rows), "orders.ts_recv is always set"
    out = []
    for r in rows:
        d = json.loads(r[13])
        out.append((r[0], (*r[1:13], json.dumps(d, sort_keys=True))))
    return out


def _epoch_us(text) -> int | None:
    if text is None:
        return None
    if "T" in text:  # exact integer arithmetic: a float timestamp can be 1 µs off
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (dt - _EPOCH) // timedelta(microseconds=1)
    return int(Decimal(text) * 1_000_000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _expected_fills(api: str, truth: list[dict]) -> set[tuple]:
    """Every column of ``fills`` but ts_recv and is_snapshot (the recorder's own)."""
    out = set()
    for t in truth:
        if api == "v1":
            symbol = t["pair"].replace("XBT", "BTC")
            # v1: fees in the quote currency; no maker flag from the simulator; no exec id.
            out.add(("kraken", symbol, _epoch_us(t["time"]), t["ordertxid"], t["trade_id"],
                     t["type"], Decimal(t["price"]), Decimal(t["vol"]), Decimal(t["cost"]),
                     Decimal(t["fee"]), symbol.split("/")[1], None, t["ordertype"], None))
        else:
            (fee,) = t["fees"]
            out.add(("kraken", t["symbol"], _epoch_us(t["timestamp"]), t["order_id"],
                     str(t["trade_id"]), t["side"], Decimal(t["last_price"]),
                     Decimal(t["last_qty"]), Decimal(t["cost"]), Decimal(fee["qty"]),
                     fee["asset"], {"m": "maker", "t": "taker"}[t["liquidity_ind"]],
                     t["order_type"], t["exec_id"]))
    return out


_FILL_COLUMNS = ("exchange, symbol, epoch_us(ts_exchange), order_id, trade_id, side, price, "
                 "qty, cost, fee, fee_currency, liquidity, ord_type, exec_id")


def _order_updates(data: Path) -> int:
    """Order events (not snapshot rows) recorded so far; 0 before the table exists."""
    try:
        return db(data).execute("SELECT count(*) FROM orders WHERE NOT is_snapshot"
                                ).fetchone()[0]
    except duckdb.Error:
        return 0


def _recorded(data: Path) -> list[tuple]:
    return db(data).execute(f"SELECT {_FILL_COLUMNS} FROM fills").fetchall()


def _check_fill_stamps(data: Path, started_us: int, ended_us: int) -> None:
    """The recorder's own columns: arrival time within the run, after the fill (clock
    jitter allowance 0.5 s), and is_snapshot exactly for the fills snapshots brought."""
    con = db(data)
    rows = con.execute("SELECT epoch_us(ts_recv), epoch_us(ts_exchange), is_snapshot "
                       "FROM fills").fetchall()
    for recv, exch, _snap in rows:
        assert started_us <= recv <= ended_us
        assert exch <= recv + 500_000
    from_snapshots = sum(json.loads(r[0])["new"] for r in con.execute(
        "SELECT detail FROM events WHERE kind = 'fills_snapshot'").fetchall())
    assert sum(1 for r in rows if r[2]) == from_snapshots


def _events(data: Path, *kinds: str) -> list[tuple[int, dict]]:
    marks = ", ".join("?" for _ in kinds)
    return [(ts, json.loads(d)) for ts, d in db(data).execute(
        f"SELECT epoch_us(ts_recv), detail FROM events WHERE kind IN ({marks}) "
        "ORDER BY ts_recv", list(kinds)).fetchall()]


def _titles(pid: int) -> list[str]:
    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
        return [" ".join(p.cmdline()) + " " + p.name() for p in procs]
    except psutil.Error:
        return []


def _now_us() -> int:
    return time.time_ns() // 1000


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_fills_and_orders_recorded_value_for_value(tmp_path, api):
    data = tmp_path / "data"
    with _sim() as sim:
        observer = Observer(sim, api)  # subscribed first: it sees all the recorder sees
        cfg = _config(tmp_path, sim, api)
        started = _now_us()
        proc = _start(cfg, data)
        try:
            _wait(lambda: _private_connections(sim, api) == 2, what="private connection")
            # Live order events recorded (queryable from the journal), not a fixed time: on
            # a loaded machine the subscription alone can take seconds.
            _wait(lambda: _order_updates(data) >= 3, timeout=30.0, what="order events")
            titles = _titles(proc.pid)
            _freeze(sim)
        finally:
            out, err = _finish(proc)
            observer.close()
        ended = _now_us()
        truth = _truth(sim, api)
        sim_log = "".join(sim.stderr_lines)
    assert 0 < len(truth) < 50, "the snapshot must hold every fill of the account"
    rows = _recorded(data)
    assert len(rows) == len(set(rows)), "no fill twice"
    assert set(rows) == _expected_fills(api, truth)
    _check_fill_stamps(data, started, ended)

    # orders: the resting orders of the recorder's snapshot, then every order event the
    # simulator sent from the recorder's first one on, value for value.
    recorded = _recorded_orders(data)
    sent = observer.order_rows()
    assert Counter(r for s, r in recorded if s) == Counter(r for s, r in sent if s)
    updates = [r for s, r in recorded if not s]
    assert len(updates) >= 3, "too few order events to compare"
    # Frames read together share ts_recv, so the recorder's first event is found by value.
    first = min(i for i, (s, r) in enumerate(sent) if not s and r in set(updates))
    assert Counter(updates) == Counter(r for s, r in sent[first:] if not s)

    kinds = {r[0] for r in db(data).execute("SELECT DISTINCT kind FROM events").fetchall()}
    assert {"connected", "subscribed", "fills_snapshot", "fills_seeded"} <= kinds
    assert "sequence_gap" not in kinds
    types = dict(db(data).execute(
        "SELECT column_name, column_type FROM (DESCRIBE fills)").fetchall())
    assert types["price"] == "DECIMAL(18,10)" and types["ts_exchange"].startswith("TIMESTAMP")
    assert_clean([out, err, sim_log, *titles], [tmp_path], where="recorder/simulator output")


def test_restart_does_not_record_snapshot_fills_twice(tmp_path):
    data = tmp_path / "data"
    with _sim() as sim:
        cfg = _config(tmp_path, sim, "v2")
        outputs = []
        for run in range(2):
            proc = _start(cfg, data)
            try:
                _wait(lambda: _private_connections(sim, "v2") == 1, what="private connection")
                time.sleep(1.5)
                if run == 1:
                    _freeze(sim)
            finally:
                outputs += _finish(proc)
            _wait(lambda: _private_connections(sim, "v2") == 0, what="disconnect")
            time.sleep(0.5)  # fills while nothing records
        truth = _truth(sim, "v2")
        sim_log = "".join(sim.stderr_lines)
    assert 0 < len(truth) < 50
    rows = _recorded(data)
    assert len(rows) == len(set(rows)), "the second run re-recorded snapshot fills"
    # Fills made between the two runs came back in the second run's snapshot.
    assert set(rows) == _expected_fills("v2", truth)
    assert_clean([*outputs, sim_log], [tmp_path], where="recorder/simulator output")


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_tokens_invalidated_mid_run_fills_continue_none_missing_none_twice(tmp_path, api):
    data = tmp_path / "data"
    # A fixed 2.5 s reconnect delay: each gap is long enough for fills to happen in it,
    # which only the next subscription's snapshot can bring back.
    with _sim(fill_rate="0.08") as sim:
        cfg = _config(tmp_path, sim, api, public=True, backoff=(2.5, 2.5))
        started = _now_us()
        proc = _start(cfg, data)
        try:
            _wait(lambda: _private_connections(sim, api) == 1, what="private connection")
            issued = sim.control.stats()["tokens_issued"]
            time.sleep(1.5)
            # 1. Kraken refuses the session: ESession:Invalid session, connection dropped.
            sim.control.invalidate_tokens(kick=True)
            _wait(lambda: sim.control.stats()["tokens_issued"] > issued, what="new token")
            _wait(lambda: _private_connections(sim, api) == 1, what="reconnect 1")
            time.sleep(1.5)
            # 2. Tokens silently invalidated, then the link drops: the old token is useless.
            issued = sim.control.stats()["tokens_issued"]
            sim.control.invalidate_tokens(kick=False)
            sim.control.drop(endpoint=f"ws_auth_{api}")
            _wait(lambda: sim.control.stats()["tokens_issued"] > issued, what="new token 2")
            _wait(lambda: _private_connections(sim, api) == 1, what="reconnect 2")
            time.sleep(1.5)
            titles = _titles(proc.pid)
            _freeze(sim)
        finally:
            out, err = _finish(proc)
        ended = _now_us()
        truth = _truth(sim, api)
        sim_log = "".join(sim.stderr_lines)
    assert 0 < len(truth) < 50
    rows = _recorded(data)
    assert len(rows) == len(set(rows)), "duplicated fills"
    assert set(rows) == _expected_fills(api, truth), "missing or wrong fills"
    _check_fill_stamps(data, started, ended)
    con = db(data)
    connected = [(ts, d["url"]) for ts, d in _events(data, "connected")]
    private = [ts for ts, url in connected if url == sim.urls[f"ws_auth_{api}"]]
    assert len(private) == 3
    assert [u for _, u in connected].count(sim.urls[f"ws_{api}"]) == 1, (
        "the public connection was disturbed")
    # At most the refusal sent with the kick; a stale token presented on a reconnect would
    # show as another refusal and a fourth connection.
    refusals = [d["error"] for _, d in _events(data, "subscribe_error", "error")]
    assert refusals in ([], ["ESession:Invalid session"])
    assert con.execute("SELECT count(*) FROM trades").fetchone()[0] > 0

    # Snapshot deduplication across the reconnects: each later snapshot re-sent fills
    # already recorded (skipped), and the fills made while disconnected came from it.
    snapshots = [d for _, d in _events(data, "fills_snapshot")]
    assert len(snapshots) == 3
    assert all(s["already_recorded"] > 0 for s in snapshots[1:])
    ended_at = [ts for ts, d in _events(data, "disconnected")
                if d["reason"] != "stop requested"]
    ts_snap = con.execute("SELECT epoch_us(ts_exchange), is_snapshot FROM fills").fetchall()
    in_gaps = [snap for ts, snap in ts_snap
               if any(a < ts < b for a, b in zip(ended_at, private[1:], strict=False))]
    assert in_gaps and all(in_gaps), "fills made during a gap come from the next snapshot"
    assert sum(s["new"] for s in snapshots[1:]) >= len(in_gaps)
    assert_clean([out, err, sim_log, *titles], [tmp_path], where="recorder/simulator output")


def test_wrong_secret_fails_clearly_with_a_nonzero_exit(tmp_path):
    data = tmp_path / "data"
    with _sim() as sim:
        cfg = _config(tmp_path, sim, "v2")
        proc = subprocess.run([sys.executable, "-m", "recorder", "run", str(cfg), "--data",
                               str(data), "--duration", "5"], cwd=ROOT, env=_env(WRONG_SECRET),
                              capture_output=True, text=True, timeout=30)
        sim_log = "".join(sim.stderr_lines)
    assert proc.returncode != 0
    assert "EAPI:Invalid signature" in " ".join(proc.stderr.split())  # rich wraps lines
    assert_clean([proc.stdout, proc.stderr, sim_log], [tmp_path], where="output")


def test_wrong_secret_is_one_line_not_a_traceback(tmp_path):
    with _sim() as sim:
        cfg = _config(tmp_path, sim, "v2", public=True)
        proc = subprocess.run([sys.executable, "-m", "recorder", "run", str(cfg), "--data",
                               str(tmp_path / "data"), "--duration", "3"], cwd=ROOT,
                              env=_env(WRONG_SECRET), capture_output=True, text=True,
                              timeout=30)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Kraken refused the request signature" in errors[0]
    assert "Traceback" not in proc.stderr
    assert_clean([proc.stdout, proc.stderr], [tmp_path], where="output")


def test_token_command_against_the_simulator(tmp_path):
    target = tmp_path / "WS_Token"
    with _sim() as sim:
        cfg = _config(tmp_path, sim, "v2")
        proc = subprocess.run([sys.executable, "-m", "recorder", "token", str(cfg), "--write",
                               str(target)], cwd=ROOT, env=_env(), capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        token = target.read_text()
        assert oct(target.stat().st_mode & 0o777) == "0o600"
        # The token works: the simulator accepts it for a private subscription.
        ws = websocket.create_connection(sim.urls["ws_auth_v2"], timeout=5)
        try:
            ws.send(json.dumps({"method": "subscribe", "params": {
                "channel": "executions", "token": token}}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("method") == "subscribe":
                    break
        finally:
            ws.close()
        assert msg["success"] is True
    assert_clean([proc.stdout, proc.stderr], [tmp_path], where="output")




@pytest.mark.parametrize("api", ["v1", "v2"])
def test_key_revoked_mid_run_stops_only_the_private_collector_clearly(tmp_path, api):
    data = tmp_path / "data"
    with _sim() as sim:
        rest = RevokingRest(sim.urls["rest"])
        try:
            cfg = _config(tmp_path, sim, api, public=True)
            cfg.write_text(cfg.read_text().replace(sim.urls["rest"], rest.url))
            proc = _start(cfg, data)
            try:
                _wait(lambda: _private_connections(sim, api) == 1, what="private connection")
                # Revoked mid-run, after the supervisor counts the collectors as up (a
                # refusal within the start-up grace stops the whole job, as a bad key does).
                _wait(lambda: {s["role"]: s["state"] for s in read_states(data)}
                      == {"public": "running", "private": "running"}, timeout=20,
                      what="both collectors running")
                rest.revoked = True
                sim.control.invalidate_tokens(kick=True)  # the reconnect needs a new token
                # The private collector stops for good; the public one keeps recording.
                _wait(lambda: _events(data, "collector_failed"), timeout=30,
                      what="collector_failed")
                trades = db(data).execute("SELECT count(*) FROM trades").fetchone()[0]
                _wait(lambda: db(data).execute("SELECT count(*) FROM trades").fetchone()[0]
                      > trades, timeout=15, what="public trades after the failure")
                assert proc.poll() is None, "the job must keep its public collector"
            finally:
                out, err = _finish(proc, expect=2)
        finally:
            rest.close()
        sim_log = "".join(sim.stderr_lines)
    assert rest.refused == 3, "three refusals in a row, then no more token requests"
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "EAPI:Invalid key" in errors[0], err[-2000:]
    assert "refused 3 times in a row" in errors[0] and "Traceback" not in err
    con = db(data)
    kinds = [r[0] for r in con.execute("SELECT kind FROM events ORDER BY ts_recv").fetchall()]
    assert kinds.count("connect_failed") == 3
    assert kinds.count("credentials_refused") == 1 and "collector_failed" in kinds
    failed = _events(data, "credentials_refused")[0][1]
    assert failed["refusals"] == 3 and "EAPI:Invalid key" in failed["error"]
    assert con.execute("SELECT count(*) FROM trades").fetchone()[0] > 0
    assert_clean([out, err, sim_log], [tmp_path], where="recorder/simulator output")


def _v2_fill(n: int) -> dict:
    return {"order_id": f"OGAP{n:02d}-AAAAA-BBBBBB", "order_userref": 0,
            "exec_id": f"EGAP{n:02d}-CCCCC-DDDDDD", "exec_type": "trade", "trade_id": 9000 + n,
            "symbol": "BTC/USD", "side": "buy", "last_qty": 0.001, "last_price": 60000 + n,
            "liquidity_ind": "t", "cost": 60.0 + n / 1000, "order_status": "filled",
            "order_type": "market", "timestamp": f"2026-01-02T03:04:0{n}.000001Z",
            "fee_usd_equiv": 0.1, "fees": [{"asset": "USD", "qty": 0.1}]}


def test_sequence_gap_resubscribes_and_the_snapshot_catches_up(tmp_path):
    # The simulator never skips a sequence number, so a small private v2 endpoint of the
    # test's own does: fills 1, 2 (snapshot), 3, then 5 with 4 lost; after the resubscribe,
    # a snapshot of 1-5. Tokens come from the FakeKraken REST (sentinel credentials).
    from websockets.sync.server import serve

    from tests.fakes import FakeKraken

    fills = [_v2_fill(n) for n in range(1, 6)]
    served: list[str] = []
    tokens: list[str] = []

    def frame(kind: str, data: list[dict], seq: int) -> str:
        return json.dumps({"channel": "executions", "type": kind, "data": data,
                           "sequence": seq})

    def handler(ws) -> None:
        req = json.loads(ws.recv())
        tokens.append(req["params"]["token"])
        ws.send(json.dumps({"method": "subscribe", "success": True, "req_id": req.get("req_id"),
                            "result": {"channel": "executions"}}))
        if not served:
            for text in (frame("snapshot", fills[:2], 1), frame("update", fills[2:3], 2),
                         frame("update", fills[4:5], 4)):
                ws.send(text)
        else:
            ws.send(frame("snapshot", fills, 1))
        served.append("snapshot")
        try:
            while True:  # heartbeats until the recorder hangs up
                ws.send('{"channel":"heartbeat"}')
                time.sleep(0.5)
        except Exception:  # noqa: BLE001 - the recorder closed the connection
            return

    data = tmp_path / "data"
    with FakeKraken() as kraken, serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        cfg = tmp_path / "gap.toml"
        cfg.write_text(f'[exchange]\nname = "kraken"\napi = "v2"\n'
                       f'auth_url = "ws://127.0.0.1:{port}"\nrest_url = "{kraken.url}"\n'
                       '[connection]\nbackoff_initial = 0.2\nbackoff_max = 1\n'
                       '[credentials]\napi_key_env = "TRADER_KEY"\n'
                       'api_secret_env = "TRADER_SECRET"\n[[subscribe]]\nchannel = "fills"\n')
        proc = _start(cfg, data)
        try:
            _wait(lambda: len(served) == 2, what="the resubscription")
            time.sleep(1.0)
        finally:
            out, err = _finish(proc)
            server.shutdown()
    assert len(tokens) == 2 and len(set(tokens)) == 2, "a fresh token for the resubscribe"
    rows = db(data).execute("SELECT trade_id, exec_id, is_snapshot FROM fills "
                            "ORDER BY trade_id").fetchall()
    assert rows == [("9001", "EGAP01-CCCCC-DDDDDD", True), ("9002", "EGAP02-CCCCC-DDDDDD", True),
                    ("9003", "EGAP03-CCCCC-DDDDDD", False),
                    ("9004", "EGAP04-CCCCC-DDDDDD", True),  # the lost one, caught up
                    ("9005", "EGAP05-CCCCC-DDDDDD", False)]
    (gap,) = [d for _, d in _events(data, "sequence_gap")]
    assert gap == {"expected": 3, "got": 4, "missed": 1}
    snapshots = [d for _, d in _events(data, "fills_snapshot")]
    assert snapshots == [{"received": 2, "new": 2, "already_recorded": 0},
                         {"received": 5, "new": 1, "already_recorded": 4}]
    assert_clean([out, err], [tmp_path], where="recorder output")
