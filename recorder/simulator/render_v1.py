"""WebSocket API v1 public messages, written as JSON text by hand.

v1 sends every decimal as a quoted fixed-decimal string, so the text is assembled directly
from integer ticks: no float ever touches a price.
"""

from __future__ import annotations

from .book import ASK, BID, ViewLevel
from .market import PairMarket, Trade, v1_ts
from .numbers import fmt_fixed


def _level(lv: ViewLevel, pd: int, qd: int) -> str:
    r = ',"r"' if lv.republish else ""
    return f'["{fmt_fixed(lv.price, pd)}","{fmt_fixed(lv.qty, qd)}","{lv.ts}"{r}]'


def book_snapshot(chan_id: int, pm: PairMarket, depth: int) -> str:
    pd, qd = pm.pd, pm.qd
    sides = []
    for idx in (ASK, BID):
        levels = ",".join(
            f'["{fmt_fixed(p, pd)}","{fmt_fixed(q, qd)}","{ts}"]'
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
    pd, qd = pm.pd, pm.qd
    parts = []
    for key, levels in (("a", views[ASK]), ("b", views[BID])):
        if levels:
            parts.append(f'"{key}":[' + ",".join(_level(lv, pd, qd) for lv in levels) + "]")
    if not parts:
        return None
    parts[-1] += f',"c":"{checksum}"'
    body = ",".join("{" + p + "}" for p in parts)
    return f'[{chan_id},{body},"book-{depth}","{pm.pair.wsname}"]'


def trades(chan_id: int, pm: PairMarket, items: list[Trade]) -> str:
    pd, qd = pm.pd, pm.qd
    rows = ",".join(
        f'["{fmt_fixed(t.price, pd)}","{fmt_fixed(t.qty, qd)}","{v1_ts(t.time)}",'
        f'"{t.side}","{t.ord_type}",""]'
        for t in items
    )
    return f'[{chan_id},[{rows}],"trade","{pm.pair.wsname}"]'


def spread(chan_id: int, pm: PairMarket, t: float) -> str:
    bid, bid_qty, ask, ask_qty = pm.bbo()
    pd, qd = pm.pd, pm.qd
    return (
        f'[{chan_id},["{fmt_fixed(bid, pd)}","{fmt_fixed(ask, pd)}","{v1_ts(t)}",'
        f'"{fmt_fixed(bid_qty, qd)}","{fmt_fixed(ask_qty, qd)}"],"spread","{pm.pair.wsname}"]'
    )


def ticker(chan_id: int, pm: PairMarket) -> str:
    bid, bid_qty, ask, ask_qty = pm.bbo()
    s = pm.stats
    pd, qd = pm.pd, pm.qd
    vwap = s.notional // s.volume if s.volume else s.last

    def pair_of(value: str) -> str:
        return f'["{value}","{value}"]'

    whole = 10**qd
    return (
        f'[{chan_id},{{"a":["{fmt_fixed(ask, pd)}",{ask_qty // whole},"{fmt_fixed(ask_qty, qd)}"],'
        f'"b":["{fmt_fixed(bid, pd)}",{bid_qty // whole},"{fmt_fixed(bid_qty, qd)}"],'
        f'"c":["{fmt_fixed(s.last, pd)}","{fmt_fixed(s.last_qty, qd)}"],'
        f'"v":{pair_of(fmt_fixed(s.volume, qd))},"p":{pair_of(fmt_fixed(vwap, pd))},'
        f'"t":[{s.count},{s.count}],"l":{pair_of(fmt_fixed(s.low, pd))},'
        f'"h":{pair_of(fmt_fixed(s.high, pd))},"o":{pair_of(fmt_fixed(s.open, pd))}}},'
        f'"ticker","{pm.pair.wsname}"]'
    )


def ohlc(chan_id: int, pm: PairMarket, interval: int) -> str:
    c = pm.candles[interval]
    pd, qd = pm.pd, pm.qd
    return (
        f'[{chan_id},["{v1_ts(c.updated)}","{c.end}.000000","{fmt_fixed(c.open, pd)}",'
        f'"{fmt_fixed(c.high, pd)}","{fmt_fixed(c.low, pd)}","{fmt_fixed(c.close, pd)}",'
        f'"{fmt_fixed(c.vwap(), pd)}","{fmt_fixed(c.volume, qd)}",{c.count}],'
        f'"ohlc-{interval}","{pm.pair.wsname}"]'
    )
