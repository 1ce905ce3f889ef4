"""The demo account behind the private channels: balances, resting orders and fills.

Now and then a public trade is attributed to the demo account as the maker, so private
traffic follows the market, whether or not a private connection is open. Orders and fills keep
their ids for the life of the process, so a recorder that reconnects sees the same ids again
in the snapshots and can deduplicate them. The last ``HISTORY`` fills are kept for REST
``TradesHistory``. A fill's trade TXID is also its v2 ``exec_id`` (Kraken's TradesHistory
keys are the executions' ids).
"""

from __future__ import annotations

import random
import string
from collections import deque
from dataclasses import dataclass

from recorder.exchanges.kraken.pairs import Pair
from recorder.simulator.kraken.market import PairMarket, Trade, TradeEvent, v1_ts
from recorder.simulator.numbers import fmt_fixed
from recorder.simulator.wire import iso

COST_DECIMALS = 5
BALANCE_DECIMALS = 10
_FIAT = {"USD", "EUR", "GBP", "CHF", "JPY", "USDT", "USDC"}
_START_BALANCES = {"USD": 100_000, "EUR": 50_000, "BTC": 2, "ETH": 30}
_ID_CHARS = string.ascii_uppercase + string.digits
HISTORY = 50_000  # fills kept for TradesHistory
# Kraken's position txid on every spot trade that opened no position.
NO_POSITION = "TKH2SE-M7IF5-CFI7LT"


def balance_decimals(asset: str) -> int:
    return 4 if asset in _FIAT else 8


@dataclass(slots=True)
class Order:
    order_id: str
    pair: Pair
    side: str  # buy | sell
    price: int
    qty: int
    opentm: float
    status: str = "open"
    filled: int = 0
    cost: int = 0  # COST_DECIMALS units
    fee: int = 0

    def avg_price(self) -> int:
        q = self.filled
        scale = 10 ** (self.pair.qty_decimals - COST_DECIMALS + self.pair.price_decimals)
        return self.cost * scale // q if q else 0


@dataclass(slots=True)
class Fill:
    txid: str
    exec_id: str
    order: Order
    trade_id: int
    price: int
    qty: int
    cost: int
    fee: int
    time: float
    ledger_ids: tuple[str, str]


@dataclass(slots=True)
class Update:
    """One account change: the order placed and filled, and the resulting balances."""

    fill: Fill
    balances: dict[str, int]


class Account:
    def __init__(self, seed: int | None, markets: dict[str, PairMarket], fill_rate: float) -> None:
        self.rng = random.Random(None if seed is None else seed + 7919)
        self.fill_rate = fill_rate
        self.balances: dict[str, int] = {}
        self.orders: dict[str, Order] = {}
        self.fills: deque[Fill] = deque(maxlen=HISTORY)
        for asset, amount in _START_BALANCES.items():
            self.balances[asset] = amount * 10**BALANCE_DECIMALS
        for pm in markets.values():
            for asset in (pm.pair.base, pm.pair.quote):
                self.balances.setdefault(asset, 1000 * 10**BALANCE_DECIMALS)
            # Resting orders far from the market: the open-orders snapshot is never empty.
            mid = (pm.bids.price_at(0) + pm.asks.price_at(0)) // 2
            for side, price in (("buy", mid * 8 // 10), ("sell", mid * 12 // 10)):
                oid = self._id("O")
                qty = 10 ** pm.qd // 100 or 1
                self.orders[oid] = Order(oid, pm.pair, side, price, qty, pm.candles[1].updated)

    def _id(self, first: str) -> str:
        r = self.rng
        parts = ["".join(r.choice(_ID_CHARS) for _ in range(n)) for n in (6, 5, 6)]
        return first + parts[0][1:] + "-" + parts[1] + "-" + parts[2]

    def on_trades(self, ev: TradeEvent) -> Update | None:
        return self.on_trade(ev.pm.pair, ev.trades[0])

    def on_trade(self, pair: Pair, t: Trade) -> Update | None:
        """Maybe fill the demo account as the maker of ``t`` (one chance per trade message)."""
        if self.fill_rate <= 0 or self.rng.random() >= self.fill_rate:
            return None
        for asset in (pair.base, pair.quote):  # a replayed pair the synthetic market lacks
            self.balances.setdefault(asset, 1000 * 10**BALANCE_DECIMALS)
        side = "sell" if t.side == "b" else "buy"  # we were the resting maker
        order = Order(self._id("O"), pair, side, t.price, t.qty, t.time, status="closed")
        shift = pair.price_decimals + pair.qty_decimals - COST_DECIMALS
        cost = t.price * t.qty // 10**shift if shift >= 0 else t.price * t.qty * 10**-shift
        fee = cost * 16 // 10_000  # 0.16 % maker fee, charged in the quote currency
        order.filled, order.cost, order.fee = t.qty, cost, fee
        txid = self._id("T")
        fill = Fill(
            txid, txid, order, t.trade_id, t.price, t.qty, cost, fee, t.time,
            (self._id("L"), self._id("L")),
        )
        to_bal = 10 ** (BALANCE_DECIMALS - COST_DECIMALS)
        base_delta = t.qty * 10 ** (BALANCE_DECIMALS - pair.qty_decimals)
        quote_delta = cost * to_bal
        sign = 1 if side == "buy" else -1
        self.balances[pair.base] += sign * base_delta
        self.balances[pair.quote] += -sign * quote_delta - fee * to_bal
        self.fills.append(fill)
        return Update(fill, {pair.base: sign * base_delta, pair.quote: -sign * quote_delta})


def _cost(v: int) -> str:
    return fmt_fixed(v, COST_DECIMALS)


def _bal(asset: str, v: int) -> str:
    d = balance_decimals(asset)
    return fmt_fixed(v // 10 ** (BALANCE_DECIMALS - d), d)


# -- v1 ownTrades / openOrders ---------------------------------------------------------------


def v1_trade_entry(f: Fill) -> str:
    p = f.order.pair
    return (
        f'{{"{f.txid}":{{"cost":"{_cost(f.cost)}","fee":"{_cost(f.fee)}",'
        f'"margin":"{_cost(0)}","ordertxid":"{f.order.order_id}","ordertype":"limit",'
        f'"pair":"{p.wsname}","postxid":"{NO_POSITION}",'
        f'"price":"{fmt_fixed(f.price, p.price_decimals)}","time":"{v1_ts(f.time)}",'
        f'"type":"{f.order.side}","vol":"{fmt_fixed(f.qty, p.qty_decimals)}"}}}}'
    )


def v1_order_full(o: Order, status: str) -> str:
    p = o.pair
    price = fmt_fixed(o.price, p.price_decimals)
    vol = fmt_fixed(o.qty, p.qty_decimals)
    return (
        f'{{"{o.order_id}":{{"avg_price":"{_cost(0)}","cost":"{_cost(0)}",'
        f'"descr":{{"close":null,"leverage":null,"order":"{o.side} {vol} {p.wsname} @ limit '
        f'{price}","ordertype":"limit","pair":"{p.wsname}","price":"{price}",'
        f'"price2":"{_cost(0)}","type":"{o.side}"}},"expiretm":null,"fee":"{_cost(0)}",'
        f'"limitprice":"{_cost(0)}","misc":"","oflags":"fciq","opentm":"{v1_ts(o.opentm)}",'
        f'"refid":null,"starttm":null,"status":"{status}","stopprice":"{_cost(0)}",'
        f'"timeinforce":"GTC","userref":0,"vol":"{vol}",'
        f'"vol_exec":"{fmt_fixed(0, p.qty_decimals)}"}}}}'
    )


def v1_messages(u: Update, channel: str) -> list[str]:
    """Bodies (the first array) of the v1 messages for one account update."""
    f, o = u.fill, u.fill.order
    p = o.pair
    if channel == "ownTrades":
        return [v1_trade_entry(f)]
    closed = (
        f'{{"{o.order_id}":{{"lastupdated":"{v1_ts(f.time)}","status":"closed",'
        f'"vol_exec":"{fmt_fixed(o.filled, p.qty_decimals)}","cost":"{_cost(o.cost)}",'
        f'"fee":"{_cost(o.fee)}","avg_price":"{fmt_fixed(o.avg_price(), p.price_decimals)}",'
        f'"userref":0}}}}'
    )
    return [
        v1_order_full(o, "pending"),
        f'{{"{o.order_id}":{{"status":"open","userref":0}}}}',
        closed,
    ]


def v1_frame(entries: list[str], channel: str, seq: int) -> str:
    return f'[[{",".join(entries)}],"{channel}",{{"sequence":{seq}}}]'


# -- v2 executions / balances ----------------------------------------------------------------


def v2_order_entry(o: Order, exec_type: str, status: str, t: float) -> str:
    p = o.pair
    return (
        f'{{"order_id":"{o.order_id}","symbol":"{p.symbol}","order_qty":'
        f'{fmt_fixed(o.qty, p.qty_decimals)},"cum_cost":{_cost(0)},"time_in_force":"GTC",'
        f'"exec_type":"{exec_type}","side":"{o.side}","order_type":"limit",'
        f'"order_userref":0,"limit_price_type":"static",'
        f'"limit_price":{fmt_fixed(o.price, p.price_decimals)},"order_status":"{status}",'
        f'"fee_usd_equiv":{_cost(0)},"fee_ccy_pref":"fciq","timestamp":"{iso(t)}"}}'
    )


def v2_trade_entry(f: Fill) -> str:
    o, p = f.order, f.order.pair
    return (
        f'{{"order_id":"{o.order_id}","order_userref":0,"exec_id":"{f.exec_id}",'
        f'"exec_type":"trade","trade_id":{f.trade_id},"symbol":"{p.symbol}",'
        f'"side":"{o.side}","last_qty":{fmt_fixed(f.qty, p.qty_decimals)},'
        f'"last_price":{fmt_fixed(f.price, p.price_decimals)},"liquidity_ind":"m",'
        f'"cost":{_cost(f.cost)},"order_status":"filled","order_type":"limit",'
        f'"timestamp":"{iso(f.time)}","fee_usd_equiv":{_cost(f.fee)},'
        f'"fees":[{{"asset":"{p.quote}","qty":{_cost(f.fee)}}}]}}'
    )


def v2_execution_batches(u: Update) -> list[list[str]]:
    o, f = u.fill.order, u.fill
    return [
        [v2_order_entry(o, "pending_new", "pending_new", f.time)],
        [f'{{"timestamp":"{iso(f.time)}","order_status":"new","exec_type":"new",'
         f'"order_userref":0,"order_id":"{o.order_id}"}}'],
        [v2_trade_entry(f)],
    ]


def v2_balance_entries(acct: Account, u: Update) -> list[str]:
    out = []
    f = u.fill
    for (asset, delta), ledger in zip(u.balances.items(), f.ledger_ids, strict=True):
        fee = f.fee * 10 ** (BALANCE_DECIMALS - COST_DECIMALS) if asset == f.order.pair.quote else 0
        out.append(
            f'{{"ledger_id":"{ledger}","ref_id":"{f.txid}","timestamp":"{iso(f.time)}",'
            f'"type":"trade","asset":"{asset}","asset_class":"currency","category":"trade",'
            f'"wallet_type":"spot","wallet_id":"main","amount":{_bal(asset, delta)},'
            f'"fee":{_bal(asset, fee)},"balance":{_bal(asset, acct.balances[asset])}}}'
        )
    return out


def v2_balance_snapshot(acct: Account) -> list[str]:
    return [
        f'{{"asset":"{a}","asset_class":"currency","balance":{_bal(a, v)},'
        f'"wallets":[{{"type":"spot","id":"main","balance":{_bal(a, v)}}}]}}'
        for a, v in sorted(acct.balances.items())
    ]


def v2_frame(channel: str, kind: str, entries: list[str], seq: int) -> str:
    data = ",".join(entries)
    return f'{{"channel":"{channel}","type":"{kind}","data":[{data}],"sequence":{seq}}}'


# -- REST TradesHistory -------------------------------------------------------------------------


def time_text(t: float) -> str:
    """A fill's time as TradesHistory writes it: unix seconds with the microseconds of its
    v2 ``timestamp`` (recorder.simulator.wire.iso rounds the same way)."""
    sec = int(t)
    us = int(round((t - sec) * 1_000_000))
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    return f"{sec}.{us:06d}"


def history_entry(f: Fill) -> dict:
    """One TradesHistory item (its key is ``f.txid``), in Kraken's field order."""
    o, p = f.order, f.order.pair
    return {
        "ordertxid": o.order_id, "postxid": NO_POSITION, "pair": p.rest_id,
        "time": float(time_text(f.time)), "type": o.side, "ordertype": "limit",
        "price": fmt_fixed(f.price, p.price_decimals), "cost": _cost(f.cost),
        "fee": _cost(f.fee), "vol": fmt_fixed(f.qty, p.qty_decimals), "margin": _cost(0),
        "leverage": "0", "misc": "", "trade_id": f.trade_id, "maker": True,
    }
