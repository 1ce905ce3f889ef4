"""The v1/v2 adapters against every real Kraken capture.

Expected values are read from the frames with the standard library's json module (numbers
kept as text), independently of the adapters' msgspec decoding.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa
import pytest

from recorder.core.schema import TABLES, column_index
from recorder.exchanges.kraken import v1, v2
from recorder.exchanges.kraken.common import new_rows
from sinks.convert import rows_to_batch
from tests.captures import cryptofeed_frames, flashbook_frames, sdk_v1_frames


def epoch_us(text: str) -> int:
    """v1 time text (decimal epoch seconds) as integer microseconds, as stored."""
    return int(Decimal(text) * 1_000_000)


def _parse_all(mod, frames, **kw):
    out = new_rows()
    controls = []
    for i, frame in enumerate(frames):
        controls.append(mod.parse(mod.decode(frame.encode()), 1_000_000 + i, i, out, **kw))
    return out, controls


def _col(table: str, rows: list[tuple], name: str) -> list:
    i = column_index(table, name)
    return [r[i] for r in rows]


def test_rows_match_table_layout():
    for frames, mod in ((cryptofeed_frames("KRAKEN.ws.50.0"), v1), (flashbook_frames(), v2)):
        out, _ = _parse_all(mod, frames)
        for table, rows in out.items():
            for r in rows:
                assert len(r) == len(TABLES[table]), table


def test_v1_trades_capture():
    frames = list(cryptofeed_frames("KRAKEN.ws.48.0"))
    out, _ = _parse_all(v1, frames)
    expected = []
    for f in frames:
        m = json.loads(f)
        if isinstance(m, list) and m[-2] == "trade":
            pair = m[-1].replace("XBT", "BTC")
            for t in m[1]:
                expected.append((pair, t[0], t[1], epoch_us(t[2]),
                                 {"b": "buy", "s": "sell"}[t[3]],
                                 {"l": "limit", "m": "market"}[t[4]]))
    got = [(r[1], r[4], r[5], r[2], r[6], r[8]) for r in out["trades"]]
    assert got == expected and len(got) > 0
    assert all(r[7] is None for r in out["trades"]), "v1 trades carry no trade id"
    kinds = [e[2] for e in out["events"]]
    assert kinds.count("subscribed") == 10 and kinds.count("status") == 1


def test_v1_ticker_capture():
    frames = list(cryptofeed_frames("KRAKEN.ws.49.0"))
    out, _ = _parse_all(v1, frames)
    tick = [json.loads(f) for f in frames]
    tick = [m for m in tick if isinstance(m, list) and m[-2] == "ticker"]
    assert len(out["ticker"]) == len(tick) > 0
    for row, m in zip(out["ticker"], tick, strict=True):
        t = m[1]
        assert row[1] == m[-1].replace("XBT", "BTC")
        assert row[2] is None, "v1 ticker has no exchange timestamp"
        assert _col("ticker", [row], "bid") == [t["b"][0]]
        assert _col("ticker", [row], "ask_qty") == [t["a"][2]]
        assert _col("ticker", [row], "last_qty") == [t["c"][1]]
        assert _col("ticker", [row], "volume") == [t["v"][1]]
        assert _col("ticker", [row], "volume_today") == [t["v"][0]]
        assert _col("ticker", [row], "trades") == [t["t"][1]]
        assert _col("ticker", [row], "open_today") == [t["o"][0]]


def _v1_book_levels(m):
    """(side, price, qty, ts, republish) of a v1 book frame, and its checksum text."""
    levels, crc = [], None
    for part in m[1:-2]:
        for key, side in (("as", "ask"), ("bs", "bid"), ("a", "ask"), ("b", "bid")):
            for lv in part.get(key, []):
                levels.append((side, lv[0], lv[1], lv[2], len(lv) > 3 and lv[3] == "r"))
        crc = part.get("c", crc)
    return levels, crc


@pytest.mark.parametrize("source", ["cryptofeed", "sdk"])
def test_v1_book_capture(source):
    frames = list(cryptofeed_frames("KRAKEN.ws.50.0") if source == "cryptofeed"
                  else sdk_v1_frames())
    out, _ = _parse_all(v1, frames)
    rows = out["book"]
    expected, checksums, two_object = [], 0, 0
    for i, f in enumerate(frames):
        m = json.loads(f)
        if not (isinstance(m, list) and str(m[-2]).startswith("book")):
            continue
        levels, crc = _v1_book_levels(m)
        two_object += len(m) == 5
        checksums += crc is not None
        snap = "as" in m[1] or "bs" in m[1]
        for side, price, qty, ts, rep in levels:
            # The level's time stays its wire text; the sink stores it exactly (below).
            expected.append((m[-1].replace("XBT", "BTC"), ts, side, price, qty, snap, i,
                             None if crc is None else int(crc), rep, int(m[-2][5:])))
    got = [r[1:3] + r[4:] for r in rows]
    got = [(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9]) for g in got]
    assert got == expected
    batch, problems = rows_to_batch("book", rows)
    assert not [p for p in problems if p.column == "ts_exchange"]
    stored = batch.column(column_index("book", "ts_exchange")).cast(pa.int64()).to_pylist()
    assert stored == [epoch_us(e[1]) for e in expected]
    assert checksums == (4269 if source == "cryptofeed" else 979)
    if source == "cryptofeed":
        assert two_object == 1
    else:
        assert sum(r[10] for r in rows) > 0, "the sdk capture carries republished levels"


def test_v2_flashbook_capture():
    frames = list(flashbook_frames())
    out, controls = _parse_all(v2, frames)
    exp_book, exp_trades = [], []
    for i, f in enumerate(frames):
        m = json.loads(f, parse_float=str, parse_int=str)
        if m.get("channel") == "book":
            for d in m["data"]:
                for key, side in (("bids", "bid"), ("asks", "ask")):
                    for lv in d[key]:
                        exp_book.append((d["symbol"], d["timestamp"], side, lv["price"],
                                         lv["qty"], m["type"] == "snapshot", i,
                                         int(d["checksum"])))
        elif m.get("channel") == "trade":
            for t in m["data"]:
                exp_trades.append((t["symbol"], t["timestamp"], t["price"], t["qty"],
                                   t["side"], t["trade_id"], t["ord_type"]))
    got_book = [(r[1], r[2], r[4], r[5], r[6], r[7], r[8], r[9]) for r in out["book"]]
    assert got_book == exp_book
    got_trades = [(r[1], r[2], r[4], r[5], r[6], r[7], r[8]) for r in out["trades"]]
    assert got_trades == exp_trades and exp_trades
    # Trailing zeros survive decoding: the exact wire text is kept.
    assert any(p.endswith("0") and "." in p for p in _col("book", out["book"], "qty"))
    kinds = [c.kind for c in controls if c is not None]
    assert kinds.count("heartbeat") == 23 and kinds.count("subscribed") >= 4
    assert kinds.count("status") == 1


def test_v2_ticker_bbo_goes_to_spread_and_ohlc():
    ticker = ('{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":83744.2,'
              '"bid_qty":0.56251979,"ask":83744.3,"ask_qty":0.00044780,"last":83744.3,'
              '"volume":3156.84782110,"vwap":84174.6,"low":83163.6,"high":85247.4,'
              '"change":-429.3,"change_pct":-0.51,"trades":135262,'
              '"timestamp":"2026-09-25T17:48:26.844359Z"}]}')
    out, _ = _parse_all(v2, [ticker], bbo_symbols=frozenset({"BTC/USD"}))
    assert out["spread"] == [("kraken", "BTC/USD", "2026-09-25T17:48:26.844359Z", 1_000_000,
                              "83744.2", "0.56251979", "83744.3", "0.00044780")]
    out, _ = _parse_all(v2, [ticker])
    assert _col("ticker", out["ticker"], "change") == ["-429.3"]
    assert _col("ticker", out["ticker"], "trades") == [135262]
    ohlc = ('{"channel":"ohlc","type":"update","timestamp":"2026-09-25T17:48:26.844359566Z",'
            '"data":[{"symbol":"BTC/USD","open":83729.5,"high":83745.2,"low":83729.4,'
            '"close":83744.3,"trades":33,"volume":0.21155628,"vwap":83736.4,'
            '"interval_begin":"2026-09-25T17:48:00.000000000Z","interval":1,'
            '"timestamp":"2026-09-25T17:49:00.000000Z"}]}')
    out, _ = _parse_all(v2, [ohlc])
    assert out["ohlc"] == [("kraken", "BTC/USD", 1, "2026-09-25T17:48:00.000000000Z",
                            "2026-09-25T17:48:26.844359566Z", 1_000_000, "83729.5", "83745.2",
                            "83729.4", "83744.3", "83736.4", "0.21155628", 33, "ws")]


def test_v1_spread_and_ohlc():
    frames = ['[341,["37080.10000","37080.20000","1699797184.943422","21.82608437",'
              '"0.50775187"],"spread","XBT/USD"]',
              '[343,["1699797181.803577","1699797240.000000","37080.20000","37080.20000",'
              '"37080.20000","37080.20000","37080.20000","0.01032369",2],"ohlc-1","XBT/USD"]']
    out, _ = _parse_all(v1, frames)
    assert out["spread"] == [("kraken", "BTC/USD", 1699797184943422, 1_000_000,
                              "37080.10000", "21.82608437", "37080.20000", "0.50775187")]
    assert out["ohlc"] == [("kraken", "BTC/USD", 1, 1699797180000000, 1699797181803577,
                            1_000_001, "37080.20000", "37080.20000", "37080.20000",
                            "37080.20000", "37080.20000", "0.01032369", 2, "ws")]


def test_errors_become_events_not_exceptions():
    frames_v1 = ['{"errorMessage":"Subscription depth not supported","event":'
                 '"subscriptionStatus","pair":"XBT/USD","status":"error","subscription":'
                 '{"depth":42,"name":"book"}}',
                 '{"errorMessage":"Exceeded msg rate","event":"error","reqid":42}']
    out, controls = _parse_all(v1, frames_v1)
    assert [c.kind for c in controls] == ["subscribe_error", "error"]
    assert controls[0].value == "Subscription depth not supported"
    assert controls[0].symbol == "BTC/USD" and controls[0].channel == "book"
    assert [e[2] for e in out["events"]] == ["subscribe_error", "error"]
    frames_v2 = ['{"error":"Currency pair not supported XBT/USD","method":"subscribe",'
                 '"success":false,"symbol":"XBT/USD","time_in":"2026-09-25T17:48:54.701041Z",'
                 '"time_out":"2026-09-25T17:48:54.701062Z"}']
    out, controls = _parse_all(v2, frames_v2)
    assert controls[0].kind == "subscribe_error"
    assert json.loads(out["events"][0][5])["error"] == "Currency pair not supported XBT/USD"


def test_refusals_name_the_request_they_answer():
    """A rate-limited resubscribe is matched to its resync only by the request id."""
    _, controls = _parse_all(v1, ['{"errorMessage":"Exceeded msg rate","event":"error",'
                                  '"reqid":42}',
                                  '{"errorMessage":"Subscription Not Found","event":'
                                  '"subscriptionStatus","pair":"XBT/USD","status":"error",'
                                  '"reqid":41,"subscription":{"depth":10,"name":"book"}}'])
    assert [(c.kind, c.extra["reqid"]) for c in controls] == [("error", 42),
                                                               ("subscribe_error", 41)]
    _, controls = _parse_all(v2, ['{"error":"Exceeded msg rate","method":"subscribe",'
                                  '"req_id":7,"success":false}'])
    assert (controls[0].kind, controls[0].extra["reqid"]) == ("subscribe_error", 7)


def test_v2_refusal_names_the_channel_of_its_request():
    frame = ('{"error":"Currency pair not supported SOL/USD","method":"subscribe",'
             '"req_id":3,"success":false,"symbol":"SOL/USD"}')
    out, controls = _parse_all(v2, [frame], req_channels={2: "book", 3: "trade"})
    assert (controls[0].symbol, controls[0].channel) == ("SOL/USD", "trade")
    assert out["events"][0][3:5] == ("SOL/USD", "trade")
    out, controls = _parse_all(v2, [frame])
    assert controls[0].channel is None, "unknown request: no channel is guessed"


@pytest.mark.parametrize("mod,method,rid", [(v1, "event", "reqid"), (v2, "method", "req_id")])
def test_book_resync_is_an_unsubscribe_and_a_subscribe_with_their_own_ids(mod, method, rid):
    reqs = [json.loads(r) for r in mod.book_resync_requests("BTC/USD", 25, 100)]
    assert [(r[method], r[rid]) for r in reqs] == [("unsubscribe", 100), ("subscribe", 101)]
    for r in reqs:
        if mod is v1:
            assert r["pair"] == ["XBT/USD"] and r["subscription"] == {"name": "book",
                                                                      "depth": 25}
        else:
            assert r["params"]["symbol"] == ["BTC/USD"] and r["params"]["depth"] == 25
    if mod is v2:
        assert reqs[1]["params"]["snapshot"] is True


def test_status_connection_id_above_2_63():
    out, controls = _parse_all(v1, ['{"connectionID":18239578009413566319,"event":'
                                    '"systemStatus","status":"online","version":"1.8.3"}'])
    assert controls[0].kind == "status" and controls[0].value == "online"
    assert json.loads(out["events"][0][5])["connection_id"] == 18239578009413566319


@pytest.mark.parametrize("text, expected", [
    ("1618678142.557535", 1618678142557535),  # v1's usual six decimals (the fast path)
    (".123456", 123456),  # six decimals and nothing before the point: still the fast path
    ("5.5", 5500000),
    ("1618678142.5575359", 1618678142557535),  # digits beyond the microsecond dropped
    ("1618678142", 1618678142000000),
    (None, None),
])
def test_epoch_us_is_exact_in_every_form(text, expected):
    from recorder.exchanges.kraken.common import epoch_us

    assert epoch_us(text) == expected
