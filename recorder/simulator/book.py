"""A full-depth order book in integer ticks, and what a client subscribed at depth d must see.

Each side keeps its keys sorted best first (asks by +price, bids by -price), so "top d" is a
slice and a level's rank is a bisect. A subscriber at depth d holds only the top d levels and
truncates itself; the server tells it about levels entering its window when better ones vanish
(v1 flags those with "r").
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass

ASK = 0
BID = 1


class Side:
    __slots__ = ("sign", "keys", "levels")

    def __init__(self, is_bid: bool) -> None:
        self.sign = -1 if is_bid else 1
        self.keys: list[int] = []
        # key -> (qty_ticks, v1 timestamp text of the level's last change)
        self.levels: dict[int, tuple[int, str]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def set(self, price: int, qty: int, ts: str) -> None:
        key = price * self.sign
        if qty == 0:
            if key in self.levels:
                del self.levels[key]
                del self.keys[bisect_left(self.keys, key)]
            return
        if key not in self.levels:
            insort(self.keys, key)
        self.levels[key] = (qty, ts)

    def get(self, price: int) -> tuple[int, str] | None:
        return self.levels.get(price * self.sign)

    def price_at(self, rank: int) -> int:
        return self.keys[rank] * self.sign

    def best(self) -> tuple[int, int] | None:
        if not self.keys:
            return None
        key = self.keys[0]
        return key * self.sign, self.levels[key][0]

    def top(self, n: int) -> list[tuple[int, int, str]]:
        levels = self.levels
        sign = self.sign
        return [(k * sign, *levels[k]) for k in self.keys[:n]]

    def top_pq(self, n: int) -> list[tuple[int, int]]:
        levels = self.levels
        sign = self.sign
        return [(k * sign, levels[k][0]) for k in self.keys[:n]]

    def in_top(self, price: int, depth: int) -> bool:
        key = price * self.sign
        i = bisect_left(self.keys, key)
        return i < depth and i < len(self.keys) and self.keys[i] == key


def rank_in(keys: list[int], key: int, depth: int) -> bool:
    i = bisect_left(keys, key)
    return i < depth and i < len(keys) and keys[i] == key


@dataclass(slots=True)
class ViewLevel:
    price: int
    qty: int
    ts: str
    republish: bool = False


def view_changes(
    side: Side, before_keys: list[int], changes: list[tuple[int, int, str]], depth: int
) -> list[ViewLevel]:
    """The levels a depth-``depth`` subscriber must receive for ``changes`` (in order).

    ``before_keys`` is the side's key list before the changes were applied. Every change to a
    price inside the window before or after is sent in order (repeats included), so the client
    ends at the right quantity; then untouched levels that entered the window are republished.
    """
    sign = side.sign
    out: list[ViewLevel] = []
    touched: set[int] = set()
    for price, qty, ts in changes:
        key = price * sign
        touched.add(key)
        if rank_in(before_keys, key, depth) or side.in_top(price, depth):
            out.append(ViewLevel(price, qty, ts))
    keys = side.keys
    start = max(0, depth - len(changes))
    for key in keys[start:depth]:
        if key not in touched and not rank_in(before_keys, key, depth):
            qty, ts = side.levels[key]
            out.append(ViewLevel(key * sign, qty, ts, True))
    return out
