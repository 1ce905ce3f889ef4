"""End to end: the simulator and `recorder run` as real processes; DuckDB reads the result."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.core.schema import TABLES, arrow_schema
from recorder.simulator.testing import SimulatorProcess
from tests.captures import DATA, cryptofeed_frames, flashbook_frames, sdk_v1_frames
from tests.e2e import all_files, db, run_recorder, start_recorder, stop, write_config

CRYPTOFEED_PAIRS = ["WAVES/EUR", "XMR/USD", "KSM/XBT", "GRT/ETH", "SC/EUR", "ETH/CHF",
                    "OCEAN/XBT", "OMG/USD", "XBT/CHF", "ADA/XBT"]

PAIRS = '["BTC/USD", "ETH/USD"]'


def _subs(*channels: str) -> str:
    out = []
    for ch in channels:
        extra = {"book": "depth = 10\n", "ohlc": "interval = 1\n"}.get(ch, "")
        out.append(f'[[subscribe]]\nchannel = "{ch}"\nsymbols = {PAIRS}\n{extra}')
    return "\n".join(out)


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "7", "--rate", "400"]) as s:
        yield s


EXPECTED_TYPES = {
    "trades": {"price": "DECIMAL(18,10)", "qty": "DECIMAL(22,10)",
               "ts_recv": "TIMESTAMP WITH TIME ZONE", "ts_exchange": "TIMESTAMP WITH TIME ZONE",
               "symbol": "VARCHAR", "side": "VARCHAR", "trade_id": "VARCHAR", "date": "DATE"},
    "book": {"price": "DECIMAL(18,10)", "qty": "DECIMAL(22,10)", "is_snapshot": "BOOLEAN",
             "checksum": "UINTEGER", "verified": "BOOLEAN"},
    "spread": {"bid_price": "DECIMAL(18,10)", "ask_qty": "DECIMAL(22,10)"},
    "ohlc": {"interval_begin": "TIMESTAMP WITH TIME ZONE", "volume": "DECIMAL(28,10)",
             "trades": "BIGINT", "interval": "INTEGER"},
    "ticker": {"bid": "DECIMAL(18,10)", "volume": "DECIMAL(28,10)"},
    "events": {"kind": "VARCHAR", "ts_recv": "TIMESTAMP WITH TIME ZONE"},
}


TABLES_RECORDED = ("trades", "book", "spread", "ohlc", "ticker", "events", "raw")

# Columns the API never fills (ts_exchange: v1 tickers carry no time). Every other column
# must be non-null in every row, except those in SOMETIMES_NULL, whose rule is tested apart.
ALWAYS_NULL = {
    "v1": {"trades": {"trade_id", "sequence"}, "book": {"sequence"},
           "ticker": {"ts_exchange", "change", "change_pct"}},
    "v2": {"trades": {"misc", "sequence"}, "book": {"sequence"},
           "ticker": {"last_qty", "volume_today", "vwap_today", "low_today", "high_today",
                      "open", "open_today", "trades_today"}},
}
SOMETIMES_NULL = {
    "v1": {"trades": {"misc"}, "book": {"checksum", "verified"}},
    "v2": {},
}
# Connection-level events (connected, status, stopped...) concern no symbol or channel.
EVENTS_SOMETIMES_NULL = {"symbol", "channel"}


def _schema_types(con, table: str) -> list[tuple[str, str]]:
    """The columns of ``recorder.core.schema.arrow_schema(table)`` as DuckDB types them."""
    rel = con.from_arrow(arrow_schema(table).empty_table())
    return list(zip(rel.columns, map(str, rel.types), strict=True))


def _described(con, relation: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {relation}").fetchall()]


def _check_types(con, data, table: str) -> None:
    expected = _schema_types(con, table)
    # The view adds the Hive partition date; the files themselves hold exactly the schema.
    assert _described(con, table) == [*expected, ("date", "DATE")], table
    files = str(data / table / "**" / "*.parquet")
    on_disk = f"SELECT * FROM read_parquet('{files}', hive_partitioning = false)"
    assert _described(con, on_disk) == expected, table
    for col, typ in EXPECTED_TYPES.get(table, {}).items():
        assert dict(expected + [("date", "DATE")])[col] == typ, (table, col)


def _check_nulls(con, api: str, table: str) -> None:
    cols = [c.name for c in TABLES[table]]
    n, *nulls = con.execute("SELECT count(*), " + ", ".join(
        f"count(*) - count({c})" for c in cols) + f" FROM {table}").fetchone()
    always = ALWAYS_NULL[api].get(table, set())
    sometimes = (EVENTS_SOMETIMES_NULL if table == "events"
                 else SOMETIMES_NULL[api].get(table, set()))
    for col, k in zip(cols, nulls, strict=True):
        if col in always:
            assert k == n, f"{api} {table}.{col} must be null (the exchange sends none)"
        elif col not in sometimes:
            assert k == 0, f"{api} {table}.{col}: {k} of {n} rows null"
    if api == "v1" and table == "book":
        # v1 snapshots carry no checksum, so they are neither verified nor failed.
        wrong = con.execute("SELECT count(*) FILTER (WHERE (checksum IS NULL) != is_snapshot),"
                            " count(*) FILTER (WHERE (verified IS NULL) != is_snapshot) "
                            "FROM book").fetchone()
        assert wrong == (0, 0)


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_every_public_channel_recorded(sim, tmp_path, api):
    data = tmp_path / "data"
    url = sim.urls[f"ws_{api}"]
    raw = "[output]\nraw = true\n"
    configs = [write_config(tmp_path, "pub.toml", api, url,
                            _subs("trade", "book", "spread", "ohlc"), extra=raw),
               write_config(tmp_path, "tick.toml", api, url, _subs("ticker"), extra=raw)]
    proc = run_recorder(configs, data, 4)
    assert proc.returncode == 0, proc.stderr
    con = db(data)
    for table in TABLES_RECORDED:
        n, symbols = con.execute(
            f"SELECT count(*), count(DISTINCT {'symbol' if table != 'raw' else 'NULL'}) "
            f"FROM {table}").fetchone()
        assert n > 0, table
        if table not in ("events", "raw"):
            assert symbols == 2, table
        _check_types(con, data, table)
        _check_nulls(con, api, table)
    # Canonical names whatever the API spelled on the wire.
    assert {r[0] for r in con.execute("SELECT DISTINCT symbol FROM trades").fetchall()} == {
        "BTC/USD", "ETH/USD"}
    # Exchange time is the exchange's, ts_recv ours; both microsecond UTC.
    bad = con.execute("SELECT count(*) FROM trades WHERE ts_exchange IS NULL "
                      "OR ts_exchange > ts_recv + INTERVAL 5 SECOND").fetchone()[0]
    assert bad == 0
    # Every book update verified against the exchange checksum; snapshots arrived.
    snaps, failures, verified = con.execute(
        "SELECT count(DISTINCT update_id) FILTER (WHERE is_snapshot), "
        "count(*) FILTER (WHERE verified = false), "
        "count(DISTINCT update_id) FILTER (WHERE verified) FROM book").fetchone()
    assert snaps >= 2 and failures == 0 and verified > 10
    # Common SQL on exact decimals runs without overflow.
    vwap = con.execute("SELECT sum(price * qty) / sum(qty) FROM trades").fetchone()[0]
    assert vwap > 0
    if api == "v2":
        ids = con.execute("SELECT symbol, list(trade_id::BIGINT ORDER BY trade_id::BIGINT) "
                          "FROM trades GROUP BY symbol").fetchall()
        for _sym, seq in ids:
            assert seq == sorted(set(seq)), "trade ids unique and increasing"
    kinds = {r[0] for r in con.execute("SELECT DISTINCT kind FROM events").fetchall()}
    assert {"connected", "status", "subscribed", "stopped"} <= kinds
    # Every frame received is in raw: the collectors' own counts say how many.
    frames = sum(json.loads(d)["frames"] for (d,) in con.execute(
        "SELECT detail FROM events WHERE kind = 'stopped'").fetchall())
    assert con.execute("SELECT count(*) FROM raw").fetchone()[0] == frames


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_sigterm_under_load_finishes_every_file_within_5s(tmp_path, api):
    """Two configs, every public channel, raw frames too, from a fast simulator: SIGTERM
    leaves only complete, readable files holding every frame received."""
    data = tmp_path / "data"
    with SimulatorProcess(["--seed", "9", "--rate", "20000"]) as fast:
        url = fast.urls[f"ws_{api}"]
        raw = "[output]\nraw = true\n"
        configs = [write_config(tmp_path, "pub.toml", api, url,
                                _subs("trade", "book", "spread", "ohlc"), extra=raw),
                   write_config(tmp_path, "tick.toml", api, url, _subs("ticker"), extra=raw)]
        proc = start_recorder(configs, data)
        try:
            # Load: wait until both collectors receive (the simulator counts what it sent).
            fast.wait_for(lambda st: st["connections"] == 2 and st["messages_total"] > 20_000,
                          timeout=30)
        finally:
            took = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, proc.stderr.read()
    print(f"\nSIGTERM under load ({api}): exited in {took:.2f} s")
    assert took < 5, f"SIGTERM took {took:.2f} s"
    files = all_files(data)
    tables = set()
    for f in files:
        assert f.suffix == ".parquet" and not f.name.startswith("."), f"leftover file {f}"
        table = f.relative_to(data).parts[0]
        tables.add(table)
        got = pq.read_table(f)  # complete and readable
        assert got.schema.remove_metadata() == arrow_schema(table), f
    assert set(TABLES_RECORDED) <= tables
    con = db(data)
    frames = [json.loads(d)["frames"] for (d,) in con.execute(
        "SELECT detail FROM events WHERE kind = 'stopped'").fetchall()]
    assert len(frames) == 2, "both collectors stopped cleanly"
    assert con.execute("SELECT count(*) FROM raw").fetchone()[0] == sum(frames) > 20_000
    for table in ("trades", "book", "spread", "ohlc", "ticker"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_pair_refused_at_runtime_leaves_the_others_running(sim, tmp_path, api):
    """SOL/USD is a pair Kraken lists (so the config is valid) that this simulator does not
    serve: its subscriptions are refused, the other pairs and channels keep flowing."""
    data = tmp_path / "data"
    pairs = '["BTC/USD", "SOL/USD", "ETH/USD"]'
    subs = (f'[[subscribe]]\nchannel = "book"\nsymbols = {pairs}\ndepth = 10\n\n'
            f'[[subscribe]]\nchannel = "trade"\nsymbols = {pairs}\n')
    cfg = write_config(tmp_path, "refused.toml", api, sim.urls[f"ws_{api}"], subs)
    proc = run_recorder(cfg, data, 4)
    assert proc.returncode == 0, proc.stderr
    con = db(data)
    refused = con.execute("SELECT symbol, channel, detail, ts_recv FROM events "
                          "WHERE kind = 'subscribe_error' ORDER BY channel").fetchall()
    assert [(r[0], r[1]) for r in refused] == [("SOL/USD", "book"), ("SOL/USD", "trade")]
    assert all("Currency pair not supported" in json.loads(r[2])["error"] for r in refused)
    kinds = Counter(r[0] for r in con.execute("SELECT kind FROM events").fetchall())
    assert kinds["connected"] == 1 and kinds["disconnected"] == 0, kinds
    assert kinds["subscribed"] == 4, "BTC/USD and ETH/USD on both channels"
    last_refusal = max(r[3] for r in refused)
    for table in ("book", "trades"):
        after = dict(con.execute(f"SELECT symbol, count(*) FROM {table} WHERE ts_recv > ? "
                                 "GROUP BY symbol", [last_refusal]).fetchall())
        assert set(after) == {"BTC/USD", "ETH/USD"} and min(after.values()) > 0, table
    assert con.execute("SELECT count(*) FROM book WHERE verified = false").fetchone()[0] == 0


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_subscribe_refused_by_the_rate_limit_is_retried(tmp_path, api):
    """"Exceeded msg rate" says "not now": the refused stream must not stay silent until
    some later reconnect. The collector reconnects after its backoff and subscribes again."""
    data = tmp_path / "data"
    subs = ('[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD", "ETH/USD"]\ndepth = 10\n\n'
            '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD", "ETH/USD"]\n')
    with SimulatorProcess(["--seed", "8", "--rate", "300"]) as own:
        own.control.reject_subscribes(1)  # the first subscribe request of the recorder
        cfg = write_config(tmp_path, "limited.toml", api, own.urls[f"ws_{api}"], subs)
        cfg.write_text(cfg.read_text() + "\n[connection]\nbackoff_initial = 0.2\n")
        proc = run_recorder(cfg, data, 5)
    assert proc.returncode == 0, proc.stderr
    con = db(data)
    events = con.execute("SELECT kind, detail FROM events ORDER BY ts_recv").fetchall()
    kinds = [k for k, _ in events]
    # v2 answers the request with success=false; v1 with a bare {"event": "error"}.
    refused = [json.loads(d) for k, d in events if k != "disconnected"
               and "Exceeded msg rate" in (d or "")]
    assert [r["error"] for r in refused] == ["Exceeded msg rate"], events
    ended = [json.loads(d)["reason"] for k, d in events if k == "disconnected"]
    assert ended == ["subscription refused for now: Exceeded msg rate"], ended
    assert kinds.count("connected") == 2
    last_connect = con.execute("SELECT max(ts_recv) FROM events WHERE kind = 'connected'"
                               ).fetchone()[0]
    for table in ("book", "trades"):
        after = dict(con.execute(f"SELECT symbol, count(*) FROM {table} WHERE ts_recv > ? "
                                 "GROUP BY symbol", [last_connect]).fetchall())
        assert set(after) == {"BTC/USD", "ETH/USD"}, table
    assert con.execute("SELECT count(*) FROM book WHERE verified = false").fetchone()[0] == 0


def test_heartbeats_keep_an_idle_connection_from_going_stale(tmp_path):
    """After the replayed capture ends the simulator sends only heartbeats (one a second):
    with stale_after = 2.5 s the connection must stay up, because heartbeats count."""
    data = tmp_path / "data"
    stale_after = 2.5
    pairs = json.dumps(CRYPTOFEED_PAIRS)
    with SimulatorProcess(["--replay", str(DATA / "cryptofeed" / "KRAKEN.ws.48.0"),
                           "--speed", "max"]) as s:
        cfg = write_config(tmp_path, "idle.toml", "v1", s.urls["ws_v1"],
                           f'[[subscribe]]\nchannel = "trade"\nsymbols = {pairs}\n',
                           extra=f"[output]\nraw = true\n[connection]\n"
                                 f"stale_after = {stale_after}\n")
        proc = start_recorder(cfg, data)
        try:
            s.wait_for(lambda st: st["replay_finished"] >= 1, timeout=30)
            time.sleep(3 * stale_after)  # idle: nothing but heartbeats
        finally:
            stop(proc)
        assert proc.returncode == 0, proc.stderr.read()
    con = db(data)
    kinds = Counter(r[0] for r in con.execute("SELECT kind FROM events").fetchall())
    assert kinds["stale"] == 0 and kinds["disconnected"] == 0 and kinds["connected"] == 1
    last_trade = con.execute("SELECT max(ts_recv) FROM trades").fetchone()[0]
    beats = [r[0] for r in con.execute(
        "SELECT epoch_us(ts_recv) FROM raw WHERE ts_recv > ? ORDER BY ts_recv",
        [last_trade]).fetchall()]
    frames = {r[0] for r in con.execute("SELECT frame FROM raw WHERE ts_recv > ?",
                                        [last_trade]).fetchall()}
    assert frames == {'{"event":"heartbeat"}'}, "only heartbeats after the capture ended"
    assert len(beats) >= 5
    idle_us = beats[-1] - beats[0]
    assert idle_us > 2 * stale_after * 1e6, "idle for longer than stale_after"
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert max(gaps) < stale_after * 1e6


def test_replayed_real_v2_capture_recorded_value_for_value(tmp_path):
    capture = DATA / "flashbook" / "live-btc-eth.ndjson"
    data = tmp_path / "data"
    with SimulatorProcess(["--replay", str(capture), "--speed", "max"]) as s:
        subs = ('[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD", "ETH/USD"]\n'
                'depth = 10\n\n[[subscribe]]\nchannel = "trade"\n'
                'symbols = ["BTC/USD", "ETH/USD"]\n')
        cfg = write_config(tmp_path, "replay.toml", "v2", s.urls["ws_v2"], subs)
        proc = run_recorder(cfg, data, 5)
        assert proc.returncode == 0, proc.stderr
    exp_book, exp_trades, exp_crc = Counter(), Counter(), []
    for frame in flashbook_frames():
        m = json.loads(frame, parse_float=Decimal)
        if m.get("channel") == "book":
            for d in m["data"]:
                exp_crc.append(d["checksum"])
                for key, side in (("bids", "bid"), ("asks", "ask")):
                    for lv in d[key]:
                        exp_book[(d["symbol"], side, lv["price"], lv["qty"])] += 1
        elif m.get("channel") == "trade":
            for t in m["data"]:
                exp_trades[(t["symbol"], t["side"], t["price"], t["qty"],
                            str(t["trade_id"]))] += 1
    con = db(data)
    got_book = Counter(con.execute("SELECT symbol, side, price, qty FROM book").fetchall())
    assert got_book == exp_book
    got_trades = Counter(con.execute(
        "SELECT symbol, side, price, qty, trade_id FROM trades").fetchall())
    assert got_trades == exp_trades
    crcs = [r[0] for r in con.execute(
        "SELECT any_value(checksum) FROM book GROUP BY update_id ORDER BY update_id").fetchall()]
    assert crcs == exp_crc
    assert con.execute("SELECT count(*) FROM book WHERE NOT verified").fetchone()[0] == 0
    assert con.execute("SELECT count(DISTINCT update_id) FROM book WHERE verified"
                       ).fetchone()[0] == 2962


def _us(text: str) -> int:
    """Kraken v1 epoch seconds text ("1618678142.557535") as exact microseconds."""
    us = Decimal(text) * 1_000_000
    assert us == us.to_integral_value(), text
    return int(us)


def _canonical(pair: str) -> str:
    return "/".join("BTC" if a == "XBT" else a for a in pair.split("/"))


def _expected_v1(frames: list[str], channel: str) -> tuple[Counter, list[tuple[str, int]]]:
    """Rows a v1 capture must produce, read with json and Decimal only; and the book
    checksums in wire order."""
    rows: Counter = Counter()
    crcs = []
    for frame in frames:
        m = json.loads(frame)
        if not isinstance(m, list) or not m[-2].startswith(channel):
            continue
        sym = _canonical(m[-1])
        if channel == "book":
            if "as" in m[1] or "bs" in m[1]:
                parts, snapshot = [{"a": m[1].get("as", []), "b": m[1].get("bs", [])}], True
            else:
                parts, snapshot = m[1:-2], False
                crcs.append((sym, int(parts[-1]["c"])))
            for part in parts:
                for key, side in (("a", "ask"), ("b", "bid")):
                    for lv in part.get(key, []):
                        rows[(sym, side, Decimal(lv[0]), Decimal(lv[1]), _us(lv[2]), snapshot,
                              len(lv) > 3 and lv[3] == "r")] += 1
        elif channel == "trade":
            for price, qty, ts, side, kind, misc in m[1]:
                rows[(sym, Decimal(price), Decimal(qty), _us(ts),
                      {"b": "buy", "s": "sell"}[side], {"l": "limit", "m": "market"}[kind],
                      misc or None)] += 1
        elif channel == "ticker":
            t = m[1]
            values = [t["b"][0], t["b"][2], t["a"][0], t["a"][2], t["c"][0], t["c"][1],
                      t["v"][1], t["v"][0], t["p"][1], t["p"][0], t["l"][1], t["l"][0],
                      t["h"][1], t["h"][0], t["o"][1], t["o"][0]]
            rows[(sym, None, *map(Decimal, map(str, values)), int(t["t"][1]),
                  int(t["t"][0]))] += 1
    return rows, crcs


V1_COLUMNS = {
    "book": "symbol side price qty epoch_us(ts_exchange) is_snapshot republish",
    "trades": "symbol price qty epoch_us(ts_exchange) side ord_type misc",
    "ticker": "symbol ts_exchange bid bid_qty ask ask_qty last last_qty volume volume_today "
              "vwap vwap_today low low_today high high_today open open_today trades "
              "trades_today",
}


def _as_stored(table: str, rows: Counter) -> tuple[Counter, Counter]:
    """The expected rows as the table can hold them, and the values it cannot.

    A number with more integer digits than its decimal column holds is stored as NULL and
    reported, with its exact text, in a value_unconvertible event (nothing disappears
    silently); every other value must come back exactly."""
    types = {f.name: f.type for f in arrow_schema(table)}
    cols = V1_COLUMNS[table].split()
    stored: Counter = Counter()
    dropped: Counter = Counter()
    for row, n in rows.items():
        out = list(row)
        for i, (col, v) in enumerate(zip(cols, row, strict=True)):
            typ = types.get(col)
            if isinstance(v, Decimal) and pa.types.is_decimal(typ):
                digits = len(str(abs(int(v)))) if abs(v) >= 1 else 0
                if digits > typ.precision - typ.scale:
                    out[i] = None
                    dropped[(row[0], col, str(v))] += n
        stored[tuple(out)] += n
    return stored, dropped


@pytest.mark.parametrize("capture,channel,pairs,depth", [
    ("cryptofeed/KRAKEN.ws.50.0", "book", CRYPTOFEED_PAIRS, 1000),
    ("python-kraken-sdk/orderbook-v1.json", "book", ["XBT/USD"], 10),
    ("cryptofeed/KRAKEN.ws.48.0", "trade", CRYPTOFEED_PAIRS, None),
    ("cryptofeed/KRAKEN.ws.49.0", "ticker", CRYPTOFEED_PAIRS, None),
])
def test_replayed_real_v1_capture_recorded_value_for_value(tmp_path, capture, channel, pairs,
                                                           depth):
    """Every v1 capture (there is no v1 spread or ohlc capture) through the simulator and
    `recorder run`: every price, quantity and time in Parquet equals the frame's text."""
    if capture.startswith("cryptofeed"):
        frames = list(cryptofeed_frames(capture.split("/")[1]))
    else:
        frames = list(sdk_v1_frames())
    expected, exp_crcs = _expected_v1(frames, channel)
    assert expected, capture
    table = "trades" if channel == "trade" else channel
    data = tmp_path / "data"
    with SimulatorProcess(["--replay", str(DATA / capture), "--speed", "max"]) as s:
        subs = f'[[subscribe]]\nchannel = "{channel}"\nsymbols = {json.dumps(pairs)}\n'
        if depth:
            subs += f"depth = {depth}\n"
        cfg = write_config(tmp_path, "v1.toml", "v1", s.urls["ws_v1"], subs)
        proc = start_recorder(cfg, data)
        try:
            s.wait_for(lambda st: st["replay_finished"] >= 1, timeout=60)
            _wait_rows(data, table, sum(expected.values()))
        finally:
            stop(proc)
        assert proc.returncode == 0, proc.stderr.read()
    con = db(data)
    expected, too_wide = _as_stored(table, expected)
    sql = f"SELECT {', '.join(V1_COLUMNS[table].split())} FROM {table}"
    assert Counter(con.execute(sql).fetchall()) == expected
    reported = Counter()
    for sym, d in con.execute("SELECT symbol, detail FROM events "
                              "WHERE kind = 'value_unconvertible'").fetchall():
        d = json.loads(d)
        assert d["table"] == table
        reported[(sym, d["column"], d["text"])] += 1
    assert reported == too_wide
    if channel == "book":
        crcs = con.execute("SELECT symbol, any_value(checksum) FROM book WHERE NOT is_snapshot "
                           "GROUP BY symbol, update_id ORDER BY update_id").fetchall()
        assert crcs == exp_crcs
        assert con.execute("SELECT count(DISTINCT update_id) FILTER (WHERE verified), "
                           "count(*) FILTER (WHERE NOT verified) FROM book").fetchone() == (
                               len(exp_crcs), 0)
        if depth == 1000:
            # The deep book, not only the checksummed top 10, is recorded exactly.
            deepest = con.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM book WHERE "
                                  "is_snapshot GROUP BY symbol, side)").fetchone()[0]
            assert deepest > 10


def _wait_rows(data, table: str, n: int, timeout: float = 60) -> None:
    """Until ``n`` rows of ``table`` are queryable (journaled rows count), or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db(data).execute(f"SELECT count(*) FROM {table}").fetchone()[0] >= n:
            return
        time.sleep(0.2)


def test_demo_records_every_public_channel_and_prints_a_summary(tmp_path):
    import os
    import subprocess
    import sys

    from tests.e2e import ROOT

    env = dict(os.environ, DEMO_SECONDS="3", DEMO_DATA=str(tmp_path / "demo"))
    proc = subprocess.run([sys.executable, "-m", "recorder.demo"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    for table in ("book", "ohlc", "spread", "ticker", "trades"):
        assert f"│ {table}" in proc.stdout
    con = db(tmp_path / "demo")
    assert con.execute("SELECT count(*) FROM book WHERE verified = false").fetchone()[0] == 0
