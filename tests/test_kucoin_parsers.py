"""The KuCoin parser against the real and documented frames in ../shared/data/kucoin.

Expected values are read from the frames with the standard library's json module (floats
kept as their text), independently of the parser's msgspec decoding; tardis-node's expected
output is an independent check of the trade and quote mapping.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from recorder.core.events import new_rows
from recorder.core.schema import TABLES, column_index
from recorder.exchanges.kucoin.common import TYPE_MINUTES
from recorder.exchanges.kucoin.parse import Parser, decode

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kucoin"
MALFORMED = (KeyError, ValueError, TypeError, IndexError, AttributeError, msgspec.DecodeError)


def _lines() -> list[str]:
    return (DATA / "ws-public.ndjson").read_text().splitlines()


def _frame(line_no: int) -> str:
    return _lines()[line_no - 1]


def _exact(text: str):
    return json.loads(text, parse_float=str)


def _frames_with_topic(prefix: str) -> list[tuple[int, str]]:
    out = []
    for i, line in enumerate(_lines(), 1):
        m = json.loads(line)
        if m.get("type") == "message" and m["topic"].partition(":")[0] == prefix:
            out.append((i, line))
    return out


def _parse(lines, parser: Parser | None = None):
    parser = parser or Parser()
    out = new_rows()
    controls = [parser.parse(decode(line.encode()), 1_000_000 + i, 10 + i, out)
                for i, line in enumerate(lines)]
    return out, controls


def _col(table: str, row: tuple, name: str):
    return row[column_index(table, name)]


def _us(iso: str) -> int:
    t = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def test_every_frame_parses_into_rows_of_the_table_layout():
    out, _ = _parse(_lines())
    assert sum(len(rows) for rows in out.values()) > 100
    for table, rows in out.items():
        for r in rows:
            assert len(r) == len(TABLES[table]), table


def test_trades():
    frames = _frames_with_topic("/market/match")
    out, controls = _parse([line for _, line in frames])
    assert controls == [None] * len(frames) and len(out["trades"]) == len(frames) == 6
    for row, (_, line) in zip(out["trades"], frames, strict=True):
        d = _exact(line)["data"]
        assert _col("trades", row, "symbol") == d["symbol"].replace("-", "/")
        assert _col("trades", row, "ts_exchange") == int(d["time"]) // 1000
        assert _col("trades", row, "price") == d["price"]
        assert _col("trades", row, "qty") == d["size"]
        assert _col("trades", row, "side") == d["side"]
        assert _col("trades", row, "trade_id") == d["tradeId"]
        assert _col("trades", row, "sequence") == int(d["sequence"])
        assert _col("trades", row, "ord_type") is None
        assert _col("trades", row, "source") == "ws"
    # A sequence above 2^53 (the 2024 spec example) stays exact.
    assert _col("trades", out["trades"][-1], "sequence") == 11067996711960577 > 2**53


def test_trades_agree_with_tardis():
    expected = json.loads((DATA / "tardis-expected.json").read_text())["results"]
    checked = 0
    for result in expected:
        for t in result["tardis_output"]:
            if t["type"] != "trade":
                continue
            out, _ = _parse([_frame(result["ws_public_line"])])
            (row,) = out["trades"]
            assert _col("trades", row, "trade_id") == t["id"]
            assert _col("trades", row, "side") == t["side"]
            assert _col("trades", row, "symbol") == t["symbol"].replace("-", "/")
            assert Decimal(_col("trades", row, "price")) == Decimal(repr(t["price"]))
            assert Decimal(_col("trades", row, "qty")) == Decimal(repr(t["amount"]))
            assert _col("trades", row, "ts_exchange") == _us(t["timestamp"])
            checked += 1
    assert checked == 3


def test_spread_from_ticker_frames():
    frames = _frames_with_topic("/market/ticker")
    out, _ = _parse([line for _, line in frames])
    assert len(out["spread"]) == len(frames) == 8
    for row, (_, line) in zip(out["spread"], frames, strict=True):
        m = _exact(line)
        d = m["data"]
        wire = m["subject"] if m["topic"].endswith(":all") else m["topic"].split(":")[1]
        assert row[1] == wire.replace("-", "/")
        assert row[2] == d.get("time", d.get("Time")) * 1000
        assert row[4:] == (d["bestBid"], d["bestBidSize"], d["bestAsk"], d["bestAskSize"])


def test_spread_agrees_with_tardis_book_ticker():
    results = json.loads((DATA / "tardis-expected.json").read_text())["results"]
    (result,) = [r for r in results if r["tardis_output"]
                 and r["tardis_output"][0]["type"] == "book_ticker"]
    t = result["tardis_output"][0]
    out, _ = _parse([_frame(result["ws_public_line"])])
    (row,) = out["spread"]
    assert row[1] == t["symbol"].replace("-", "/")
    assert row[2] == _us(t["timestamp"])
    got = [Decimal(v) for v in row[4:]]
    assert got == [Decimal(repr(t[k])) for k in ("bidPrice", "bidAmount", "askPrice",
                                                 "askAmount")]


@pytest.mark.parametrize("prefix,depth", [("/spotMarket/level2Depth5", 5),
                                          ("/spotMarket/level2Depth50", 50)])
def test_top_n_snapshots(prefix, depth):
    frames = _frames_with_topic(prefix)
    assert frames
    for i, line in frames:
        out, controls = _parse([line])
        assert controls == [None]
        m = _exact(line)
        d = m["data"]
        expected = [("bid", p, q) for p, q in d["bids"]] + [("ask", p, q) for p, q in d["asks"]]
        rows = out["book"]
        assert [(r[4], r[5], r[6]) for r in rows] == expected, i
        for r in rows:
            assert r[1] == m["topic"].split(":")[1].replace("-", "/")
            assert _col("book", r, "ts_exchange") == d["timestamp"] * 1000
            assert _col("book", r, "is_snapshot") is True
            assert _col("book", r, "depth") == depth
            assert _col("book", r, "sequence") is None
            assert _col("book", r, "verified") is None
            assert _col("book", r, "checksum") is None
            assert _col("book", r, "republish") is False
            assert _col("book", r, "update_id") == 10


def test_candles():
    frames = _frames_with_topic("/market/candles")
    out, _ = _parse([line for _, line in frames])
    assert len(out["ohlc"]) == len(frames) == 3
    for row, (_, line) in zip(out["ohlc"], frames, strict=True):
        m = _exact(line)
        d = m["data"]
        start, o, c, h, lo, vol, _turnover = d["candles"]  # O, C, H, L order on the wire
        kind = m["topic"].rpartition("_")[2]
        assert row[1] == d["symbol"].replace("-", "/")
        assert _col("ohlc", row, "interval") == TYPE_MINUTES[kind]
        assert _col("ohlc", row, "interval_begin") == int(start) * 1_000_000
        assert _col("ohlc", row, "ts_exchange") == d["time"] // 1000
        assert (_col("ohlc", row, "open"), _col("ohlc", row, "high"), _col("ohlc", row, "low"),
                _col("ohlc", row, "close")) == (o, h, lo, c)
        assert _col("ohlc", row, "volume") == vol
        assert _col("ohlc", row, "vwap") is None and _col("ohlc", row, "trades") is None
    assert [r[2] for r in out["ohlc"]] == [10080, 1, 60]


def test_market_snapshot_to_ticker():
    frames = _frames_with_topic("/market/snapshot")
    out, _ = _parse([line for _, line in frames])
    assert len(out["ticker"]) == len(frames) == 8
    for row, (i, line) in zip(out["ticker"], frames, strict=True):
        d = _exact(line)["data"]["data"]

        def text(v):
            return None if v is None else str(v)

        col = {c.name: row[k] for k, c in enumerate(TABLES["ticker"])}
        assert col["symbol"] == d["symbol"].replace("-", "/"), i
        assert col["ts_exchange"] == d["datetime"] * 1000
        assert col["bid"] == text(d["buy"]) and col["ask"] == text(d["sell"])
        assert col["bid_qty"] == text(d.get("bidSize"))
        assert col["ask_qty"] == text(d.get("askSize"))
        assert col["last"] == text(d["lastTradedPrice"])
        assert col["volume"] == text(d["vol"])
        assert (col["low"], col["high"], col["open"]) == (text(d["low"]), text(d["high"]),
                                                           text(d["open"]))
        assert col["change"] == text(d["changePrice"])
        assert Decimal(col["change_pct"]) == Decimal(text(d["changeRate"])) * 100
        for empty in ("last_qty", "volume_today", "vwap", "vwap_today", "low_today",
                      "high_today", "open_today", "trades", "trades_today"):
            assert col[empty] is None, empty
    # Exact text, trailing zeros and all (JSON numbers with 20 decimals).
    assert out["ticker"][0][column_index("ticker", "high")] == "31901.40000000000000000000"
    assert out["ticker"][0][column_index("ticker", "change_pct")] == "-5.34"


def test_control_frames():
    out, controls = _parse(_lines()[:6])
    kinds = [c.kind for c in controls]
    assert kinds == ["welcome", "subscribed", "subscribed", "subscribed", "pong",
                     "subscribe_error"]
    assert controls[1].extra["id"] == json.loads(_frame(2))["id"]
    err = controls[5]
    assert err.value == json.loads(_frame(6))["data"] and err.extra["code"] == 509
    from recorder.exchanges.kucoin.feed import refused_for_now, session_invalid

    assert refused_for_now(err.value) and not session_invalid(err.value)
    assert [e[2] for e in out["events"]] == ["subscribed"] * 3 + ["subscribe_error"]


def test_ack_names_the_channel_of_our_request_ids():
    out, (control,) = _parse(['{"id":"7.book","type":"ack"}'])
    assert control.kind == "subscribed" and control.channel == "book"
    assert out["events"][0][4] == "book"


def test_topic_not_found_is_a_subscribe_error_naming_symbol_and_channel():
    # The frame quoted in kucoin-protocol.md (python-kucoin#52).
    frame = ('{"id":"1551623050668","type":"error","code":404,'
             '"data":"topic /market/level2:BSV-BTC is not found"}')
    out, (control,) = _parse([frame])
    assert (control.kind, control.symbol, control.channel) == ("subscribe_error", "BSV/BTC",
                                                                "book")
    assert control.value == "topic /market/level2:BSV-BTC is not found"
    (ev,) = out["events"]
    assert (ev[2], ev[3], ev[4]) == ("subscribe_error", "BSV/BTC", "book")
    assert json.loads(ev[5])["code"] == 404


def test_expired_token_invalidates_the_session():
    # cryptofeed#1023, quoted in kucoin-protocol.md.
    frame = '{"id":"660fd6c84d0eab582c237b51","type":"error","code":401,"data":"token is expired"}'
    out, (control,) = _parse([frame])
    from recorder.exchanges.kucoin.feed import refused_for_now, session_invalid

    assert control.kind == "error" and session_invalid(control.value)
    assert not refused_for_now(control.value)
    assert out["events"][0][2] == "error"


def test_unknown_topics_and_types_are_events_not_exceptions():
    frames = [line for i, line in enumerate(_lines(), 1)
              if json.loads(line).get("topic", "").startswith(
                  ("/spotMarket/level1", "/callauction", "/spotMarket/level3"))]
    frames.append('{"type":"notice","data":{}}')
    out, controls = _parse(frames)
    assert controls == [None] * len(frames)
    assert [e[2] for e in out["events"]] == ["unknown_event"] * len(frames)
    assert all(not rows for name, rows in out.items() if name != "events")


def test_a_recorded_rest_answer_parses_to_nothing():
    body = json.loads((DATA / "rest.json").read_text())["endpoints"][
        "POST /api/v1/bullet-public"][0]["body"]
    body["data"]["token"] = "<redacted>"
    out, controls = _parse([json.dumps(body)])
    assert controls == [None] and not any(out.values())


@pytest.mark.parametrize("frame", [
    b"[1,2]", b'"text"', b"5", b"{not json", b"",
    b'{"type":"message","data":{}}',
    b'{"type":"message","topic":7,"data":{}}',
    b'{"type":"message","topic":"/market/match:BTC-USDT","data":{"symbol":"BTC-USDT"}}',
    b'{"type":"message","topic":"/market/match:BTC-USDT","data":{"symbol":"BTC-USDT",'
    b'"price":"abc","size":"1","side":"buy","tradeId":"1","time":"1","sequence":"1"}}',
    b'{"type":"message","topic":"/market/ticker:BTC-USDT","data":{"bestBid":[1]}}',
    b'{"type":"message","topic":"/spotMarket/level2Depth5:BTC-USDT","data":{"bids":null}}',
    b'{"type":"message","topic":"/spotMarket/level2Depth5:BTC-USDT",'
    b'"data":{"bids":[["1"]],"asks":[]}}',
    b'{"type":"message","topic":"/market/candles:BTC-USDT_7min",'
    b'"data":{"candles":["1","1","1","1","1","1","1"]}}',
    b'{"type":"message","topic":"/market/candles:BTC-USDT_1min","data":{"candles":["1"]}}',
    b'{"type":"message","topic":"/market/snapshot:BTC-USDT","data":{"data":[]}}',
    b'{"type":"message","topic":"/market/level2:BTC-USDT","data":{"changes":[]}}',
    b'{"type":"message","topic":"/market/level2:BTC-USDT","data":{"sequenceStart":"x",'
    b'"sequenceEnd":1,"changes":{}}}',
    b'{"type":"message","topic":"/market/level2:BTC-USDT","data":{"sequenceStart":1,'
    b'"sequenceEnd":1,"changes":{"asks":[["1","2"]]}}}',
    b'{"type":"message","topic":"/market/level2:BTC-USDT","data":{"sequenceStart":1,'
    b'"sequenceEnd":1,"changes":["asks"]}}',
    b'{"type":"rest_snapshot","topic":"/market/level2:BTC-USDT","data":{"sequence":"1",'
    b'"bids":[["1","x"]],"asks":[]}}',
    b'{"type":"rest_snapshot","topic":"/market/match:BTC-USDT","data":{}}',
])
def test_garbage_raises_what_the_runtime_records_as_malformed(frame):
    parser = Parser()
    out = new_rows()
    with pytest.raises(MALFORMED):
        parser.parse(decode(frame), 1, 1, out)
    assert not any(out.values()), "no row may be left behind by a malformed frame"
    assert parser.books.phase("BTC/USDT") == "new"
