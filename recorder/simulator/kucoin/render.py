"""Wire text of every public topic and of the market-data REST answers.

Shapes follow the newest real frames in ../shared/data/kucoin/ws-public.ndjson: the envelope
``{"topic","type","subject","data"}`` (KuCoin's 2024 order), data keys in alphabetical order
(candles: ``symbol, candles, time`` as KuCoin sends them), prices and sizes as strings without
trailing zeros, ``sequenceStart``/``sequenceEnd`` as JSON numbers and change sequences as
strings, match ``time`` in ns as a string, level2 ``time`` in ms, candle ``time`` in ns as a
number, and ``/market/snapshot`` as JSON numbers with KuCoin's 20-decimal padding.
"""

from __future__ import annotations

import json

from recorder.simulator.kucoin.market import BookEvent, Candle, PairMarket, Stats, Trade
from recorder.simulator.kucoin.symbols import fmt_pad, fmt_trim
from recorder.simulator.numbers import fmt_fixed


def _message(topic: str, subject: str, data: str) -> str:
    return f'{{"topic":"{topic}","type":"message","subject":"{subject}","data":{data}}}'


def match(pm: PairMarket, t: Trade) -> str:
    seq = str(t.seq)
    data = (
        f'{{"makerOrderId":"{t.maker_order}","price":"{fmt_trim(t.price, pm.pd)}",'
        f'"sequence":"{seq}","side":"{t.side}","size":"{fmt_trim(t.size, pm.sd)}",'
        f'"symbol":"{pm.name}","takerOrderId":"{t.taker_order}","time":"{t.time_ns}",'
        f'"tradeId":"{seq}","type":"match"}}'
    )
    return _message(f"/market/match:{pm.name}", "trade.l3match", data)


def _changes(pm: PairMarket, changes: list[tuple[int, int, int]]) -> str:
    pd, sd = pm.pd, pm.sd
    return ",".join(
        f'["0","0","{seq}"]' if price == 0 else
        f'["{fmt_trim(price, pd)}","{fmt_trim(size, sd)}","{seq}"]'
        for price, size, seq in changes
    )


def l2update(ev: BookEvent, skip_time: bool = False) -> str:
    pm = ev.pm
    data = (
        f'{{"changes":{{"asks":[{_changes(pm, ev.asks)}],"bids":[{_changes(pm, ev.bids)}]}},'
        f'"sequenceEnd":{ev.end},"sequenceStart":{ev.start},"symbol":"{pm.name}"'
        + ("}" if skip_time else f',"time":{ev.time_ms}}}')
    )
    return _message(f"/market/level2:{pm.name}", "trade.l2update", data)


def depth_levels(pm: PairMarket, n: int) -> str:
    """``"asks":[...],"bids":[...]`` of the top ``n``: what a depth push compares."""
    pd, sd = pm.pd, pm.sd
    asks = ",".join(f'["{fmt_trim(p, pd)}","{fmt_trim(q, sd)}"]' for p, q in pm.asks.top_pq(n))
    bids = ",".join(f'["{fmt_trim(p, pd)}","{fmt_trim(q, sd)}"]' for p, q in pm.bids.top_pq(n))
    return f'"asks":[{asks}],"bids":[{bids}]'


def depth(pm: PairMarket, n: int, levels: str, ts_ms: int) -> str:
    return _message(f"/spotMarket/level2Depth{n}:{pm.name}", "level2",
                    f'{{{levels},"timestamp":{ts_ms}}}')


def ticker_fields(pm: PairMarket) -> str:
    """The ticker's fields without ``time``: what a ticker push compares."""
    bid, bid_q, ask, ask_q = pm.bbo()
    s = pm.stats
    pd, sd = pm.pd, pm.sd
    return (
        f'"bestAsk":"{fmt_trim(ask, pd)}","bestAskSize":"{fmt_trim(ask_q, sd)}",'
        f'"bestBid":"{fmt_trim(bid, pd)}","bestBidSize":"{fmt_trim(bid_q, sd)}",'
        f'"price":"{fmt_trim(s.last, pd)}","sequence":"{pm.seq}",'
        f'"size":"{fmt_trim(s.last_size, sd)}"'
    )


def ticker(pm: PairMarket, fields: str, ts_ms: int, all_topic: bool = False) -> str:
    data = f'{{{fields},"time":{ts_ms}}}'
    if all_topic:
        return _message("/market/ticker:all", pm.name, data)
    return _message(f"/market/ticker:{pm.name}", "trade.ticker", data)


def candle_row(pm: PairMarket, c: Candle) -> list[str]:
    """``[start, open, close, high, low, volume, turnover]`` (KuCoin's O, C, H, L order)."""
    pd, sd = pm.pd, pm.sd
    return [str(c.start), fmt_trim(c.open, pd), fmt_trim(c.close, pd), fmt_trim(c.high, pd),
            fmt_trim(c.low, pd), fmt_trim(c.volume, sd), fmt_trim(c.turnover, pd + sd)]


def candle(pm: PairMarket, kind: str, time_ns: int) -> str:
    row = ",".join(f'"{v}"' for v in candle_row(pm, pm.candles[kind]))
    data = f'{{"symbol":"{pm.name}","candles":[{row}],"time":{time_ns}}}'
    return _message(f"/market/candles:{pm.name}_{kind}", "trade.candles.update", data)


def _rate(last: int, open_: int) -> str:
    """(last - open) / open at 4 decimals, rounded half away from zero."""
    if open_ <= 0:
        return "0.0000"
    num = abs(last - open_) * 10000
    q = (num * 2 + open_) // (2 * open_)
    return fmt_pad(-q if last < open_ else q, 4, 4)


def _change(pm: PairMarket, s: Stats) -> str:
    pd, sd = pm.pd, pm.sd
    return (
        f'{{"changePrice":{fmt_pad(s.last - s.open, pd, 20)},"changeRate":{_rate(s.last, s.open)},'
        f'"high":{fmt_pad(s.high, pd, 20)},"low":{fmt_pad(s.low, pd, 20)},'
        f'"open":{fmt_pad(s.open, pd, 20)},"vol":{fmt_pad(s.volume, sd, 20)},'
        f'"volValue":{fmt_pad(s.turnover, pd + sd, 20)}}}'
    )


def snapshot(pm: PairMarket, topic: str, ts_ms: int) -> str:
    """A ``trade.snapshot`` push (as in the 2024 capture: JSON numbers, 20-decimal padding on
    the 24 h fields). The synthetic market keeps one set of statistics since the start, so
    marketChange1h/4h/24h carry the same values."""
    sym = pm.sym
    s = pm.stats
    pd, sd = pm.pd, pm.sd
    bid, bid_q, ask, ask_q = pm.bbo()
    scale = 10 ** max(0, 8 - pd)
    avg = s.turnover * scale // s.volume if s.volume else s.last * scale
    change = _change(pm, s)
    inner = (
        f'{{"askSize":{fmt_trim(ask_q, sd)},"averagePrice":{fmt_trim(avg, max(8, pd))},'
        f'"baseCurrency":"{sym.base}","bidSize":{fmt_trim(bid_q, sd)},"board":1,'
        f'"buy":{fmt_trim(bid, pd)},"changePrice":{fmt_pad(s.last - s.open, pd, 20)},'
        f'"changeRate":{_rate(s.last, s.open)},"close":{fmt_trim(s.last, pd)},'
        f'"datetime":{ts_ms},"high":{fmt_pad(s.high, pd, 20)},'
        f'"lastTradedPrice":{fmt_trim(s.last, pd)},"low":{fmt_pad(s.low, pd, 20)},'
        f'"makerCoefficient":1.000000,"makerFeeRate":0.001,"marginTrade":true,"mark":0,'
        f'"market":"{sym.market}","marketChange1h":{change},"marketChange24h":{change},'
        f'"marketChange4h":{change},"markets":["{sym.market}"],'
        f'"open":{fmt_pad(s.open, pd, 20)},"quoteCurrency":"{sym.quote}",'
        f'"sell":{fmt_trim(ask, pd)},"siteTypes":["global"],"sort":100,"symbol":"{pm.name}",'
        f'"symbolCode":"{pm.name}","takerCoefficient":1.000000,"takerFeeRate":0.001,'
        f'"trading":true,"vol":{fmt_pad(s.volume, sd, 20)},'
        f'"volValue":{fmt_pad(s.turnover, pd + sd, 20)}}}'
    )
    return _message(topic, "trade.snapshot", f'{{"sequence":"{pm.seq}","data":{inner}}}')


# -- REST -------------------------------------------------------------------------------------


def ok(data_json: str) -> bytes:
    return f'{{"code":"200000","data":{data_json}}}'.encode()


def dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def book_snapshot(pm: PairMarket, n: int | None, ts_ms: int, seq: int | None = None) -> bytes:
    """``level2_20``/``level2_100`` (``n``) or the full v3 book (``n`` None)."""
    pd, sd = pm.pd, pm.sd
    asks = pm.asks.top_pq(n if n is not None else len(pm.asks))
    bids = pm.bids.top_pq(n if n is not None else len(pm.bids))
    a = ",".join(f'["{fmt_trim(p, pd)}","{fmt_trim(q, sd)}"]' for p, q in asks)
    b = ",".join(f'["{fmt_trim(p, pd)}","{fmt_trim(q, sd)}"]' for p, q in bids)
    seq = pm.seq if seq is None else seq
    return ok(f'{{"time":{ts_ms},"sequence":"{seq}","bids":[{b}],"asks":[{a}]}}')


def histories(pm: PairMarket) -> bytes:
    """The last 100 trades, oldest first; sizes keep the increment's trailing zeros, as a
    2024 capture of this endpoint shows (``"0.00453030"``)."""
    rows = [
        f'{{"sequence":"{t.seq}","price":"{fmt_trim(t.price, pm.pd)}",'
        f'"size":"{fmt_fixed(t.size, pm.sd)}","side":"{t.side}","time":{t.time_ns}}}'
        for t in list(pm.trades)[-100:]
    ]
    return ok("[" + ",".join(rows) + "]")


def candles(pm: PairMarket, kind: str, start: int, end: int) -> bytes:
    """REST candles, newest first, at most 1500; only intervals that had trades."""
    out = []
    rows = [*pm.history[kind]] + ([pm.candles[kind]] if kind in pm.candles else [])
    for c in reversed(rows):
        if (start and c.start < start) or (end and c.start >= end):
            continue
        out.append(candle_row(pm, c))
        if len(out) == 1500:
            break
    return ok(dumps(out))
