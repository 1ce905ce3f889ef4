"""End to end: own fills survive any outage, on Kraken and on KuCoin.

`recorder run` and the simulators as real processes, with the session's sentinel credentials
(tests/sentinel.py). The simulators keep trading while the recorder is disconnected or
stopped, fast enough (about 30 fills a second) that a 3 s outage holds more fills than
Kraken's subscription snapshot (50): only the REST history (reconciliation) can bring those
back, and KuCoin sends no snapshot at all.

Truth is the simulator's own account, read at the end through its REST history with this
test's own signed client: every fill made while the job ran (from the start of its first
reconciliation on: the job's start) must be recorded exactly once, field for field; nothing
the account does not have may be.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from recorder.capture.supervisor import read_states
from recorder.core.secrets import Credentials
from recorder.exchanges.reconcile import parse_iso_us
from recorder.simulator.testing import SimulatorProcess
from tests.e2e import ROOT, db
from tests.sentinel import (
    SENTINEL_KEY,
    SENTINEL_PASSPHRASE,
    SENTINEL_SECRET,
    WRONG_PASSPHRASE,
    WRONG_SECRET,
    assert_clean,
)

pytestmark = pytest.mark.e2e

KEY, SECRET, PASSPHRASE = SENTINEL_KEY, SENTINEL_SECRET, SENTINEL_PASSPHRASE
OUTAGE = 4.0  # seconds: the private reconnect delay (fixed backoff)


# -- helpers ----------------------------------------------------------------------------------


def _wait(predicate, timeout: float = 40.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRAKEN_", "KUCOIN_", "T_"))}
    env.update(values)
    return env


def _start(cfg: Path, data: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recorder", "run", str(cfg), "--data",
                             str(data)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, expect: int = 0) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=25)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == expect, f"exit {proc.returncode}; stderr tail: {err[-3000:]}"
    return out, err


def _events(data: Path, kind: str) -> list[dict]:
    con = db(data)
    try:
        return [json.loads(d) for (d,) in con.execute(
            "SELECT detail FROM events WHERE kind = ? ORDER BY ts_recv", [kind]).fetchall()]
    finally:
        con.close()


def _query(data: Path, sql: str) -> list[tuple]:
    con = db(data)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _reconciled(data: Path, n: int, what: str) -> list[dict]:
    return _wait(lambda: (lambda e: e if len(e) >= n else None)(_events(data, "fills_reconciled")),
                 what=what)


def _check_exactly_once(rows: list[tuple], truth: dict[tuple, tuple], since_us: int,
                        until_us: int) -> None:
    """``rows``: (key, values...) recorded; ``truth``: key -> (time_us, values...)."""
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys)), "a fill recorded twice"
    unknown = set(keys) - set(truth)
    assert not unknown, f"{len(unknown)} recorded fills the account does not have"
    due = {k for k, v in truth.items() if since_us <= v[0] <= until_us}
    missing = due - set(keys)
    assert not missing, f"{len(missing)} of {len(due)} fills missing"


# -- Kraken -----------------------------------------------------------------------------------


def _kraken_history(rest: str) -> dict[str, dict]:
    """Every fill of the simulator's account: TradesHistory, all pages, by TXID."""
    from recorder.exchanges.kraken.rest import PrivateClient

    client = PrivateClient(rest, Credentials(KEY, SECRET, "test"))
    out: dict[str, dict] = {}
    ofs = 0
    while True:
        result = client.call("TradesHistory", {"ofs": str(ofs)}, exact=True)
        out.update(result["trades"])
        ofs += len(result["trades"])
        if not result["trades"] or ofs >= result["count"]:
            return out


def _kraken_config(tmp: Path, sim: SimulatorProcess, api: str) -> Path:
    path = tmp / "kraken-fills.toml"
    path.write_text(f'[exchange]\nname = "kraken"\napi = "{api}"\n'
                    f'auth_url = "{sim.urls["ws_auth_" + api]}"\nrest_url = "{sim.urls["rest"]}"\n'
                    f'[connection]\nbackoff_initial = {OUTAGE}\nbackoff_max = {OUTAGE}\n'
                    '[credentials]\napi_key_env = "T_KEY"\napi_secret_env = "T_SECRET"\n'
                    '[[subscribe]]\nchannel = "fills"\n')
    return path


def _kraken_private(sim: SimulatorProcess, api: str) -> int:
    return sim.control.stats()["connections_by_endpoint"].get(f"ws_auth_{api}", 0)


def _kraken_sim() -> SimulatorProcess:
    # About 21 fills a second: a 4 s outage holds more than a snapshot's 50.
    return SimulatorProcess(["--seed", "21", "--rate", "100", "--fill-rate", "0.7"],
                            capture_stderr=True, api_key=KEY, api_secret=SECRET)


def _check_kraken_fills(data: Path, history: dict[str, dict], api: str, job_start: int) -> None:
    """Every fill of the account since ``job_start`` once, field for field, whichever way it
    came (live, snapshot, REST)."""
    # v2: Kraken's trade id, and the TXID as the execution id; v1: the TXID is the trade id.
    key = "exec_id" if api == "v2" else "trade_id"
    rows = _query(data, f"SELECT {key}, symbol, epoch_us(ts_exchange), order_id, trade_id, "
                        "side, price, qty, cost, fee, fee_currency, ord_type, exec_id, "
                        "liquidity FROM fills")
    truth = {}
    for txid, t in history.items():
        sec, _, frac = t["time"].partition(".")
        ts = int(sec) * 1_000_000 + int((frac + "000000")[:6])
        symbol = {"XXBTZUSD": "BTC/USD", "XETHZUSD": "ETH/USD"}[t["pair"]]
        truth[txid] = (ts, symbol, ts, t["ordertxid"],
                       str(t["trade_id"]) if api == "v2" else txid, t["type"],
                       Decimal(t["price"]), Decimal(t["vol"]), Decimal(t["cost"]),
                       Decimal(t["fee"]), symbol.split("/")[1], t["ordertype"],
                       txid if api == "v2" else None)
    _check_exactly_once(rows, truth, job_start, 2**62)
    assert all(tuple(r[1:-1]) == truth[r[0]][1:] for r in rows)
    # The v1 stream does not say maker or taker; TradesHistory does.
    liquidity = {r[-1] for r in rows}
    assert liquidity == ({"maker"} if api == "v2" else {None, "maker"})


def test_kraken_every_fill_once_across_invalidation_cut_outage_and_restart(tmp_path):
    api = "v2"
    data = tmp_path / "data"
    env = _env(T_KEY=KEY, T_SECRET=SECRET)
    outputs: list[str] = []
    with _kraken_sim() as sim:
        cfg = _kraken_config(tmp_path, sim, api)
        launched = time.time_ns() // 1000
        proc = _start(cfg, data, env)
        try:
            _reconciled(data, 1, "the start-up reconciliation")
            # 1. Kraken refuses the session (ESession:Invalid session) and drops the link.
            issued = sim.control.stats()["tokens_issued"]
            sim.control.invalidate_tokens(kick=True)
            _wait(lambda: sim.control.stats()["tokens_issued"] > issued, what="a new token")
            _reconciled(data, 2, "the reconciliation after the invalidation")
            # 2. A forced cut: about 85 fills happen in the 4 s before the reconnect, more
            # than the next subscription's snapshot (50) holds.
            sim.control.drop(endpoint=f"ws_auth_{api}")
            _wait(lambda: _kraken_private(sim, api) == 0, what="the cut")
            _reconciled(data, 3, "the reconciliation after the outage")
        finally:
            outputs += _finish(proc)
        # 3. Stopped: the account trades on with nothing recording, long enough for more
        # fills than the next start's snapshot holds (about 21 a second).
        time.sleep(3.5)
        proc = _start(cfg, data, env)
        try:
            _reconciled(data, 4, "the reconciliation at the restart")
            time.sleep(1.0)
            sim.control.set_status("maintenance")  # no more fills: the account is final
            time.sleep(1.0)
        finally:
            outputs += _finish(proc)
        history = _kraken_history(sim.urls["rest"])
        sim_fills = sim.control.stats()["fills"]
        sim_log = "".join(sim.stderr_lines)
    assert len(history) == sim_fills  # the truth is the whole account

    reconciled = _events(data, "fills_reconciled")
    assert [r["trigger"] for r in reconciled[:4]] == ["start", "reconnect", "reconnect",
                                                      "start"]
    job_start = parse_iso_us(reconciled[0]["since"])
    assert launched <= job_start, "the first reconciliation reaches back no further than the job"
    outage = reconciled[2]
    assert outage["new"] > 0, "fills beyond the snapshot's 50 came from TradesHistory"
    snapshots = _events(data, "fills_snapshot")
    assert any(s["received"] == 50 and s["new"] == 50 for s in snapshots), (
        "the snapshot after the outage was full of new fills")
    # The restart continued where the first run left off (its stream covered everything up
    # to the stop).
    (stopped, _) = _events(data, "reconcile_stopped")
    assert reconciled[3]["since"] == stopped["cursor"] and stopped["caught_up"] is True
    assert reconciled[3]["new"] > 0, "fills made while stopped, beyond the snapshot's 50"
    assert _events(data, "reconcile_failed") == []

    _check_kraken_fills(data, history, api, job_start)
    assert_clean([*outputs, sim_log], [tmp_path], where="recorder/simulator output")


def test_kraken_v1_fills_beyond_the_snapshot_come_from_trades_history(tmp_path):
    data = tmp_path / "data"
    with _kraken_sim() as sim:
        cfg = _kraken_config(tmp_path, sim, "v1")
        proc = _start(cfg, data, _env(T_KEY=KEY, T_SECRET=SECRET))
        try:
            _reconciled(data, 1, "the start-up reconciliation")
            sim.control.drop(endpoint="ws_auth_v1")
            _wait(lambda: _kraken_private(sim, "v1") == 0, what="the cut")
            _reconciled(data, 2, "the reconciliation after the outage")
            sim.control.set_status("maintenance")
            time.sleep(1.0)
        finally:
            out, err = _finish(proc)
        history = _kraken_history(sim.urls["rest"])
        sim_log = "".join(sim.stderr_lines)
    start, outage = _events(data, "fills_reconciled")[:2]
    assert outage["trigger"] == "reconnect" and outage["new"] > 0
    assert any(s["received"] == 50 and s["new"] == 50 for s in _events(data, "fills_snapshot"))
    _check_kraken_fills(data, history, "v1", parse_iso_us(start["since"]))
    assert_clean([out, err, sim_log], [tmp_path], where="recorder/simulator output")


# -- KuCoin -----------------------------------------------------------------------------------

_KC_CREDENTIALS = ('[credentials]\napi_key_env = "T_KC_KEY"\napi_secret_env = "T_KC_SECRET"\n'
                   'api_passphrase_env = "T_KC_PASS"\n')


def _kucoin_sim(*more: str) -> SimulatorProcess:
    return SimulatorProcess(["--seed", "23", "--rate", "100", *more], exchange="kucoin",
                            capture_stderr=True, api_key=KEY, api_secret=SECRET,
                            api_passphrase=PASSPHRASE)


def _kucoin_config(tmp: Path, sim: SimulatorProcess, public: bool = False,
                   backoff: tuple[float, float] = (OUTAGE, OUTAGE)) -> Path:
    path = tmp / "kucoin-fills.toml"
    text = (f'[exchange]\nname = "kucoin"\nrest_url = "{sim.urls["rest"]}"\n'
            f'[connection]\nbackoff_initial = {backoff[0]}\nbackoff_max = {backoff[1]}\n'
            f'{_KC_CREDENTIALS}[[subscribe]]\nchannel = "fills"\n')
    if public:
        text += '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USDT", "ETH/USDT"]\n'
    path.write_text(text)
    return path


def _kucoin_env(key: str = KEY, secret: str = SECRET, passphrase: str = PASSPHRASE) -> dict:
    return _env(T_KC_KEY=key, T_KC_SECRET=secret, T_KC_PASS=passphrase)


def _kucoin_history(rest: str) -> list[dict]:
    """Every fill of the simulator's account in the last week: /api/v1/fills, all pages."""
    from recorder.simulator.kucoin.client import KucoinClient

    client = KucoinClient(rest, KEY, SECRET, PASSPHRASE)
    items, page = [], 1
    while True:
        status, body = client.get("/api/v1/fills", signed=True, currentPage=page,
                                  pageSize=500)
        assert status == 200 and body["code"] == "200000", body.get("code")
        items += body["data"]["items"]
        if page >= body["data"]["totalPage"]:
            return items
        page += 1


def _kucoin_private(sim: SimulatorProcess) -> int:
    return sim.control.stats()["private_connections"]


def test_kucoin_every_fill_once_across_invalidation_cut_outage_and_restart(tmp_path):
    data = tmp_path / "data"
    env = _kucoin_env()
    outputs: list[str] = []
    with _kucoin_sim("--fill-rate", "1") as sim:
        cfg = _kucoin_config(tmp_path, sim)
        launched = time.time_ns() // 1000
        proc = _start(cfg, data, env)
        try:
            _reconciled(data, 1, "the start-up reconciliation")
            # 1. Tokens invalidated, then the connection refused and cut: only a fresh
            # bullet opens the next one.
            issued = sim.control.stats()["tokens_issued"]
            sim.control.invalidate_tokens()
            sim.control.drop(private=True, mode="eof")
            _wait(lambda: sim.control.stats()["tokens_issued"] > issued, what="a new bullet")
            _reconciled(data, 2, "the reconciliation after the invalidation")
            # 2. A forced cut with a 3 s outage (about 90 fills; KuCoin resends none).
            sim.control.drop(private=True)
            _wait(lambda: _kucoin_private(sim) == 0, what="the cut")
            _reconciled(data, 3, "the reconciliation after the outage")
        finally:
            outputs += _finish(proc)
        time.sleep(2.0)  # stopped: the account trades on
        proc = _start(cfg, data, env)
        try:
            _reconciled(data, 4, "the reconciliation at the restart")
            time.sleep(1.5)
            # The simulator never stops trading: compare up to a moment the private stream
            # was surely live (the stop takes the connection down after it).
            last_live = time.time_ns() // 1000 - 300_000
        finally:
            outputs += _finish(proc)
        history = _kucoin_history(sim.urls["rest"])
        sim_log = "".join(sim.stderr_lines)

    reconciled = _events(data, "fills_reconciled")
    assert [r["trigger"] for r in reconciled[:4]] == ["start", "reconnect", "reconnect",
                                                      "start"]
    job_start = parse_iso_us(reconciled[0]["since"])
    assert launched <= job_start, "the first reconciliation reaches back no further than the job"
    assert reconciled[2]["new"] > 50, "the outage's fills came from the REST history"
    (stopped, _) = _events(data, "reconcile_stopped")
    assert reconciled[3]["since"] == stopped["cursor"]
    assert reconciled[3]["new"] > 0, "the fills made while stopped"
    assert _events(data, "reconcile_failed") == []

    rows = _query(data, "SELECT symbol || ' ' || trade_id || ' ' || order_id, epoch_us("
                        "ts_exchange), side, price, qty, liquidity, ord_type, cost, fee, "
                        "fee_currency FROM fills")
    truth = {}
    for i in history:
        key = f"{i['symbol'].replace('-', '/')} {i['tradeId']} {i['orderId']}"
        truth[key] = (i["createdAt"] * 1000, i["side"], Decimal(i["price"]),
                      Decimal(i["size"]), i["liquidity"], i["type"], Decimal(i["funds"]),
                      Decimal(i["fee"]), i["feeCurrency"])
    _check_exactly_once(rows, truth, job_start, last_live)
    live = rest = 0
    for key, ts, side, price, qty, liquidity, kind, cost, fee, fee_ccy in rows:
        t = truth[key]
        assert (ts // 1000 * 1000, side, price, qty, liquidity, kind) == (t[0], *t[1:6])
        assert cost is None or cost == t[6]
        if fee_ccy is None:  # from the WebSocket: KuCoin's push has no fee
            live += 1
            assert fee is None
        else:  # from the REST history (a fee with more than 10 decimals cannot be kept)
            rest += 1
            assert fee_ccy == t[8] and (fee is None or fee == t[7])
    assert live > 0 and rest > 50
    # Order changes: every push of the recorded connections, fills' matches included.
    orders = _query(data, "SELECT exec_type, count(*) FROM orders GROUP BY 1")
    assert {"received", "match", "filled"} <= {k for k, _ in orders}
    assert_clean([*outputs, sim_log], [tmp_path], where="recorder/simulator output")


@pytest.mark.parametrize("wrong, version, says, public", [
    ("passphrase", 2, "400004", True),
    ("key", 2, "400003", False),
    # A version 1 key sends its passphrase plain: only the signature shows a wrong secret.
    # (With 2 and 3 the passphrase is signed with the secret: 400004, naming both.)
    ("secret", 1, "400005", True),
    ("secret", 3, "400004", False),
])
def test_kucoin_wrong_credential_stops_start_up_with_one_line(tmp_path, wrong, version, says,
                                                              public):
    creds = {"key": KEY, "secret": SECRET, "passphrase": PASSPHRASE}
    creds[wrong] = {"key": "SENTINEL-KEY-unknown", "secret": WRONG_SECRET,
                    "passphrase": WRONG_PASSPHRASE}[wrong]
    with _kucoin_sim() as sim:
        sim.control.key(version=version)
        cfg = _kucoin_config(tmp_path, sim, public=public)
        cfg.write_text(cfg.read_text().replace("[credentials]\n",
                                               f"[credentials]\nkey_version = {version}\n"))
        proc = subprocess.run([sys.executable, "-m", "recorder", "run", str(cfg), "--data",
                               str(tmp_path / "data"), "--duration", "10"], cwd=ROOT,
                              env=_kucoin_env(**creds), capture_output=True, text=True,
                              timeout=60)
        sim_log = "".join(sim.stderr_lines)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    names = {"key": "T_KC_KEY", "secret": "T_KC_SECRET", "passphrase": "T_KC_PASS"}
    assert says in errors[0] and names[wrong] in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
    assert_clean([proc.stdout, proc.stderr, sim_log], [tmp_path], where="output")


def test_kucoin_key_revoked_mid_run_stops_only_the_private_collector(tmp_path):
    data = tmp_path / "data"
    with _kucoin_sim("--fill-rate", "0.2") as sim:
        cfg = _kucoin_config(tmp_path, sim, public=True, backoff=(0.2, 1.0))
        proc = _start(cfg, data, _kucoin_env())
        try:
            _reconciled(data, 1, "the start-up reconciliation")
            _wait(lambda: {s["role"]: s["state"] for s in read_states(data)}
                  == {"public": "running", "private": "running"}, timeout=20,
                  what="both collectors running")
            sim.control.key(access_denied=True)  # the key loses its permission: 400007
            sim.control.drop(private=True)  # the reconnect needs a new bullet
            _wait(lambda: _events(data, "collector_failed"), timeout=30,
                  what="collector_failed")
            trades = _query(data, "SELECT count(*) FROM trades")[0][0]
            _wait(lambda: _query(data, "SELECT count(*) FROM trades")[0][0] > trades,
                  timeout=15, what="public trades after the failure")
            assert proc.poll() is None, "the job must keep its public collector"
        finally:
            out, err = _finish(proc, expect=2)
        sim_log = "".join(sim.stderr_lines)
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "400007" in errors[0], err[-2000:]
    assert "refused 3 times in a row" in errors[0] and "Traceback" not in err
    kinds = [k for (k,) in _query(data, "SELECT kind FROM events ORDER BY ts_recv")]
    assert kinds.count("credentials_refused") == 1 and "collector_failed" in kinds
    assert_clean([out, err, sim_log], [tmp_path], where="recorder/simulator output")
