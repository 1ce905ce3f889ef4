"""The demo account: its orders take part in the synthetic market's trades.

Each public trade involves the demo account with probability ``fill_rate``: as the maker
(70 %: a limit order at the trade price, ``received`` and ``open`` first, then the ``match``;
``filled`` when nothing is left, otherwise the rest is ``canceled`` a few trades later), or as
the taker (a market order: ``received``, ``match``, ``filled``). The public match then names the
account's order as its maker or taker order, and its tradeId is the fill's tradeId, so a fill
can be found in the public trades too.

Every fill is kept (the last 50,000) for ``GET /api/v1/fills`` and ``GET /api/v1/hf/fills``,
whether or not a client was connected: a recorder that missed fills can reconcile them.
Private pushes follow ``/spotMarket/tradeOrdersV2`` (../shared/data/kucoin/ws-private.ndjson):
data keys in alphabetical order, ``orderTime`` in ms, ``ts`` in ns.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from dataclasses import dataclass

from recorder.simulator.kucoin.market import PairMarket, Trade
from recorder.simulator.kucoin.symbols import fmt_trim

USER_ID = "633559791e1cbc0001f319bc"  # the user id of KuCoin's own 2024 examples
FEE_RATE_PPM = 1000  # 0.001
TOPIC = "/spotMarket/tradeOrdersV2"


@dataclass(slots=True)
class Order:
    order_id: str
    client_oid: str
    pm: PairMarket
    side: str
    order_type: str  # limit | market
    price: int  # 0 for market orders
    size: int
    order_time: int  # ms
    filled: int = 0
    canceled: int = 0
    trades_left: int = 0  # public trades until the rest is canceled


@dataclass(slots=True)
class Fill:
    id: int  # hf fills' numeric id
    pm: PairMarket
    trade_id: int
    order_id: str
    counter_order_id: str
    side: str
    liquidity: str
    price: int
    size: int
    order_type: str
    created_ms: int

    def funds(self) -> int:  # price ticks x size ticks (pd + sd decimals)
        return self.price * self.size

    def item(self, hf: bool) -> dict:
        pm = self.pm
        dec = pm.pd + pm.sd
        funds = self.funds()
        fee = funds * FEE_RATE_PPM  # at dec + 6 decimals
        out: dict = {}
        if hf:
            out["id"] = self.id
        out.update({
            "symbol": pm.name, "tradeId": self.trade_id if hf else str(self.trade_id),
            "orderId": self.order_id, "counterOrderId": self.counter_order_id,
            "side": self.side, "liquidity": self.liquidity, "forceTaker": False,
            "price": fmt_trim(self.price, pm.pd), "size": fmt_trim(self.size, pm.sd),
            "funds": fmt_trim(funds, dec), "fee": fmt_trim(fee, dec + 6), "feeRate": "0.001",
            "feeCurrency": pm.sym.quote, "stop": "", "tradeType": "TRADE",
            "type": self.order_type,
        })
        if hf:
            out["taxRate"] = "0"
            out["tax"] = "0"
        out["createdAt"] = self.created_ms
        return out


class Account:
    def __init__(self, seed: int | None, fill_rate: float, order_id) -> None:
        self.rng = random.Random(None if seed is None else seed + 1)
        self.fill_rate = fill_rate
        self.order_id = order_id  # the market's id maker, so ids look alike
        self.orders: dict[str, Order] = {}  # open, partly filled limit orders
        self.fills: deque[Fill] = deque(maxlen=50_000)
        self.next_fill_id = 19_814_995_255_305 + self.rng.randrange(10**6)
        self.pending: list[str] = []  # private pushes of the last trade, for publishing

    def _client_oid(self) -> str:
        return f"{self.rng.getrandbits(96):024x}"

    def on_trade(self, pm: PairMarket, t: Trade) -> None:
        """Called by the market before ``t`` is published (may rename its order ids)."""
        now_ms = t.time_ns // 1_000_000
        self._age_orders(t.time_ns)
        if self.rng.random() >= self.fill_rate:
            return
        if self.rng.random() < 0.7:
            side = "sell" if t.side == "buy" else "buy"
            extra = 0 if self.rng.random() < 0.6 else t.size * self.rng.randint(1, 3) // 2
            o = Order(self.order_id(), self._client_oid(), pm, side, "limit", t.price,
                      t.size + extra, max(0, now_ms - self.rng.randint(5, 500)))
            t.maker_order = o.order_id
            ts0 = o.order_time * 1_000_000
            self.pending += [self._push(o, "received", "new", ts0),
                             self._push(o, "open", "open", ts0 + 1_000_000)]
            self._fill(o, t, "maker", t.taker_order)
        else:
            o = Order(t.taker_order, self._client_oid(), pm, t.side, "market", 0, t.size,
                      max(0, now_ms - self.rng.randint(1, 20)))
            self.pending.append(self._push(o, "received", "new", o.order_time * 1_000_000))
            self._fill(o, t, "taker", t.maker_order)

    def _fill(self, o: Order, t: Trade, liquidity: str, counter: str) -> None:
        o.filled += t.size
        self.next_fill_id += self.rng.randint(1, 9)
        self.fills.append(Fill(self.next_fill_id, o.pm, t.seq, o.order_id, counter, o.side,
                               liquidity, t.price, t.size, o.order_type,
                               t.time_ns // 1_000_000))
        left = o.size - o.filled
        status = "match" if liquidity == "taker" else "open"
        self.pending.append(self._push(o, "match", status, t.time_ns, t, liquidity))
        if left == 0:
            self.pending.append(self._push(o, "filled", "done", t.time_ns))
            self.orders.pop(o.order_id, None)
        else:
            o.trades_left = self.rng.randint(3, 30)
            self.orders[o.order_id] = o

    def _age_orders(self, ts_ns: int) -> None:
        for o in list(self.orders.values()):
            o.trades_left -= 1
            if o.trades_left <= 0:
                o.canceled = o.size - o.filled
                self.pending.append(self._push(o, "canceled", "done", ts_ns))
                del self.orders[o.order_id]

    def _push(self, o: Order, kind: str, status: str, ts_ns: int, t: Trade | None = None,
              liquidity: str = "") -> str:
        pm = o.pm
        pd, sd = pm.pd, pm.sd
        left = 0 if status == "done" else o.size - o.filled - o.canceled
        d: dict = {}
        if kind != "received":
            d["canceledSize"] = fmt_trim(o.canceled, sd)
        d["clientOid"] = o.client_oid
        if t is not None:
            d["feeType"] = "takerFee" if liquidity == "taker" else "makerFee"
        if kind != "received":
            d["filledSize"] = fmt_trim(o.filled, sd)
        if t is not None:
            d["liquidity"] = liquidity
            d["matchPrice"] = fmt_trim(t.price, pd)
            d["matchSize"] = fmt_trim(t.size, sd)
        d["orderId"] = o.order_id
        d["orderTime"] = o.order_time
        d["orderType"] = o.order_type
        d["originSize"] = fmt_trim(o.size, sd)
        if o.order_type == "limit":
            d["price"] = fmt_trim(o.price, pd)
        if kind != "received":
            d["remainSize"] = fmt_trim(left, sd)
        d["side"] = o.side
        if kind != "received":
            d["size"] = fmt_trim(o.size, sd)
        d["status"] = status
        d["symbol"] = pm.name
        if t is not None:
            d["tradeId"] = str(t.seq)
        d["ts"] = ts_ns
        d["type"] = kind
        return (f'{{"topic":"{TOPIC}","type":"message","subject":"orderChange",'
                f'"userId":"{USER_ID}","channelType":"private",'
                f'"data":{json.dumps(d, separators=(",", ":"))}}}')

    def take_pending(self) -> list[str]:
        out, self.pending = self.pending, []
        return out

    # -- REST -------------------------------------------------------------------------------

    def select(self, q: dict[str, str], hf: bool) -> list[Fill] | str:
        """Fills matching the query, newest first, or the error code (400100)."""
        symbol = q.get("symbol", "").upper()
        if hf and not symbol:
            return "400100"
        try:
            start = int(q["startAt"]) if q.get("startAt") else None
            end = int(q["endAt"]) if q.get("endAt") else None
        except ValueError:
            return "400100"
        week = 7 * 86400 * 1000
        if not hf:
            # /api/v1/fills: one week at most; the other end follows from the given one.
            if start is None and end is None:
                end = int(time.time() * 1000)
            if start is None:
                start = end - week
            if end is None:
                end = start + week
            if end - start > week:
                return "400100"
        items = []
        order_id = q.get("orderId")
        for f in reversed(self.fills):
            if order_id:
                if f.order_id != order_id:
                    continue
            else:
                if symbol and f.pm.name != symbol:
                    continue
                if q.get("side") and f.side != q["side"]:
                    continue
                if q.get("type") and f.order_type != q["type"]:
                    continue
                if start is not None and f.created_ms < start:
                    continue
                if end is not None and f.created_ms > end:
                    continue
            items.append(f)
        return items
