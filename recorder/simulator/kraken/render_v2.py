"""WebSocket API v2 public messages, written as JSON text by hand.

v2 sends bare JSON numbers that keep the pair's full precision with trailing zeros
(``"qty":0.00100000``, ``"price":1774.00``); clients checksum that text, so it must never pass
through a float or json.dumps.
"""

from __future__ import annotations

from recorder.simulator.book import ASK, BID, ViewLevel
from recorder.simulator.kraken.market import PairMarket, Trade
from recorder.simulator.numbers import fmt_fixed
from recorder.simulator.wire import iso, iso_ns


def _levels(levels, pd: int, qd: int) -> str:
    return ",".join(
        f'{{"price":{fmt_fixed(p, pd)},"qty":{fmt_fixed(q, qd)}}}' for p, q in levels
    )


def book_snapshot(pm: PairMarket, depth: int, t: float) -> str:
    pd, qd = pm.pd, pm.qd
    bids = _levels(pm.bids.top_pq(depth), pd, qd)
    asks = _levels(pm.asks.top_pq(depth), pd, qd)
    return (
        f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"{pm.pair.symbol}",'
        f'"bids":[{bids}],"asks":[{asks}],"checksum":{pm.checksum()},"timestamp":"{iso(t)}"}}]}}'
    )


def book_update(
    pm: PairMarket, views: tuple[list[ViewLevel], list[ViewLevel]], checksum: int, t: float
) -> str | None:
    if not views[ASK] and not views[BID]:
        return None
    pd, qd = pm.pd, pm.qd
    bids = _levels(((lv.price, lv.qty) for lv in views[BID]), pd, qd)
    asks = _levels(((lv.price, lv.qty) for lv in views[ASK]), pd, qd)
    return (
        f'{{"channel":"book","type":"update","data":[{{"symbol":"{pm.pair.symbol}",'
        f'"bids":[{bids}],"asks":[{asks}],"checksum":{checksum},"timestamp":"{iso(t)}"}}]}}'
    )


def trades(pm: PairMarket, items: list[Trade], kind: str = "update") -> str:
    pd, qd = pm.pd, pm.qd
    sym = pm.pair.symbol
    rows = ",".join(
        f'{{"symbol":"{sym}","side":"{"buy" if t.side == "b" else "sell"}",'
        f'"price":{fmt_fixed(t.price, pd)},"qty":{fmt_fixed(t.qty, qd)},'
        f'"ord_type":"{"limit" if t.ord_type == "l" else "market"}","trade_id":{t.trade_id},'
        f'"timestamp":"{iso(t.time)}"}}'
        for t in items
    )
    return f'{{"channel":"trade","type":"{kind}","data":[{rows}]}}'


def ticker(pm: PairMarket, t: float, kind: str = "update") -> str:
    bid, bid_qty, ask, ask_qty = pm.bbo()
    s = pm.stats
    pd, qd = pm.pd, pm.qd
    vwap = s.notional // s.volume if s.volume else s.last
    change = s.last - s.open
    pct = change * 10000 // s.open if s.open else 0
    return (
        f'{{"channel":"ticker","type":"{kind}","data":[{{"symbol":"{pm.pair.symbol}",'
        f'"bid":{fmt_fixed(bid, pd)},"bid_qty":{fmt_fixed(bid_qty, qd)},'
        f'"ask":{fmt_fixed(ask, pd)},"ask_qty":{fmt_fixed(ask_qty, qd)},'
        f'"last":{fmt_fixed(s.last, pd)},"volume":{fmt_fixed(s.volume, qd)},'
        f'"vwap":{fmt_fixed(vwap, pd)},"low":{fmt_fixed(s.low, pd)},'
        f'"high":{fmt_fixed(s.high, pd)},"change":{fmt_fixed(change, pd)},'
        f'"change_pct":{fmt_fixed(pct, 2)},"trades":{s.count},"timestamp":"{iso(t)}"}}]}}'
    )


def ohlc(pm: PairMarket, interval: int, t: float, kind: str = "update") -> str:
    c = pm.candles[interval]
    pd, qd = pm.pd, pm.qd
    return (
        f'{{"channel":"ohlc","type":"{kind}","timestamp":"{iso(t)}","data":[{{'
        f'"symbol":"{pm.pair.symbol}","open":{fmt_fixed(c.open, pd)},'
        f'"high":{fmt_fixed(c.high, pd)},"low":{fmt_fixed(c.low, pd)},'
        f'"close":{fmt_fixed(c.close, pd)},"trades":{c.count},'
        f'"volume":{fmt_fixed(c.volume, qd)},"vwap":{fmt_fixed(c.vwap(), pd)},'
        f'"interval_begin":"{iso_ns(c.begin)}","interval":{interval},'
        f'"timestamp":"{iso(float(c.end))}"}}]}}'
    )
