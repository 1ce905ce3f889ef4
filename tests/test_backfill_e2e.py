"""Gaps in trades repaired from the exchange's REST trade history, end to end: the
simulators keep trading while the recorder is cut off, and every trade they made is in
``trades`` afterwards, once (``source = 'rest'`` for the repaired ones)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from recorder.analysis.dataset import open_dataset
from recorder.analysis.report import report
from recorder.analysis.status import collect_status, render
from recorder.exchanges.kucoin.common import wire
from recorder.simulator.testing import SimulatorProcess
from tests.e2e import _state, count_rows, db, supervised, wait_until

pytestmark = pytest.mark.e2e


class _Tape:
    """Every trade a simulator makes (``trades``: id -> (price, qty, side)), from its REST
    history polled every ``every`` seconds on a thread: often enough to miss none."""

    every = 0.3

    def __init__(self) -> None:
        self.trades: dict[int, tuple] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.poll()

    def __enter__(self):
        self.poll()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()


class KrakenTape(_Tape):
    """Kraken's REST Trades (the simulator keeps the last 1000 per pair), by cursor."""

    def __init__(self, rest: str, pair: str = "XBTUSD") -> None:
        super().__init__()
        self.rest, self.pair = rest, pair
        self.cursor = 0

    def poll(self) -> None:
        with urllib.request.urlopen(f"{self.rest}/0/public/Trades?pair={self.pair}"
                                    f"&since={self.cursor}", timeout=5) as r:
            doc = json.loads(r.read(), parse_float=str)
        result = doc["result"]
        rows = next(v for k, v in result.items() if k != "last")
        for p, q, _t, side, *_, tid in rows:
            self.trades[int(tid)] = (Decimal(p), Decimal(q), {"b": "buy", "s": "sell"}[side])
        if rows:
            self.cursor = int(result["last"])


def _kraken_config(tmp: Path, sim: SimulatorProcess, name: str = "bf",
                   ohlc: bool = False) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(
        f'[exchange]\nname = "kraken"\napi = "v2"\nurl = "{sim.urls["ws_v2"]}"\n'
        f'rest_url = "{sim.urls["rest"]}"\n'
        "[connection]\nstale_after = 2\nbackoff_initial = 0.05\nbackoff_max = 0.2\n"
        '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD"]\n'
        + ('[[subscribe]]\nchannel = "ohlc"\nsymbols = ["BTC/USD"]\ninterval = 1\n'
           if ohlc else ""))
    return path


def _second_of_minute() -> float:
    return time.time() % 60


def _recorded(data: Path, symbol: str) -> list[tuple]:
    return db(data).execute(
        "SELECT trade_id::BIGINT, price, qty, side, source FROM trades WHERE symbol = ? "
        "ORDER BY trade_id::BIGINT", [symbol]).fetchall()


def _backfills(data: Path) -> list[dict]:
    return [json.loads(d) | {"kind": k, "symbol": s} for k, s, d in db(data).execute(
        "SELECT kind, symbol, detail FROM events WHERE kind LIKE '%backfill%' "
        "ORDER BY ts_recv").fetchall()]


def _assert_every_trade_once(data: Path, tape: dict[int, tuple]) -> list[tuple]:
    rows = _recorded(data, "BTC/USD")
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "a trade recorded twice"
    lo, hi = ids[0], ids[-1]
    made = {tid for tid in tape if lo <= tid <= hi}
    assert set(ids) == made, f"trades missing: {sorted(made - set(ids))[:10]}"
    for tid, price, qty, side, _ in rows:
        assert tape[tid] == (price, qty, side), tid
    return rows


def test_kraken_outage_is_repaired_trade_by_trade_and_candle_by_candle(tmp_path):
    """A forced outage of several seconds at about 50 trades a second, across a minute's
    end: afterwards every trade the simulator made is in ``trades`` by trade id, none twice,
    the missing ones marked ``rest``, and the minute the outage cut has its final candle
    from REST OHLC; one event per repair says so."""
    data = tmp_path / "data"
    with SimulatorProcess(["--seed", "3", "--rate", "120", "--pairs", "BTC/USD"]) as sim, \
            KrakenTape(sim.urls["rest"]) as tape:
        cfg = _kraken_config(tmp_path, sim, ohlc=True)
        with supervised(tmp_path, cfg, data=data):
            wait_until(lambda: count_rows(data, "trades") > 50, 20, "live trades")
            # The outage starts a few seconds before a minute ends and lasts past it.
            wait_until(lambda: 54 <= _second_of_minute() < 57, 65, "a minute's last seconds")
            start = len(tape.trades)
            t0 = time.monotonic()
            sim.control.drop(endpoint="ws_v2", persistent=True)
            # Ended 2 s into the next minute: the simulator starts that minute's candle with
            # its first trade, and a reconnect before it would get the cut minute's final
            # candle in the subscription snapshot, leaving the repair nothing to add.
            wait_until(lambda: len(tape.trades) - start > 150 and 2 <= _second_of_minute() < 30,
                       30, "trades during the outage, and the minute's end")
            rate = (len(tape.trades) - start) / (time.monotonic() - t0)
            sim.control.clear()
            wait_until(lambda: len(_backfills(data)) == 2, 20, "the repairs")
            seen = count_rows(data, "trades")
            wait_until(lambda: count_rows(data, "trades") > seen + 20, 20, "live trades again")
            final = _rest_candles(sim.urls["rest"])
    rows = _assert_every_trade_once(data, tape.trades)
    repaired = [r for r in rows if r[4] == "rest"]
    trades_event, candles_event = sorted(_backfills(data), key=lambda e: e["kind"], reverse=True)
    assert trades_event["kind"] == "trades_backfilled" and trades_event["symbol"] == "BTC/USD"
    assert trades_event["complete"] is True and trades_event["trigger"] == "reconnect"
    assert trades_event["new"] == len(repaired) >= 100, trades_event
    assert trades_event["source"] == "GET /0/public/Trades"
    # The repaired trades are one run between the last before the drop and the first after.
    ids = [r[0] for r in rows]
    first, last = ids.index(repaired[0][0]), ids.index(repaired[-1][0])
    assert all(r[4] == "rest" for r in rows[first:last + 1])
    # The candle of the minute the outage cut: its last row is the exchange's final one.
    assert candles_event["kind"] == "ohlc_backfilled" and candles_event["interval"] == 1
    assert candles_event["complete"] is True and candles_event["new"] >= 1, candles_event
    last_rows = db(data).execute(
        "SELECT epoch_us(interval_begin) // 1000000, open, high, low, close, volume, trades, "
        "source FROM ohlc WHERE symbol = 'BTC/USD' QUALIFY row_number() OVER (PARTITION BY "
        "interval_begin ORDER BY ts_recv DESC) = 1 ORDER BY 1").fetchall()
    cut = [r for r in last_rows if r[-1] == "rest"]
    assert cut, "no candle repaired"
    for r in cut:
        assert r[:-1] == final[r[0]], r
    print(f"\nKraken outage at {rate:.0f} trades/s: {len(repaired)} trades repaired from REST, "
          f"{len(rows)} in all, none missing or twice; {len(cut)} candle(s) repaired")


def _rest_candles(rest: str) -> dict[int, tuple]:
    with urllib.request.urlopen(f"{rest}/0/public/OHLC?pair=XBTUSD&interval=1",
                                timeout=5) as r:
        result = json.loads(r.read(), parse_float=str)["result"]
    rows = next(v for k, v in result.items() if k != "last")
    return {int(t): (int(t), Decimal(o), Decimal(h), Decimal(lo), Decimal(c), Decimal(v), n)
            for t, o, h, lo, c, _vwap, v, n in rows}


def test_kraken_kill_9_and_restart_is_repaired(tmp_path):
    """kill -9 loses what was not journaled yet and the restart takes a moment: the
    restarted collector repairs from the last trade the data directory holds."""
    data = tmp_path / "data"
    with SimulatorProcess(["--seed", "4", "--rate", "120", "--pairs", "BTC/USD"]) as sim, \
            KrakenTape(sim.urls["rest"]) as tape:
        cfg = _kraken_config(tmp_path, sim, name="k9")
        with supervised(tmp_path, cfg, data=data):
            pid = wait_until(lambda: _state(data, "k9-public").get("pid"), 15, "a collector")
            wait_until(lambda: count_rows(data, "trades") > 50, 20, "live trades")
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: _state(data, "k9-public").get("pid") not in (None, pid), 20,
                       "the restarted collector")
            wait_until(lambda: _backfills(data), 20, "the repair")
            seen = count_rows(data, "trades")
            wait_until(lambda: count_rows(data, "trades") > seen + 20, 20, "live trades again")
    rows = _assert_every_trade_once(data, tape.trades)
    (event,) = _backfills(data)
    assert event["trigger"] == "restart" and event["complete"] is True, event
    assert event["new"] == sum(r[4] == "rest" for r in rows) > 0


# -- KuCoin: the last 100 trades only ----------------------------------------------------------


class KucoinTape(_Tape):
    """KuCoin's last-100 history, polled often."""

    every = 0.2

    def __init__(self, rest: str, symbol: str = "BTC/USDT") -> None:
        super().__init__()
        self.rest, self.symbol = rest, symbol

    def poll(self) -> None:
        url = f"{self.rest}/api/v1/market/histories?symbol={wire(self.symbol)}"
        with urllib.request.urlopen(url, timeout=5) as r:
            data = json.loads(r.read())["data"]
        for t in data:
            self.trades[int(t["sequence"])] = (Decimal(t["price"]), Decimal(t["size"]),
                                               t["side"])


def _kucoin_config(tmp: Path, sim: SimulatorProcess) -> Path:
    path = tmp / "kc.toml"
    path.write_text(
        f'[exchange]\nname = "kucoin"\nrest_url = "{sim.urls["rest"]}"\n'
        "[connection]\nstale_after = 2\nbackoff_initial = 0.05\nbackoff_max = 0.2\n"
        '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USDT"]\n')
    return path


def _kucoin_outage(tmp_path: Path, trades_during: int) -> tuple[Path, KucoinTape]:
    data = tmp_path / "data"
    with SimulatorProcess(["--seed", "6", "--rate", "150", "--pairs", "BTC-USDT"],
                          exchange="kucoin") as sim, KucoinTape(sim.urls["rest"]) as tape:
        cfg = _kucoin_config(tmp_path, sim)
        with supervised(tmp_path, cfg, data=data):
            wait_until(lambda: count_rows(data, "trades") > 20, 20, "live trades")
            start = max(tape.trades)
            sim.control.drop(persistent=True)
            wait_until(lambda: len([s for s in tape.trades if s > start]) >= trades_during,
                       30, f"{trades_during} trades during the outage")
            sim.control.clear()
            wait_until(lambda: _backfills(data), 20, "the repair")
            seen = count_rows(data, "trades")
            wait_until(lambda: count_rows(data, "trades") > seen + 5, 20, "live trades again")
    return data, tape


def _kucoin_rows(data: Path) -> list[tuple]:
    return db(data).execute(
        "SELECT sequence, price, qty, side, source FROM trades WHERE symbol = 'BTC/USDT' "
        "ORDER BY sequence").fetchall()


def test_kucoin_outage_within_the_last_100_trades_is_repaired(tmp_path):
    data, tape = _kucoin_outage(tmp_path, 30)
    rows = _kucoin_rows(data)
    seqs = [r[0] for r in rows]
    assert len(seqs) == len(set(seqs)), "a trade recorded twice"
    made = {s for s in tape.trades if seqs[0] <= s <= seqs[-1]}
    assert set(seqs) == made, f"trades missing: {sorted(made - set(seqs))[:10]}"
    for seq, price, qty, side, _ in rows:
        assert tape.trades[seq] == (price, qty, side)
    (event,) = _backfills(data)
    assert event["kind"] == "trades_backfilled" and event["complete"] is True, event
    # The tape's count of the outage starts at its last poll before the drop took effect:
    # what was missing is exactly what the repair recorded (every trade is there, above).
    assert event["new"] == sum(r[4] == "rest" for r in rows) > 0
    assert collect_status(data)["collectors"]["kc-public"]["trade_repairs"]["repaired"] == 1
    hours = report(open_dataset(data)).to_pylist()
    assert [sum(h[k] for h in hours) for k in ("trade_gaps_repaired",
                                               "trade_gaps_unrepaired")] == [1, 0]


def test_kucoin_longer_outage_is_repaired_as_far_as_the_history_reaches(tmp_path):
    """160 trades while cut off: the last-100 window cannot reach the gap's start. What it
    holds is recorded, and the event says the repair is incomplete and up to when."""
    data, tape = _kucoin_outage(tmp_path, 160)
    rows = _kucoin_rows(data)
    seqs = [r[0] for r in rows]
    assert len(seqs) == len(set(seqs)), "a trade recorded twice"
    (event,) = _backfills(data)
    assert event["kind"] == "trades_backfilled" and event["complete"] is False, event
    repaired = [r[0] for r in rows if r[4] == "rest"]
    assert event["new"] == len(repaired) == event["found"] > 0 and event["already_recorded"] == 0
    # From the oldest trade the history still held on, nothing is missing ...
    after = [s for s in seqs if s >= repaired[0]]
    assert set(after) == {s for s in tape.trades if repaired[0] <= s <= seqs[-1]}
    # ... and before it, the trades the window had lost are missing, as the event says.
    before = max(s for s in seqs if s < repaired[0])
    lost = [s for s in tape.trades if before < s < repaired[0]]
    assert lost, "the history reached back further than the gap"
    oldest = db(data).execute("SELECT strftime(ts_exchange, '%Y-%m-%dT%H:%M:%S.%fZ') FROM "
                              "trades WHERE sequence = ?", [repaired[0]]).fetchone()[0]
    assert event["unrepaired_until"] == oldest
    assert event["unrepaired_since"] == event["since"] < oldest
    # recorder status and recorder report tell the unrepaired gap from a repaired one.
    c = collect_status(data)["collectors"]["kc-public"]
    assert c["trade_repairs"] == {"repaired": 0, "unrepaired": 1, "failed_attempts": 0,
                                  "covered": 0}
    assert "trade repairs  0 complete, 1 incomplete or abandoned" in render(
        collect_status(data))
    hours = report(open_dataset(data)).to_pylist()
    assert sum(h["trade_gaps_unrepaired"] for h in hours) == 1
    assert sum(h["trade_gaps_repaired"] for h in hours) == 0


# -- redundancy ---------------------------------------------------------------------------------


def test_with_redundancy_2_a_dropped_connection_leaves_no_gap(tmp_path):
    """``[connection] redundancy = 2``: the recorded connection dropped, then the redundant
    one: the trades never stop, none is missing or twice, nothing had to be repaired."""
    data = tmp_path / "data"
    with SimulatorProcess(["--seed", "8", "--rate", "120", "--pairs", "BTC/USD"]) as sim, \
            KrakenTape(sim.urls["rest"]) as tape:
        cfg = _kraken_config(tmp_path, sim, name="red")
        cfg.write_text(cfg.read_text().replace("[connection]\n",
                                               "[connection]\nredundancy = 2\n"))
        with supervised(tmp_path, cfg, data=data):
            wait_until(lambda: _kinds(data).get("redundant_connected"), 20,
                       "the redundant connection")
            wait_until(lambda: count_rows(data, "trades") > 50, 20, "live trades")
            # The recorded connection, and every new one for a while: an outage of seconds.
            start = len(tape.trades)
            sim.control.drop(endpoint="ws_v2", only="oldest", persistent=True)
            wait_until(lambda: len(tape.trades) - start > 100, 20, "trades during the outage")
            sim.control.clear()
            wait_until(lambda: _kinds(data).get("trades_covered"), 20, "the cover")
            sim.control.drop(endpoint="ws_v2", only="oldest")  # now the redundant one
            wait_until(lambda: _kinds(data).get("redundant_connected", 0) >= 2, 20,
                       "the redundant connection again")
            seen = count_rows(data, "trades")
            wait_until(lambda: count_rows(data, "trades") > seen + 30, 20, "live trades again")
    rows = _assert_every_trade_once(data, tape.trades)
    assert all(r[4] == "ws" for r in rows), "nothing came from REST"
    k = _kinds(data)
    assert k["disconnected"] >= 1 and k["redundant_disconnected"] == 1, k
    assert not _backfills(data), "no gap to repair"
    (covered,) = [json.loads(d) for (d,) in db(data).execute(
        "SELECT detail FROM events WHERE kind = 'trades_covered'").fetchall()]
    assert covered["rows"] >= 50 and covered["complete"] is True, covered
    assert covered["by_conn_id"] >= 2, covered


def _kinds(data: Path) -> dict[str, int]:
    try:
        return dict(db(data).execute("SELECT kind, count(*) FROM events GROUP BY 1").fetchall())
    except Exception:  # noqa: BLE001 - nothing recorded yet
        return {}
