"""End to end, KuCoin: the KuCoin simulator and `recorder run configs/kucoin-public.toml`
(pointed at the simulator's REST) as real processes; DuckDB reads what was recorded.

Covered: every public channel recorded value for value (compared with the frames received,
read here with json and Decimal only), exact column types, level2 books synced from REST
snapshots and verified; a sequence gap on one symbol resyncs that symbol alone and the book
rebuilt afterwards equals the simulator's own; a failed snapshot is an event and is retried;
with credentials the whole (full-depth) book is synced and rebuilt exactly; every
(re)connect takes a fresh bullet token; a malformed frame is an event and the rest keeps
flowing; a make-before-break rotation loses and duplicates no trade; bad configs are refused
at start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from recorder.core.schema import arrow_schema
from recorder.simulator.kucoin.auth import signed_headers
from recorder.simulator.testing import SimulatorProcess
from tests.e2e import ROOT, db, run_recorder, start_recorder, stop
from tests.kucoin_helpers import (
    kucoin_config,
)
from tests.sentinel import SENTINEL_KEY, SENTINEL_SECRET

pytestmark = pytest.mark.e2e

SYMBOLS = {"BTC/USDT", "ETH/USDT"}
MARKET_TABLES = ("trades", "book", "spread", "ohlc", "ticker")
SNAPSHOT_PATH = "/api/v1/market/orderbook/level2_100"
SNAPSHOT_ENDPOINT = f"GET {SNAPSHOT_PATH}"
BULLET_ENDPOINT = "POST /api/v1/bullet-public"
FULL_PATH = "/api/v3/market/orderbook/level2"
PASSPHRASE = "kucoin-e2e-passphrase"
CREDENTIALS = ('[credentials]\napi_key_env = "T_KC_KEY"\napi_secret_env = "T_KC_SECRET"\n'
               'api_passphrase_env = "T_KC_PASS"\n')

EXPECTED_TYPES = {
    "trades": {"price": "DECIMAL(18,10)", "qty": "DECIMAL(22,10)", "trade_id": "VARCHAR",
               "sequence": "BIGINT", "ts_exchange": "TIMESTAMP WITH TIME ZONE",
               "ts_recv": "TIMESTAMP WITH TIME ZONE", "side": "VARCHAR"},
    "book": {"price": "DECIMAL(18,10)", "qty": "DECIMAL(22,10)", "is_snapshot": "BOOLEAN",
             "sequence": "BIGINT", "depth": "INTEGER", "verified": "BOOLEAN",
             "update_id": "BIGINT"},
    "spread": {"bid_price": "DECIMAL(18,10)", "ask_qty": "DECIMAL(22,10)"},
    "ohlc": {"interval": "INTEGER", "interval_begin": "TIMESTAMP WITH TIME ZONE",
             "volume": "DECIMAL(28,10)", "close": "DECIMAL(18,10)"},
    "ticker": {"volume": "DECIMAL(28,10)", "change_pct": "DECIMAL(18,10)",
               "bid": "DECIMAL(18,10)"},
    "events": {"kind": "VARCHAR", "conn_id": "BIGINT"},
    "raw": {"frame": "VARCHAR", "endpoint": "VARCHAR"},
}


# -- helpers ----------------------------------------------------------------------------------




def wait_until(what: str, predicate, timeout: float = 20.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def query(data: Path, sql: str, params: list | None = None) -> list[tuple]:
    """A query over what is recorded so far (journaled rows included)."""
    con = db(data)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def rest_get(rest: str, path: str) -> dict:
    with urllib.request.urlopen(rest + path, timeout=10) as resp:
        body = json.loads(resp.read(), parse_float=Decimal)
    assert body["code"] == "200000", body
    return body["data"]


def canonical(wire: str) -> str:
    return wire.replace("-", "/")


def frames(con, endpoint: str | None = None) -> list[tuple[int, dict]]:
    """(conn_id, decoded frame) of the raw table, WebSocket frames unless ``endpoint``."""
    where = "endpoint = ?" if endpoint else "endpoint LIKE 'ws://%'"
    rows = con.execute(f"SELECT conn_id, frame FROM raw WHERE {where} ORDER BY ts_recv",
                       [endpoint] if endpoint else []).fetchall()
    return [(c, json.loads(f, parse_float=Decimal)) for c, f in rows]


def events(con, kind: str) -> list[tuple]:
    return con.execute("SELECT symbol, channel, detail, conn_id, epoch_us(ts_recv) FROM events "
                       "WHERE kind = ? ORDER BY ts_recv", [kind]).fetchall()


def kinds(con) -> Counter:
    return Counter(k for (k,) in con.execute("SELECT kind FROM events").fetchall())


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "11", "--rate", "200"], exchange="kucoin",
                          api_key=SENTINEL_KEY, api_secret=SENTINEL_SECRET,
                          api_passphrase=PASSPHRASE) as s:
        yield s


# -- every channel, value for value -----------------------------------------------------------


def _schema_types(con, table: str) -> list[tuple[str, str]]:
    rel = con.from_arrow(arrow_schema(table).empty_table())
    return list(zip(rel.columns, map(str, rel.types), strict=True))


def _expected_rows(con) -> dict[str, Counter]:
    """The rows every frame received must give, read with json and Decimal only."""
    exp = {t: Counter() for t in MARKET_TABLES}
    snaps = {}
    for _, f in frames(con, SNAPSHOT_ENDPOINT):
        d, sym = f["data"], canonical(f["topic"].split(":")[1])
        assert sym not in snaps, "one snapshot per symbol without faults"
        snaps[sym] = int(d["sequence"])
        for side, key in (("bid", "bids"), ("ask", "asks")):
            for price, qty in d[key]:
                exp["book"][(sym, side, Decimal(price), Decimal(qty), True, snaps[sym], 100,
                             d["time"] * 1000)] += 1
    for _, f in frames(con):
        topic = f.get("topic", "")
        d = f.get("data")
        if topic.startswith("/market/match:"):
            exp["trades"][(canonical(d["symbol"]), int(d["time"]) // 1000, Decimal(d["price"]),
                           Decimal(d["size"]), d["side"], d["tradeId"], int(d["sequence"]),
                           None, None)] += 1
        elif topic.startswith("/market/level2:"):
            sym = canonical(d["symbol"])
            for side, key in (("bid", "bids"), ("ask", "asks")):
                for price, qty, seq in d["changes"][key]:
                    # Changes the snapshot already has are not rows; price "0" only moves
                    # the sequence on.
                    if int(seq) > snaps[sym] and price != "0":
                        exp["book"][(sym, side, Decimal(price), Decimal(qty), False, int(seq),
                                     100, d["time"] * 1000)] += 1
        elif topic.startswith("/market/ticker:"):
            exp["spread"][(canonical(topic.split(":")[1]), d["time"] * 1000,
                           Decimal(d["bestBid"]), Decimal(d["bestBidSize"]),
                           Decimal(d["bestAsk"]), Decimal(d["bestAskSize"]))] += 1
        elif topic.startswith("/market/candles:"):
            start, o, c, h, lo, vol, _turnover = d["candles"]
            exp["ohlc"][(canonical(d["symbol"]), {"1min": 1}[topic.rsplit("_", 1)[1]],
                         int(start) * 1_000_000, d["time"] // 1000, Decimal(o), Decimal(h),
                         Decimal(lo), Decimal(c), Decimal(vol), None, None)] += 1
        elif topic.startswith("/market/snapshot:"):
            t = d["data"]
            exp["ticker"][(canonical(t["symbol"]), t["datetime"] * 1000, t["buy"], t["bidSize"],
                           t["sell"], t["askSize"], t["lastTradedPrice"], t["vol"], t["low"],
                           t["high"], t["open"], t["changePrice"], t["changeRate"] * 100
                           )] += 1
    return exp


SQL = {
    "trades": "SELECT symbol, epoch_us(ts_exchange), price, qty, side, trade_id, sequence, "
              "ord_type, misc FROM trades",
    "book": "SELECT symbol, side, price, qty, is_snapshot, sequence, depth, "
            "epoch_us(ts_exchange) FROM book",
    "spread": "SELECT symbol, epoch_us(ts_exchange), bid_price, bid_qty, ask_price, ask_qty "
              "FROM spread",
    "ohlc": "SELECT symbol, interval, epoch_us(interval_begin), epoch_us(ts_exchange), open, "
            "high, low, close, volume, vwap, trades FROM ohlc",
    "ticker": "SELECT symbol, epoch_us(ts_exchange), bid, bid_qty, ask, ask_qty, last, volume, "
              "low, high, open, change, change_pct FROM ticker",
}
# Ticker columns KuCoin's market snapshot has nothing for.
TICKER_EMPTY = ("last_qty", "volume_today", "vwap", "vwap_today", "low_today", "high_today",
                "open_today", "trades", "trades_today")


def test_every_channel_recorded_value_for_value(sim, tmp_path):
    data = tmp_path / "data"
    cfg = kucoin_config(tmp_path, sim.urls["rest"])
    seconds = 5
    tokens = sim.control.stats()["tokens_issued"]
    proc = run_recorder(cfg, data, seconds)
    assert proc.returncode == 0, proc.stderr
    assert sim.control.stats()["tokens_issued"] == tokens + 1
    con = db(data)
    for table, types in EXPECTED_TYPES.items():
        expected = _schema_types(con, table)
        described = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]
        assert described == [*expected, ("date", "DATE")], table
        for col, typ in types.items():
            assert dict(expected)[col] == typ, (table, col)
    union = " UNION ".join(f"SELECT DISTINCT exchange FROM {t}" for t in EXPECTED_TYPES)
    assert con.execute(union).fetchall() == [("kucoin",)]
    for table in MARKET_TABLES:
        got = {s for (s,) in con.execute(f"SELECT DISTINCT symbol FROM {table}").fetchall()}
        assert got == SYMBOLS, table
    exp = _expected_rows(con)
    for table in MARKET_TABLES:
        got = Counter(con.execute(SQL[table]).fetchall())
        assert sum(exp[table].values()) > 0, table
        assert got == exp[table], table
    empty = con.execute("SELECT " + ", ".join(f"count({c})" for c in TICKER_EMPTY)
                        + " FROM ticker").fetchone()
    assert set(empty) == {0}
    # Books: synced from one snapshot per symbol, every row checked by sequence.
    assert con.execute("SELECT count(*) FILTER (WHERE verified IS NOT TRUE), "
                       "count(*) FILTER (WHERE checksum IS NOT NULL OR republish) "
                       "FROM book").fetchone() == (0, 0)
    k = kinds(con)
    assert k == Counter(connected=1, subscribed=7, stopped=1), k
    stopped = json.loads(events(con, "stopped")[0][2])
    # Every frame parsed is in raw: those received, and the REST snapshots handed back as
    # frames (the bullet answer is kept too, but is not a frame).
    parsed = con.execute("SELECT count(*) FROM raw WHERE endpoint != ?",
                         [BULLET_ENDPOINT]).fetchone()[0]
    assert parsed == stopped["frames"]
    assert Counter(e for (e,) in con.execute("SELECT endpoint FROM raw WHERE endpoint NOT LIKE "
                                             "'ws://%'").fetchall()) == {
        BULLET_ENDPOINT: 1, SNAPSHOT_ENDPOINT: 2}
    total = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in MARKET_TABLES)
    print(f"\nKuCoin, every public channel: {total} rows in {seconds} s "
          f"({total / seconds:.0f} rows/s, {stopped['frames'] / seconds:.0f} frames/s)")


# -- a sequence gap; a snapshot refused by REST ------------------------------------------------


def _btc_snapshot(rest: str, full: bool = False) -> tuple[int, list, list]:
    """The simulator's BTC-USDT book: its top 100 levels, or all of them (signed v3)."""
    if full:
        target = f"{FULL_PATH}?symbol=BTC-USDT"
        headers = signed_headers(SENTINEL_KEY, SENTINEL_SECRET, PASSPHRASE, "GET", target)
        with urllib.request.urlopen(urllib.request.Request(rest + target, headers=headers),
                                    timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["code"] == "200000", body
        d = body["data"]
    else:
        d = rest_get(rest, f"{SNAPSHOT_PATH}?symbol=BTC-USDT")
    return int(d["sequence"]), d["bids"], d["asks"]


def _cut_at_a_snapshot(sim, data: Path, full: bool = False) -> tuple[int, int, list, list]:
    """A simulator book snapshot taken while recording, and the receive time at which the
    recorded BTC/USDT book is at its sequence: (time µs, sequence, bids, asks)."""
    for _ in range(20):
        seq, bids, asks = _btc_snapshot(sim.urls["rest"], full)
        wait_until("rows past the snapshot", lambda s=seq: query(
            data, "SELECT count(*) FROM book WHERE symbol = 'BTC/USDT' AND sequence > ?",
            [s])[0][0])
        at_us = _moment_of(data, seq)
        if at_us is not None:
            return at_us, seq, bids, asks
        time.sleep(0.05)
    raise AssertionError("no snapshot sequence separable in the recording")


def _levels(levels: list) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in levels]


def _moment_of(data: Path, seq: int) -> int | None:
    """The receive time (µs) after which the recorded BTC/USDT book is the one at sequence
    ``seq``: every row up to ``seq`` received by then, none after it. None if one socket read
    carried both sides of ``seq`` (frames of one read share their receive time)."""
    before, after = query(data, "SELECT max(epoch_us(ts_recv)) FILTER (WHERE sequence <= ?), "
                          "min(epoch_us(ts_recv)) FILTER (WHERE sequence > ?) FROM book "
                          "WHERE symbol = 'BTC/USDT'", [seq, seq])[0]
    if before is None or after is None:
        return None
    return before if after > before else None


def _book_cli(data: Path, at_us: int, depth: int) -> dict:
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at_us // 1_000_000))
    at += f".{at_us % 1_000_000:06d}+00:00"
    proc = subprocess.run([sys.executable, "-m", "recorder", "book", "BTC/USDT", "--at", at,
                           "--depth", str(depth), "--format", "json", "--data", str(data)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_sequence_gap_resyncs_that_symbol_alone(sim, tmp_path):
    """The first snapshot request fails (KuCoin's 500000 envelope): a snapshot_failed event,
    then a retry. Later one BTC-USDT level2 message is left out: a sequence_gap for BTC/USDT
    only, a new snapshot of BTC/USDT alone, and the rebuilt book equals the simulator's."""
    data = tmp_path / "data"
    cfg = kucoin_config(tmp_path, sim.urls["rest"], "backoff_initial = 0.2")
    sim.control.rest_error(code="500000", count=1, path=SNAPSHOT_PATH)
    proc = start_recorder(cfg, data)
    try:
        wait_until("both books synced", lambda: query(
            data, "SELECT count(DISTINCT symbol) FROM book WHERE verified")[0][0] == 2)
        skipped = sim.control.stats()["skipped_level2"]
        sim.control.skip_level2("BTC-USDT")
        sim.wait_for(lambda st: st["skipped_level2"] == skipped + 1)
        wait_until("the resync after the gap", lambda: query(
            data, "SELECT count(*) FROM events WHERE kind = 'resynced' AND symbol = 'BTC/USDT' "
            "AND ts_recv > (SELECT max(ts_recv) FROM events WHERE kind = 'sequence_gap')")[0][0])
        # The simulator's own book, at a sequence the recording can be cut at exactly.
        at_us, seq, bids, asks = _cut_at_a_snapshot(sim, data)
    finally:
        stop(proc)
    assert proc.returncode == 0, proc.stderr.read()
    con = db(data)
    # The failed snapshot: an event naming KuCoin's code, a retry, then the symbol synced.
    ((failed, channel, detail, _, failed_us),) = events(con, "snapshot_failed")
    assert channel == "book" and failed in SYMBOLS
    detail = json.loads(detail)
    assert "500000" in detail["error"] and detail["retry_in_s"] is not None
    ((sym, _, detail, _, retry_us),) = events(con, "resync_retry")
    assert sym == failed and json.loads(detail)["after"] == "refused" and retry_us > failed_us
    (first_snapshot_us,) = con.execute("SELECT min(epoch_us(ts_recv)) FROM book WHERE "
                                       "symbol = ? AND is_snapshot", [failed]).fetchone()
    assert first_snapshot_us > retry_us
    # The gap: BTC/USDT alone, resynced alone.
    ((sym, channel, detail, _, gap_us),) = events(con, "sequence_gap")
    assert (sym, channel) == ("BTC/USDT", "book")
    detail = json.loads(detail)
    assert detail["got"] > detail["expected"]
    resynced = [(s, json.loads(d)["attempts"], t) for s, _, d, _, t in events(con, "resynced")]
    # The symbol whose first snapshot needed a second attempt is reported recovered, once.
    assert [(s, n) for s, n, t in resynced if t < gap_us] == [(failed, 2)]
    ((sym, attempts, resynced_us),) = [r for r in resynced if r[2] > gap_us]
    assert (sym, attempts) == ("BTC/USDT", 1)
    fetched = Counter(canonical(f["topic"].split(":")[1])
                      for _, f in frames(con, SNAPSHOT_ENDPOINT))
    assert fetched == {"BTC/USDT": 2, "ETH/USDT": 1}
    snapshots = dict(con.execute("SELECT symbol, count(DISTINCT update_id) FROM book WHERE "
                                 "is_snapshot GROUP BY symbol").fetchall())
    assert snapshots == {"BTC/USDT": 2, "ETH/USDT": 1}
    # Between the gap and the new snapshot nothing of BTC/USDT is written; ETH/USDT flows on.
    between = dict(con.execute(
        "SELECT symbol, count(*) FROM book WHERE epoch_us(ts_recv) > ? AND "
        "epoch_us(ts_recv) < ? GROUP BY symbol", [gap_us, resynced_us]).fetchall())
    assert "BTC/USDT" not in between
    assert con.execute("SELECT count(*) FROM book WHERE symbol = 'ETH/USDT' AND "
                       "epoch_us(ts_recv) > ?", [resynced_us]).fetchone()[0] > 0
    assert con.execute("SELECT count(*) FROM book WHERE verified IS NOT TRUE").fetchone()[0] == 0
    kinds_seen = kinds(con)
    assert kinds_seen["connected"] == 1 and kinds_seen["disconnected"] == 0, kinds_seen
    # The rebuilt book (recorder book) equals the simulator's at the same sequence. Without
    # credentials the book was synced from the top-100 snapshot: compare the top 25.
    book = _book_cli(data, at_us, 25)
    assert book["verified"] is True and book["depth"] == 100
    assert _levels(book["bids"]) == _levels(bids[:25])
    assert _levels(book["asks"]) == _levels(asks[:25])
    print(f"\nKuCoin sequence gap: resynced in {(resynced_us - gap_us) / 1000:.1f} ms; "
          f"book rebuilt at sequence {seq} equals the simulator's")


# -- full depth with credentials --------------------------------------------------------------


def test_credentials_sync_the_full_book(sim, tmp_path, monkeypatch):
    """With [credentials], level2 books are synced from the signed full-depth snapshot: the
    whole rebuilt book equals the simulator's, and no credential reaches the recording."""
    for var, value in (("T_KC_KEY", SENTINEL_KEY), ("T_KC_SECRET", SENTINEL_SECRET),
                       ("T_KC_PASS", PASSPHRASE)):
        monkeypatch.setenv(var, value)
    data = tmp_path / "data"
    cfg = kucoin_config(tmp_path, sim.urls["rest"], extra=CREDENTIALS)
    proc = start_recorder(cfg, data)
    try:
        wait_until("both books synced", lambda: query(
            data, "SELECT count(DISTINCT symbol) FROM book WHERE verified")[0][0] == 2)
        at_us, seq, bids, asks = _cut_at_a_snapshot(sim, data, full=True)
    finally:
        stop(proc)
    assert proc.returncode == 0, proc.stderr.read()
    con = db(data)
    assert Counter(e for (e,) in con.execute(
        "SELECT endpoint FROM raw WHERE endpoint LIKE 'GET %'").fetchall()) == {
        f"GET {FULL_PATH}": 2}
    assert con.execute("SELECT count(*) FILTER (WHERE depth IS NOT NULL), "
                       "count(*) FILTER (WHERE verified IS NOT TRUE) FROM book").fetchone() == (
        0, 0)
    deepest = con.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM book WHERE "
                          "is_snapshot GROUP BY symbol, side)").fetchone()[0]
    assert deepest > 100, "more than the public snapshot's 100 levels"
    book = _book_cli(data, at_us, 1000)
    assert book["verified"] is True and book["depth"] is None
    assert len(book["bids"]) == len(bids) > 100
    assert _levels(book["bids"]) == _levels(bids)
    assert _levels(book["asks"]) == _levels(asks)


# -- reconnects and a malformed frame ---------------------------------------------------------


def test_every_reconnect_takes_a_fresh_bullet_and_malformed_frames_are_events(sim, tmp_path):
    """Every connection is dropped after 1.2 s and receives one truncated frame: each
    (re)connect asks for a new bullet token (a reused one would be refused), each malformed
    frame is an event, and every symbol keeps flowing after it."""
    data = tmp_path / "data"
    cfg = kucoin_config(tmp_path, sim.urls["rest"], "backoff_initial = 0.1\nbackoff_max = 0.3")
    before = sim.control.stats()
    try:
        sim.control.drop(mode="abort", after_seconds=1.2, persistent=True)
        sim.control.malformed(after_messages=40, persistent=True)
        proc = run_recorder(cfg, data, 5)
    finally:
        sim.control.clear()
    assert proc.returncode == 0, proc.stderr
    after = sim.control.stats()
    con = db(data)
    k = kinds(con)
    connections = k["connected"]
    assert connections >= 3, k
    assert k["disconnected"] == connections - 1
    bullets = con.execute("SELECT conn_id FROM raw WHERE endpoint = ?",
                          [BULLET_ENDPOINT]).fetchall()
    assert len(bullets) == len(set(bullets)) == connections
    assert after["tokens_issued"] - before["tokens_issued"] == connections
    assert after["faults"].get("token_refused", 0) == before["faults"].get("token_refused", 0)
    # Each connection that was dropped (the last one was stopped, maybe early in its life)
    # synced its books from its own snapshots, and kept recording after its bad frame.
    dropped = {c: t for _, _, _, c, t in events(con, "disconnected")}
    per_conn = Counter(c for c, _ in frames(con, SNAPSHOT_ENDPOINT))
    assert all(per_conn[c] == 2 for c in dropped), per_conn
    malformed = events(con, "malformed")
    assert {c for *_, c, _ in malformed} >= set(dropped)
    for _, _, detail, conn_id, t in malformed:
        assert json.loads(detail)["frame"].startswith('{"topic":"/market/level2:BTC-USDT"')
        if conn_id not in dropped:
            continue
        flowing = dict(con.execute(
            "SELECT symbol, count(*) FROM book WHERE epoch_us(ts_recv) > ? AND "
            "epoch_us(ts_recv) <= ? GROUP BY symbol", [t, dropped[conn_id]]).fetchall())
        assert set(flowing) == SYMBOLS, (conn_id, flowing)
    assert k["sequence_gap"] == 0, "the truncated frame was an extra one, nothing was lost"
    assert con.execute("SELECT count(*) FROM book WHERE verified IS NOT TRUE").fetchone()[0] == 0


# -- make-before-break rotation ---------------------------------------------------------------


@pytest.fixture(scope="module")
def rotation(tmp_path_factory):
    """Connections replaced from 3 s on ([connection] max_connection_age; the switch comes
    after an overlap of 1.5 s) while the simulator cuts them at 6 s; the simulator's trade
    history is polled all along."""
    tmp = tmp_path_factory.mktemp("rotation")
    data = tmp / "data"
    history: dict[tuple[str, str], tuple] = {}
    windows: list[tuple[str, int, int]] = []
    with SimulatorProcess(["--seed", "5", "--rate", "60", "--max-connection-age", "6"],
                          exchange="kucoin") as s:
        stop_polling = threading.Event()

        def poll() -> None:
            for wire in ("BTC-USDT", "ETH-USDT"):
                got = rest_get(s.urls["rest"], f"/api/v1/market/histories?symbol={wire}")
                for t in got:
                    history[(canonical(wire), t["sequence"])] = (
                        t["time"] // 1000, Decimal(t["price"]), Decimal(t["size"]), t["side"])
                if got:
                    windows.append((wire, int(got[0]["sequence"]), int(got[-1]["sequence"])))

        def poller() -> None:
            while not stop_polling.wait(0.5):
                poll()

        thread = threading.Thread(target=poller, daemon=True)
        poll()
        thread.start()
        cfg = kucoin_config(tmp, s.urls["rest"], 'max_connection_age = "3s"')
        try:
            proc = run_recorder(cfg, data, 9.5)
        finally:
            stop_polling.set()
            thread.join()
        poll()
        stats = s.control.stats()
    assert proc.returncode == 0, proc.stderr
    return data, history, windows, stats


def test_rotation_loses_and_duplicates_no_trade(rotation):
    data, history, windows, stats = rotation
    con = db(data)
    k = kinds(con)
    rotations = k["connection_rotated"]
    assert rotations >= 2 and k["connected"] == 1 and k["disconnected"] == 0, k
    assert k["rotation_failed"] == 0
    assert stats["faults"].get("age_cut", 0) == 0, "replaced before the simulator's cut"
    # A rotation still opening when the run ends is dropped quietly: count connections.
    assert stats["connections_total"] >= 1 + rotations
    assert stats["tokens_issued"] == stats["connections_total"], (
        "a fresh bullet for every connection")
    rotated = [json.loads(d) for (d,) in con.execute(
        "SELECT detail FROM events WHERE kind = 'connection_rotated'").fetchall()]
    assert sum(r["overlap_rows"] for r in rotated) > 0, "the connections overlapped"
    dropped = sum(r["duplicates_dropped"] for r in rotated)
    # The polled history windows overlap, so the union is every trade since the start.
    for wire in ("BTC-USDT", "ETH-USDT"):
        mine = [(a, b) for w, a, b in windows if w == wire]
        assert all(a2 <= b1 for (_, b1), (a2, _) in zip(mine, mine[1:], strict=False)), wire
    recorded = con.execute("SELECT symbol, trade_id, epoch_us(ts_exchange), price, qty, side "
                           "FROM trades").fetchall()
    assert len(recorded) == len({(r[0], r[1]) for r in recorded}), "a trade recorded twice"
    for sym in SYMBOLS:
        mine = {int(r[1]): tuple(r[2:]) for r in recorded if r[0] == sym}
        lo, hi = min(mine), max(mine)
        sent = {int(seq): v for (s, seq), v in history.items()
                if s == sym and lo <= int(seq) <= hi}
        assert mine == sent, f"{sym}: trades lost {sorted(set(sent) - set(mine))[:5]}"
    print(f"\nKuCoin rotation: {rotations} rotations, {len(recorded)} trades, none lost or "
          f"duplicated ({dropped} duplicate rows of the overlaps dropped)")


def test_rotation_keeps_every_book_synced(rotation):
    """After each switch the new connection's level2 books are synced from their own
    snapshots and go on being recorded."""
    data, *_ = rotation
    con = db(data)
    switches = [t for *_, t in events(con, "connection_rotated")]
    last = con.execute("SELECT max(epoch_us(ts_recv)) FROM events").fetchone()[0]
    for start, end in zip(switches, [*switches[1:], last], strict=True):
        got = dict(con.execute(
            "SELECT symbol, count(*) FILTER (WHERE is_snapshot) FROM book WHERE "
            "epoch_us(ts_recv) >= ? AND epoch_us(ts_recv) <= ? GROUP BY symbol",
            [start, end]).fetchall())
        assert set(got) == SYMBOLS and min(got.values()) > 0, (
            f"no book rows (or no snapshot) after the switch at {start}: {got}")
    assert con.execute("SELECT count(*) FROM book WHERE verified IS NOT TRUE").fetchone()[0] == 0


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("change,key,says", [
    (('symbols = ["BTC/USDT", "ETH/USDT"]\ninterval', 'symbols = ["BTC/USDT", "NOPE/USDT"]\n'
      'interval'), "subscribe[4].symbols", "'NOPE/USDT' is not a pair"),
    (('channel = "book"\nsymbols = ["BTC/USDT", "ETH/USDT"]\n',
      'channel = "book"\nsymbols = ["BTC/USDT", "ETH/USDT"]\ndepth = 10\n'),
     "subscribe[1].depth", "10 is not a book depth"),
])
def test_bad_config_refused_at_startup(sim, tmp_path, change, key, says):
    cfg = kucoin_config(tmp_path, sim.urls["rest"])
    text = cfg.read_text()
    assert change[0] in text
    cfg.write_text(text.replace(change[0], change[1], 1))
    data = tmp_path / "data"
    proc = run_recorder(cfg, data, 2)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {cfg}: {key}: ") and says in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not data.exists()
