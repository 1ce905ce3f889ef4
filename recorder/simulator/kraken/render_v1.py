"""WebSocket API v1 public messages, written as JSON text by hand.

v1 sends every decimal as a quoted fixed-decimal string, so the text is assembled directly
from integer ticks: no float ever touches a price.
"""

from __future__ import annotations

from recorder.simulator.book import ASK, BID, ViewLevel
from recorder.simulator.kraken.market import PairMarket, Trade, v1_ts
from recorder.simulator.numbers import fmt_fixed


def _price(ticks: int, pm: PairMarket) -> str:
    """A price as the v1 wire writes it: the pair's decimals, then its extra zeros."""
    return fmt_fixed(ticks * 10**pm.v1_pad, pm.pd + pm.v1_pad)


def _level(lv: ViewLevel, pm: PairMarket, qd: int) -> str:
    r = ',"r"' if lv.republish else ""
    return f'["{_price(lv.price, pm)}","{fmt_fixed(lv.qty, qd)}","{lv.ts}"{r}]'


def book_snapshot(chan_id: int, pm: PairMarket, depth: int) -> str:
    qd = pm.qd
    sides = []
    for idx in (ASK, BID):
        levels = ",".join(
            f'["{_price(p, pm)}","{fmt_fixed(q, qd)}","{ts}"]'
            for p, q, ts in pm.sides[idx].top(depth)
        )
        sides.append(levels)
    return (
        f'[{chan_id},{{"as":[{sides[0]}],"bs":[{sides[1]}]}},'
        f'"book-{depth}","{pm.pair.wsname}"]'
    )


def book_update(
    chan_id: int, pm: PairMarket, views: tuple[list[ViewLevel], list[ViewLevel]],
    checksum: int, depth: int,
) -> str | None:
    """Asks and bids changes come as two objects; "c" always sits in the last one."""
    qd = pm.qd
    parts = []
    for key, levels in (("a", views[ASK]), ("b", views[BID])):
        if levels:
            parts.append(f'"{key}":[' + ",".join(_level(lv, pm, qd) for lv in levels) + "]")
    if not parts:
        return None
    parts[-1] += f',"c":"{checksum}"'
    body = ",".join("{" + p + "}" for p in parts)
    return f'[{chan_id},{body},"book-{depth}","{pm.pair.wsname}"]'


def trades(chan_id: int, pm: PairMarket, items: list[Trade]) -> str:
    qd = pm.qd
    rows = ",".join(
        f'["{_price(t.price, pm)}","{fmt_fixed(t.qty, qd)}","{v1_ts(t.time)}",'
        f'"{t.side}","{t.ord_type}",""]'
        for t in items
    )
    return f'[{chan_id},[{rows}],"trade","{pm.pair.wsname}"]'


def spread(chan_id: int, pm: PairMarket, t: float) -> str:
    bid, bid_qty, ask, ask_qty = pm.bbo()
    qd = pm.qd
    return (
        f'[{chan_id},["{_price(bid, pm)}","{_price(ask, pm)}","{v1_ts(t)}",'
        f'"{fmt_fixed(bid_qty, qd)}","{fmt_fixed(ask_qty, qd)}"],"spread","{pm.pair.wsname}"]'
    )


def ticker(chan_id: int, pm: PairMarket) -> str:
    bid, bid_qty, ask, ask_qty = pm.bbo()
    s = pm.stats
    qd = pm.qd
    vwap = s.notional // s.volume if s.volume else s.last

    def pair_of(value: str) -> str:
        return f'["{value}","{value}"]'

    whole = 10**qd
    return (
        f'[{chan_id},{{"a":["{_price(ask, pm)}",{ask_qty // whole},"{fmt_fixed(ask_qty, qd)}"],'
        f'"b":["{_price(bid, pm)}",{bid_qty // whole},"{fmt_fixed(bid_qty, qd)}"],'
        f'"c":["{_price(s.last, pm)}","{fmt_fixed(s.last_qty, qd)}"],'
        f'"v":{pair_of(fmt_fixed(s.volume, qd))},"p":{pair_of(_price(vwap, pm))},'
        f'"t":[{s.count},{s.count}],"l":{pair_of(_price(s.low, pm))},'
        f'"h":{pair_of(_price(s.high, pm))},"o":{pair_of(_price(s.open, pm))}}},'
        f'"ticker","{pm.pair.wsname}"]'
    )


def ohlc(chan_id: int, pm: PairMarket, interval: int) -> str:
    c = pm.candles[interval]
    qd = pm.qd
    return (
        f'[{chan_id},["{v1_ts(c.updated)}","{c.end}.000000","{_price(c.open, pm)}",'
        f'"{_price(c.high, pm)}","{_price(c.low, pm)}","{_price(c.close, pm)}",'
        f'"{_price(c.vwap(), pm)}","{fmt_fixed(c.volume, qd)}",{c.count}],'
        f'"ohlc-{interval}","{pm.pair.wsname}"]'
    )
