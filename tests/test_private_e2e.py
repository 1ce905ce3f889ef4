"""End to end: own fills recorded from the simulator's private WebSocket by `recorder run`.

The simulator's account runs with a sentinel key pair; every test checks that the sentinel
secret shows up in no output, no file and no process title.

Truth comes from the simulator itself, after the recording: the account's last 50 fills in
a fresh snapshot taken by this test's own client. The simulator is started per test, with a
low fill rate, so that this snapshot holds *every* fill of its life (asserted).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import websocket

from recorder.simulator.testing import SimulatorProcess
from recorder.token import TokenHelper
from tests.e2e import db

ROOT = Path(__file__).resolve().parents[1]
SENTINEL_SECRET = base64.b64encode(b"SENTINEL-secret-market-recorder-0123456789-xyz").decode()
SENTINEL_KEY = "SENTINEL-KEY-market-recorder"
WRONG_SECRET = base64.b64encode(b"a-wrong-secret-for-the-sentinel-key-0000000000").decode()
SECRETS = (SENTINEL_SECRET, WRONG_SECRET)


# -- helpers ---------------------------------------------------------------------------------


def _sim(*more: str) -> SimulatorProcess:
    return SimulatorProcess(["--seed", "5", "--rate", "100", "--fill-rate", "0.05",
                             "--api-key", SENTINEL_KEY, "--api-secret", SENTINEL_SECRET,
                             *more], capture_stderr=True)


def _config(tmp: Path, sim: SimulatorProcess, api: str, public: bool = False) -> Path:
    path = tmp / f"private-{api}.toml"
    text = (f'[exchange]\nname = "kraken"\napi = "{api}"\nurl = "{sim.urls["ws_" + api]}"\n'
            f'auth_url = "{sim.urls["ws_auth_" + api]}"\nrest_url = "{sim.urls["rest"]}"\n'
            '[connection]\nbackoff_initial = 0.2\nbackoff_max = 1\n'
            '[credentials]\napi_key_env = "TRADER_KEY"\napi_secret_env = "TRADER_SECRET"\n'
            '[[subscribe]]\nchannel = "fills"\n')
    if public:
        text += '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD", "ETH/USD"]\n'
    path.write_text(text)
    return path


def _env(secret: str = SENTINEL_SECRET) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRAKEN_", "TRADER_"))}
    env.update(TRADER_KEY=SENTINEL_KEY, TRADER_SECRET=secret)
    return env


def _start(cfg: Path, data: Path, secret: str = SENTINEL_SECRET, *more: str
           ) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recorder", "run", str(cfg), "--data",
                             str(data), *more], cwd=ROOT, env=_env(secret),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return out, err


def _wait(predicate, timeout: float = 10.0, what: str = "condition") -> None:
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


def _truth(sim: SimulatorProcess, api: str) -> list[dict]:
    """The account's fills, from a fresh snapshot, as plain dicts of wire text."""
    token = TokenHelper(sim.urls["rest"], SENTINEL_KEY, SENTINEL_SECRET).fresh()
    ws = websocket.create_connection(sim.urls[f"ws_auth_{api}"], timeout=5)
    try:
        if api == "v1":
            ws.send(json.dumps({"event": "subscribe", "subscription": {
                "name": "ownTrades", "token": token, "snapshot": True}}))
        else:
            ws.send(json.dumps({"method": "subscribe", "params": {
                "channel": "executions", "token": token, "snap_trades": True,
                "snap_orders": False}}))
        while True:
            msg = json.loads(ws.recv(), parse_float=str)
            if api == "v1" and isinstance(msg, list) and msg[-2] == "ownTrades":
                return [{"trade_id": txid, **t} for e in msg[0] for txid, t in e.items()]
            if api == "v2" and isinstance(msg, dict) and msg.get("channel") == "executions":
                return [e for e in msg["data"] if e.get("exec_type") == "trade"]
    finally:
        ws.close()


def _epoch_us(text: str) -> int:
    if "T" in text:
        from datetime import datetime

        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 10**6)
    return int(Decimal(text) * 1_000_000)


def _expected(api: str, truth: list[dict]) -> set[tuple]:
    out = set()
    for t in truth:
        if api == "v1":
            out.add((t["trade_id"], t["ordertxid"], t["pair"].replace("XBT", "BTC"),
                     t["type"], Decimal(t["price"]), Decimal(t["vol"]), Decimal(t["cost"]),
                     Decimal(t["fee"]), t["ordertype"], _epoch_us(t["time"])))
        else:
            fee = t["fees"][0]
            out.add((str(t["trade_id"]), t["order_id"], t["symbol"], t["side"],
                     Decimal(t["last_price"]), Decimal(t["last_qty"]), Decimal(t["cost"]),
                     Decimal(fee["qty"]), t["order_type"], _epoch_us(t["timestamp"])))
    return out


def _recorded(data: Path) -> list[tuple]:
    return db(data).execute(
        "SELECT trade_id, order_id, symbol, side, price, qty, cost, fee, ord_type, "
        "epoch_us(ts_exchange) FROM fills").fetchall()


def _assert_no_secret(texts: list[str], *dirs: Path) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
    for d in dirs:
        for path in d.rglob("*"):
            if path.is_file():
                raw = path.read_bytes()
                for secret in SECRETS:
                    assert secret.encode() not in raw, path
                if path.suffix == ".parquet":
                    meta = pq.read_metadata(path).metadata or {}
                    blob = b" ".join(k + b"=" + v for k, v in meta.items())
                    assert all(s.encode() not in blob for s in SECRETS), path
        if (d / "fills").exists() or (d / "events").exists():
            con = db(d)
            for table in ("fills", "orders", "events"):
                cols = [r[0] for r in con.execute(
                    f"SELECT column_name FROM (DESCRIBE {table}) "
                    "WHERE column_type = 'VARCHAR'").fetchall()]
                for col in cols:
                    for secret in SECRETS:
                        n = con.execute(f"SELECT count(*) FROM {table} WHERE "
                                        f"contains({col}, ?)", [secret]).fetchone()[0]
                        assert n == 0, (table, col)


def _titles(pid: int) -> list[str]:
    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
        return [" ".join(p.cmdline()) for p in procs]
    except psutil.Error:
        return []


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_fills_recorded_value_for_value(tmp_path, api):
    data = tmp_path / "data"
    with _sim() as sim:
        cfg = _config(tmp_path, sim, api)
        proc = _start(cfg, data)
        try:
            _wait(lambda: _private_connections(sim, api) == 1, what="private connection")
            time.sleep(2.5)
            titles = _titles(proc.pid)
            _freeze(sim)
        finally:
            out, err = _finish(proc)
        truth = _truth(sim, api)
        sim_log = "".join(sim.stderr_lines)
    assert 0 < len(truth) < 50, "the snapshot must hold every fill of the account"
    rows = _recorded(data)
    assert len(rows) == len(set(rows)), "no fill twice"
    assert set(rows) == _expected(api, truth)
    con = db(data)
    assert con.execute("SELECT count(*) FROM orders").fetchone()[0] > 0
    kinds = {r[0] for r in con.execute("SELECT DISTINCT kind FROM events").fetchall()}
    assert {"connected", "subscribed", "fills_snapshot", "fills_seeded"} <= kinds
    assert "sequence_gap" not in kinds
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE fills)").fetchall())
    assert types["price"] == "DECIMAL(18,10)" and types["ts_exchange"].startswith("TIMESTAMP")
    _assert_no_secret([out, err, sim_log, *titles], tmp_path)


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
    assert set(rows) == _expected("v2", truth)
    _assert_no_secret([*outputs, sim_log], tmp_path)


def test_tokens_invalidated_mid_run_fills_continue_none_missing_none_twice(tmp_path):
    data = tmp_path / "data"
    with _sim() as sim:
        cfg = _config(tmp_path, sim, "v2", public=True)
        proc = _start(cfg, data)
        try:
            _wait(lambda: _private_connections(sim, "v2") == 1, what="private connection")
            issued = sim.control.stats()["tokens_issued"]
            time.sleep(1.0)
            # 1. Kraken refuses the session: ESession:Invalid session, connection dropped.
            sim.control.invalidate_tokens(kick=True)
            _wait(lambda: sim.control.stats()["tokens_issued"] > issued, what="new token")
            _wait(lambda: _private_connections(sim, "v2") == 1, what="reconnect 1")
            time.sleep(1.0)
            # 2. Tokens silently invalidated, then the link drops: the old token is useless.
            issued = sim.control.stats()["tokens_issued"]
            sim.control.invalidate_tokens(kick=False)
            sim.control.drop(endpoint="ws_auth_v2")
            _wait(lambda: sim.control.stats()["tokens_issued"] > issued, what="new token 2")
            _wait(lambda: _private_connections(sim, "v2") == 1, what="reconnect 2")
            time.sleep(1.0)
            titles = _titles(proc.pid)
            _freeze(sim)
        finally:
            out, err = _finish(proc)
        truth = _truth(sim, "v2")
        sim_log = "".join(sim.stderr_lines)
    assert 0 < len(truth) < 50
    rows = _recorded(data)
    assert len(rows) == len(set(rows)), "duplicated fills"
    assert set(rows) == _expected("v2", truth), "missing or wrong fills"
    con = db(data)
    connected = [json.loads(r[0])["url"] for r in con.execute(
        "SELECT detail FROM events WHERE kind = 'connected'").fetchall()]
    assert connected.count(sim.urls["ws_auth_v2"]) == 3
    assert connected.count(sim.urls["ws_v2"]) == 1, "the public connection was disturbed"
    # At most the refusal sent with the kick; a stale token presented on a reconnect would
    # show as another refusal and a fourth connection.
    refusals = [json.loads(r[0])["error"] for r in con.execute(
        "SELECT detail FROM events WHERE kind = 'subscribe_error'").fetchall()]
    assert refusals in ([], ["ESession:Invalid session"])
    assert con.execute("SELECT count(*) FROM trades").fetchone()[0] > 0
    _assert_no_secret([out, err, sim_log, *titles], tmp_path)


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
    _assert_no_secret([proc.stdout, proc.stderr, sim_log], tmp_path)


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
    _assert_no_secret([proc.stdout, proc.stderr], tmp_path)


def test_token_command_against_the_simulator(tmp_path):
    target = tmp_path / "WS_Token"
    with _sim() as sim:
        cfg = _config(tmp_path, sim, "v2")
        run = "import typer\nfrom recorder.token_cli import token\ntyper.run(token)\n"
        proc = subprocess.run([sys.executable, "-c", run, str(cfg), "--write", str(target)],
                              cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=30)
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
    _assert_no_secret([proc.stdout, proc.stderr], tmp_path)
