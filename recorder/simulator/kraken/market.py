"""The synthetic market: one seeded random-walk model per process, in integer ticks.

Every public channel in both API versions is rendered from these events, so v1 and v2
subscribers watch the same market. Books are kept far deeper than 1000 levels per side so that
a depth-1000 subscriber sees a real window with levels entering and leaving it.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from recorder.exchanges.kraken.pairs import Pair, find_pair
from recorder.simulator.book import ASK, BID, Side
from recorder.simulator.kraken.checksum import book_checksum

INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
DEPTHS = (10, 25, 100, 500, 1000)
BOOK_MIN_LEVELS = 1100
BOOK_MAX_LEVELS = 1300

# Rough USD values, only to give each synthetic pair a plausible price level.
_USD = {
    "BTC": 65000.0, "ETH": 3500.0, "SOL": 150.0, "DOGE": 0.15, "XRP": 0.6, "ADA": 0.45,
    "DOT": 7.0, "LTC": 80.0, "LINK": 15.0, "ATOM": 8.0, "USDT": 1.0, "USDC": 1.0, "USD": 1.0,
    "EUR": 1.08, "GBP": 1.27, "CHF": 1.13, "JPY": 0.0067, "XMR": 160.0, "WAVES": 2.0,
    "KSM": 30.0, "GRT": 0.2, "SC": 0.005, "OCEAN": 0.6, "OMG": 0.5,
}


def v1_ts(t: float) -> str:
    return f"{t:.6f}"


@dataclass(slots=True)
class Trade:
    price: int
    qty: int
    side: str  # taker side, "b" or "s"
    ord_type: str  # "l" or "m"
    time: float
    trade_id: int


@dataclass(slots=True)
class Candle:
    interval: int
    begin: int
    open: int
    high: int
    low: int
    close: int
    notional: int = 0  # sum(price * qty) in ticks, for the vwap
    volume: int = 0
    count: int = 0
    updated: float = 0.0

    @property
    def end(self) -> int:
        return self.begin + self.interval * 60

    def vwap(self) -> int:
        return self.notional // self.volume if self.volume else self.close


@dataclass(slots=True)
class Stats:
    open: int
    high: int
    low: int
    last: int
    last_qty: int = 0
    volume: int = 0
    notional: int = 0
    count: int = 0


class PairMarket:
    def __init__(self, pair: Pair, mid: int, rng: random.Random, now: float) -> None:
        self.pair = pair
        self.pd = pair.price_decimals
        self.qd = pair.qty_decimals
        # v1 prices carry this many more (zero) decimals than the ticks have.
        self.v1_pad = max(0, pair.v1_price_decimals - self.pd)
        self.sides = (Side(False), Side(True))
        self.trade_id = 1_000_000 + rng.randrange(1_000_000)
        self.trades: deque[Trade] = deque(maxlen=1000)
        self.stats = Stats(mid, mid, mid, mid)
        self.candles: dict[int, Candle] = {}
        self.history: dict[int, deque[Candle]] = {iv: deque(maxlen=720) for iv in INTERVALS}
        # Wide enough for a few ticks of spread on coarse pairs, about 0.005 % on fine ones.
        self.max_spread = max(3, mid // 20000)
        self.typical_qty = max(1, int(2000.0 / max(_usd_price(pair, mid), 1e-9) * 10**self.qd))
        for iv in INTERVALS:
            begin = int(now) // (iv * 60) * iv * 60
            self.candles[iv] = Candle(iv, begin, mid, mid, mid, mid, updated=now)

    @property
    def asks(self) -> Side:
        return self.sides[ASK]

    @property
    def bids(self) -> Side:
        return self.sides[BID]

    def checksum(self, price_scale: int = 1) -> int:
        """Kraken's CRC32 of the top 10; ``price_scale`` 10**v1_pad for the v1 wire text."""
        if price_scale == 1:
            return book_checksum(self.asks.top_pq(10), self.bids.top_pq(10))
        return book_checksum([(p * price_scale, q) for p, q in self.asks.top_pq(10)],
                             [(p * price_scale, q) for p, q in self.bids.top_pq(10)])

    def checksum_v1(self) -> int:
        """The checksum of the v1 wire text, whose prices carry v1_pad more zeros."""
        return self.checksum(10**self.v1_pad)

    def bbo(self) -> tuple[int, int, int, int]:
        bid = self.bids.best() or (0, 0)
        ask = self.asks.best() or (0, 0)
        return bid[0], bid[1], ask[0], ask[1]


def _usd_price(pair: Pair, mid_ticks: int) -> float:
    return mid_ticks / 10**pair.price_decimals * _USD.get(pair.quote, 1.0)


@dataclass(slots=True)
class BookEvent:
    pm: PairMarket
    # (side, price, qty, ts) in the order the exchange applied them; qty 0 deletes.
    changes: list[tuple[int, int, int, str]]
    # Each side's key list before the changes, or None when the side did not change.
    before: list[list[int] | None]
    checksum: int
    time: float
    bbo_changed: bool
    undo: list[tuple[int, int, int, str]]
    checksum_v1: int  # over the v1 wire text (padded prices, see PairMarket.v1_pad)
    cache: dict = field(default_factory=dict)


@dataclass(slots=True)
class TradeEvent:
    pm: PairMarket
    trades: list[Trade]
    time: float
    cache: dict = field(default_factory=dict)


Event = BookEvent | TradeEvent


class Market:
    def __init__(
        self, symbols: list[str], seed: int | None, clock: Callable[[], float] = time.time,
        weights: dict[str, int] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.pairs: dict[str, PairMarket] = {}
        now = clock()
        for name in symbols:
            pair = find_pair(name)
            if pair is None:
                raise ValueError(f"unknown pair {name!r}")
            self.pairs[pair.symbol] = self._seed_pair(pair, now)
        # A pair of weight N is listed N times: step() picks it N times as often.
        weights = weights or {}
        self._order = [pm for sym, pm in self.pairs.items() for _ in range(weights.get(sym, 1))]

    def _seed_pair(self, pair: Pair, now: float) -> PairMarket:
        usd = _USD.get(pair.base, 1.0) / _USD.get(pair.quote, 1.0)
        # Cheap pairs at few decimals cannot hold 1,200 distinct bid ticks above zero; lift them.
        mid = max(int(usd * 10**pair.price_decimals), 20_000)
        pm = PairMarket(pair, mid, self.rng, now)
        ts = v1_ts(now)
        rng = self.rng
        for side_idx, sign in ((ASK, 1), (BID, -1)):
            price = mid if side_idx == BID else mid + 1
            for _ in range(1200):
                pm.sides[side_idx].set(price, self._qty(pm), ts)
                price += sign * rng.randint(1, 3)
        return pm

    def _qty(self, pm: PairMarket) -> int:
        rng = self.rng
        q = int(rng.expovariate(1.0) * pm.typical_qty) + 1
        if rng.random() < 0.2:  # round lots are common on real books
            unit = 10 ** max(pm.qd - 2, 0)
            q = max(unit, q // unit * unit)
        return q

    # -- stepping -------------------------------------------------------------------------

    def step(self) -> list[Event]:
        """Advance one exchange message's worth of activity on one pair."""
        rng = self.rng
        pm = self._order[rng.randrange(len(self._order))]
        now = self.clock()
        if rng.random() < 0.3:
            return self._trade_step(pm, now)
        first = ASK if rng.random() < 0.5 else BID
        sides = [first, 1 - first] if rng.random() < 0.1 else [first]
        tx = _Tx(pm, now)
        for side_idx in sides:
            for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 3)):
                change = self._pick_change(pm, side_idx)
                if change is not None:
                    tx.set(side_idx, *change)
        return [tx.finish()] if tx.changes else []

    def _pick_change(self, pm: PairMarket, side_idx: int) -> tuple[int, int] | None:
        rng = self.rng
        side = pm.sides[side_idx]
        size = len(side)
        if rng.random() < 0.06:  # now and then deep, so depth 500/1000 windows move too
            rank = rng.randrange(size)
        else:
            rank = min(int(rng.expovariate(0.15)), size - 1)
        r = rng.random()
        bid, ask = pm.bids.price_at(0), pm.asks.price_at(0)
        if ask - bid > pm.max_spread and r < 0.5:
            rank, r = 0, 1.0  # liquidity returns to a wide spread, as market makers would
        if size >= BOOK_MAX_LEVELS:
            action = "delete"
        elif size <= BOOK_MIN_LEVELS:
            action = "insert"
        else:
            action = "modify" if r < 0.5 else "delete" if r < 0.72 else "insert"
        if action == "modify":
            return side.price_at(rank), self._qty(pm)
        if action == "delete":
            return side.price_at(rank), 0
        price = self._free_price(pm, side_idx, rank)
        return None if price is None else (price, self._qty(pm))

    def _free_price(self, pm: PairMarket, side_idx: int, rank: int) -> int | None:
        rng = self.rng
        side = pm.sides[side_idx]
        if rank == 0:
            bid = pm.bids.price_at(0)
            ask = pm.asks.price_at(0)
            if ask - bid < 2:
                return None
            # Improve the best price by a tick or two: the mid walks without jumping.
            reach = max(1, (ask - bid) // 2)
            if side_idx == ASK:
                return rng.randint(max(bid + 1, ask - reach), ask - 1)
            return rng.randint(bid + 1, min(ask - 1, bid + reach))
        a = side.price_at(rank - 1)
        b = side.price_at(rank)
        gap = abs(b - a)
        if gap > 1:
            return a + side.sign * rng.randint(1, gap - 1)
        last = side.price_at(len(side) - 1)
        price = last + side.sign * rng.randint(1, 3)
        return price if price > 0 else None

    def _trade_step(self, pm: PairMarket, now: float) -> list[Event]:
        rng = self.rng
        taker = "b" if rng.random() < 0.5 else "s"
        maker_idx = ASK if taker == "b" else BID
        side = pm.sides[maker_idx]
        tx = _Tx(pm, now)
        trades: list[Trade] = []
        n = 1 if rng.random() < 0.7 else rng.randint(2, 3)
        ord_type = "m" if n > 1 or rng.random() < 0.4 else "l"
        for _ in range(n):
            if len(side) <= BOOK_MIN_LEVELS // 2:
                break
            price, level_qty = side.best()  # type: ignore[misc]
            qty = level_qty if rng.random() < 0.35 else min(level_qty, self._qty(pm))
            pm.trade_id += 1
            trades.append(Trade(price, qty, taker, ord_type, now, pm.trade_id))
            tx.set(maker_idx, price, level_qty - qty)
            self._record_trade(pm, trades[-1])
        if not trades:
            return []
        return [TradeEvent(pm, trades, now), tx.finish()]

    def _record_trade(self, pm: PairMarket, t: Trade) -> None:
        pm.trades.append(t)
        s = pm.stats
        s.last, s.last_qty = t.price, t.qty
        s.high = max(s.high, t.price)
        s.low = min(s.low, t.price)
        s.volume += t.qty
        s.notional += t.price * t.qty
        s.count += 1
        for iv, c in pm.candles.items():
            if t.time >= c.end:
                pm.history[iv].append(c)
                begin = int(t.time) // (iv * 60) * iv * 60
                c = pm.candles[iv] = Candle(iv, begin, c.close, c.close, c.close, c.close)
            c.high = max(c.high, t.price)
            c.low = min(c.low, t.price)
            c.close = t.price
            c.notional += t.price * t.qty
            c.volume += t.qty
            c.count += 1
            c.updated = t.time


class _Tx:
    """Collects one message's level changes, keeping what clients need to render and undo it."""

    def __init__(self, pm: PairMarket, now: float) -> None:
        self.pm = pm
        self.now = now
        self.ts = v1_ts(now)
        self.changes: list[tuple[int, int, int, str]] = []
        self.undo: list[tuple[int, int, int, str]] = []
        self.before: list[list[int] | None] = [None, None]
        self.bbo = pm.bbo()

    def set(self, side_idx: int, price: int, qty: int) -> None:
        side = self.pm.sides[side_idx]
        if self.before[side_idx] is None:
            self.before[side_idx] = side.keys[:]
        old = side.get(price)
        self.undo.append((side_idx, price, *(old or (0, self.ts))))
        side.set(price, qty, self.ts)
        self.changes.append((side_idx, price, qty, self.ts))

    def finish(self) -> BookEvent:
        pm = self.pm
        checksum = pm.checksum()
        return BookEvent(
            pm, self.changes, self.before, checksum, self.now, pm.bbo() != self.bbo,
            self.undo[::-1], pm.checksum_v1() if pm.v1_pad else checksum,
        )


def apply_undo(event: BookEvent, now: float) -> BookEvent:
    """The message that takes the book back to its state before ``event`` (for looped feeds)."""
    tx = _Tx(event.pm, now)
    for side_idx, price, qty, ts in event.undo:
        tx.set(side_idx, price, qty)
        if qty:
            # Restore the level's original timestamp: a looped feed must end where it started.
            tx.pm.sides[side_idx].set(price, qty, ts)
    return tx.finish()
