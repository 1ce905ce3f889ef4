"""The synthetic KuCoin market: one seeded random-walk model per process, in integer ticks.

Each symbol has a full-depth book whose every level change takes the symbol's next level2
sequence number, as KuCoin's matching engine does. One market step is one ``l2update``
message: its changes, coalesced per price (only a price's last change in the message is
pushed, so a sequence can be missing inside ``[sequenceStart, sequenceEnd]``), and now and
then a ``["0","0",seq]`` placeholder (a sequence consumed without a book change). Trades take
liquidity from the book and number themselves in a separate, larger sequence space, with
``tradeId == sequence`` as in KuCoin's current feed.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from recorder.simulator.book import ASK, BID, Side
from recorder.simulator.kucoin.symbols import Symbol

# Candle types of /market/candles and /api/v1/market/candles, in seconds (epoch-aligned, so a
# week starts on a Thursday, as KuCoin's do).
CANDLE_TYPES = {
    "1min": 60, "3min": 180, "5min": 300, "15min": 900, "30min": 1800, "1hour": 3600,
    "2hour": 7200, "4hour": 14400, "6hour": 21600, "8hour": 28800, "12hour": 43200,
    "1day": 86400, "1week": 604800,
}
BOOK_MIN_LEVELS = 300
BOOK_MAX_LEVELS = 400
PLACEHOLDER_RATE = 0.02


@dataclass(slots=True)
class Trade:
    price: int
    size: int
    side: str  # the taker's: "buy" | "sell"
    seq: int  # also the tradeId
    time_ns: int
    maker_order: str
    taker_order: str


@dataclass(slots=True)
class Candle:
    start: int  # seconds
    open: int
    close: int
    high: int
    low: int
    volume: int = 0  # size ticks
    turnover: int = 0  # price ticks x size ticks


@dataclass(slots=True)
class Stats:
    open: int
    high: int
    low: int
    last: int
    last_size: int = 0
    volume: int = 0
    turnover: int = 0
    count: int = 0


class PairMarket:
    def __init__(self, sym: Symbol, mid: int, rng: random.Random) -> None:
        self.sym = sym
        self.name = sym.name
        self.pd = sym.pd
        self.sd = sym.sd
        self.sides = (Side(False), Side(True))
        self.seq = rng.randrange(10**10, 2 * 10**10)  # the last level2 sequence assigned
        self.trade_seq = rng.randrange(10**16, 2 * 10**16)
        self.trades: deque[Trade] = deque(maxlen=1000)
        self.stats = Stats(mid, mid, mid, mid)
        self.candles: dict[str, Candle] = {}
        self.history: dict[str, deque[Candle]] = {t: deque(maxlen=1500) for t in CANDLE_TYPES}
        self.max_spread = max(3, mid // 20000)
        usd = mid / 10**sym.pd
        self.typical = max(1, int(2000.0 / max(usd * _quote_usd(sym), 1e-9) * 10**sym.sd))

    @property
    def asks(self) -> Side:
        return self.sides[ASK]

    @property
    def bids(self) -> Side:
        return self.sides[BID]

    def bbo(self) -> tuple[int, int, int, int]:
        bid = self.bids.best() or (0, 0)
        ask = self.asks.best() or (0, 0)
        return bid[0], bid[1], ask[0], ask[1]


def _quote_usd(sym: Symbol) -> float:
    return 65000.0 if sym.quote == "BTC" else 1.0


@dataclass(slots=True)
class BookEvent:
    pm: PairMarket
    asks: list[tuple[int, int, int]]  # (price, size, sequence); price 0 = placeholder
    bids: list[tuple[int, int, int]]
    start: int
    end: int
    time_ms: int
    undo: list[tuple[int, int, int]] = field(default_factory=list)  # (side, price, old size)
    cache: dict = field(default_factory=dict)


@dataclass(slots=True)
class TradeEvent:
    pm: PairMarket
    trades: list[Trade]
    time_ms: int
    cache: dict = field(default_factory=dict)


Event = BookEvent | TradeEvent


class _Tx:
    """One l2update: level changes with consecutive sequences, coalesced per price."""

    def __init__(self, pm: PairMarket, time_ms: int) -> None:
        self.pm = pm
        self.time_ms = time_ms
        self.start = pm.seq + 1
        self.changes: dict[tuple[int, int], tuple[int, int]] = {}  # (side, price) -> (size, seq)
        self.placeholders: list[tuple[int, int]] = []  # (side, seq)
        self.undo: list[tuple[int, int, int]] = []

    def set(self, side_idx: int, price: int, size: int) -> None:
        pm = self.pm
        side = pm.sides[side_idx]
        old = side.get(price)
        self.undo.append((side_idx, price, old[0] if old else 0))
        side.set(price, size, "")
        pm.seq += 1
        self.changes.pop((side_idx, price), None)  # only the last change of a price is pushed
        self.changes[(side_idx, price)] = (size, pm.seq)

    def placeholder(self, side_idx: int) -> None:
        self.pm.seq += 1
        self.placeholders.append((side_idx, self.pm.seq))

    def finish(self) -> BookEvent | None:
        pm = self.pm
        if pm.seq < self.start:
            return None
        out: tuple[list, list] = ([], [])
        for (side_idx, price), (size, seq) in self.changes.items():
            out[side_idx].append((price, size, seq))
        for side_idx, seq in self.placeholders:
            out[side_idx].append((0, 0, seq))
        for lst in out:
            lst.sort(key=lambda c: c[2])
        return BookEvent(pm, out[ASK], out[BID], self.start, pm.seq, self.time_ms,
                         self.undo[::-1])


class Market:
    def __init__(self, symbols: list[Symbol], seed: int | None,
                 clock: Callable[[], float] = time.time, weights: dict[str, int] | None = None,
                 book_levels: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        # Levels a side: seeded at the middle, kept between the two bounds.
        if book_levels is None:
            self.min_levels, self.max_levels = BOOK_MIN_LEVELS, BOOK_MAX_LEVELS
        else:
            self.min_levels = book_levels - book_levels // 7
            self.max_levels = book_levels + book_levels // 7
        self.pairs: dict[str, PairMarket] = {}
        for sym in symbols:
            self.pairs[sym.name] = self._seed_pair(sym)
        # A symbol of weight N is listed N times: step() picks it N times as often.
        weights = weights or {}
        self._order = [pm for pm in self.pairs.values() for _ in range(weights.get(pm.name, 1))]
        # Called with each new trade before it is published (the demo account uses it to
        # take part in trades).
        self.on_trade: Callable[[PairMarket, Trade], None] | None = None

    def _seed_pair(self, sym: Symbol) -> PairMarket:
        mid = max(int(sym.usd * 10**sym.pd), 20_000)
        pm = PairMarket(sym, mid, self.rng)
        rng = self.rng
        for side_idx, sign in ((ASK, 1), (BID, -1)):
            price = mid if side_idx == BID else mid + 1
            for _ in range((self.min_levels + self.max_levels) // 2):
                pm.sides[side_idx].set(price, self._size(pm), "")
                price += sign * rng.randint(1, 3)
        return pm

    def _size(self, pm: PairMarket) -> int:
        rng = self.rng
        q = int(rng.expovariate(1.0) * pm.typical) + 1
        if rng.random() < 0.2:  # round lots are common on real books
            unit = 10 ** max(pm.sd - 2, 0)
            q = max(unit, q // unit * unit)
        return q

    def order_id(self) -> str:
        """A 24-hex id shaped like KuCoin's (a Mongo ObjectId: seconds, then random)."""
        return f"{int(self.clock()) & 0xFFFFFFFF:08x}{self.rng.getrandbits(64):016x}"

    # -- stepping -------------------------------------------------------------------------

    def step(self) -> list[Event]:
        """Advance one exchange message's worth of activity on one symbol."""
        rng = self.rng
        pm = self._order[rng.randrange(len(self._order))]
        now_ms = int(self.clock() * 1000)
        if rng.random() < 0.3:
            return self._trade_step(pm, now_ms)
        first = ASK if rng.random() < 0.5 else BID
        sides = [first, 1 - first] if rng.random() < 0.1 else [first]
        tx = _Tx(pm, now_ms)
        for side_idx in sides:
            for _ in range(1 if rng.random() < 0.75 else rng.randint(2, 4)):
                change = self._pick_change(pm, side_idx)
                if change is not None:
                    tx.set(side_idx, *change)
        if rng.random() < PLACEHOLDER_RATE:
            tx.placeholder(ASK if rng.random() < 0.5 else BID)
        ev = tx.finish()
        return [ev] if ev is not None else []

    def _pick_change(self, pm: PairMarket, side_idx: int) -> tuple[int, int] | None:
        rng = self.rng
        side = pm.sides[side_idx]
        size = len(side)
        if rng.random() < 0.06:  # now and then deep, so the whole book moves
            rank = rng.randrange(size)
        else:
            rank = min(int(rng.expovariate(0.15)), size - 1)
        r = rng.random()
        bid, ask = pm.bids.price_at(0), pm.asks.price_at(0)
        if ask - bid > pm.max_spread and r < 0.5:
            rank, r = 0, 1.0  # liquidity returns to a wide spread, as market makers would
        if size >= self.max_levels:
            action = "delete"
        elif size <= self.min_levels:
            action = "insert"
        else:
            action = "modify" if r < 0.5 else "delete" if r < 0.72 else "insert"
        if action == "modify":
            return side.price_at(rank), self._size(pm)
        if action == "delete":
            return side.price_at(rank), 0
        price = self._free_price(pm, side_idx, rank)
        return None if price is None else (price, self._size(pm))

    def _free_price(self, pm: PairMarket, side_idx: int, rank: int) -> int | None:
        rng = self.rng
        side = pm.sides[side_idx]
        if rank == 0:
            bid = pm.bids.price_at(0)
            ask = pm.asks.price_at(0)
            if ask - bid < 2:
                return None
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

    def _trade_step(self, pm: PairMarket, now_ms: int) -> list[Event]:
        rng = self.rng
        taker = "buy" if rng.random() < 0.5 else "sell"
        maker_idx = ASK if taker == "buy" else BID
        side = pm.sides[maker_idx]
        tx = _Tx(pm, now_ms)
        trades: list[Trade] = []
        taker_order = self.order_id()
        time_ns = now_ms * 1_000_000
        for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)):
            if len(side) <= self.min_levels // 2:
                break
            price, level = side.best()  # type: ignore[misc]
            size = level if rng.random() < 0.35 else min(level, self._size(pm))
            pm.trade_seq += rng.randint(1, 4)
            trade = Trade(price, size, taker, pm.trade_seq, time_ns, self.order_id(),
                          taker_order)
            if self.on_trade is not None:
                self.on_trade(pm, trade)
            trades.append(trade)
            tx.set(maker_idx, price, level - size)
            self._record(pm, trade)
        ev = tx.finish()
        if not trades or ev is None:
            return []
        return [TradeEvent(pm, trades, now_ms), ev]

    def _record(self, pm: PairMarket, t: Trade) -> None:
        pm.trades.append(t)
        s = pm.stats
        s.last, s.last_size = t.price, t.size
        s.high = max(s.high, t.price)
        s.low = min(s.low, t.price)
        s.volume += t.size
        s.turnover += t.price * t.size
        s.count += 1
        sec = t.time_ns // 1_000_000_000
        for name, length in CANDLE_TYPES.items():
            start = sec // length * length
            c = pm.candles.get(name)
            if c is None or start > c.start:
                if c is not None:
                    pm.history[name].append(c)
                c = pm.candles[name] = Candle(start, t.price, t.price, t.price, t.price)
            c.high = max(c.high, t.price)
            c.low = min(c.low, t.price)
            c.close = t.price
            c.volume += t.size
            c.turnover += t.price * t.size


def apply_undo(ev: BookEvent, now_ms: int) -> BookEvent | None:
    """The l2update that takes the book back to its state before ``ev`` (for looped feeds);
    its changes take new sequences, as any change does."""
    tx = _Tx(ev.pm, now_ms)
    for side_idx, price, size in ev.undo:
        tx.set(side_idx, price, size)
    return tx.finish()
