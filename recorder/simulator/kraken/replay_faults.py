"""What a replay needs beyond sending frames: a garbled book frame for the corrupt_book fault,
and the capture's trades for the demo account.

A replay has no market model, so the book the client holds is rebuilt here from the wire text
of the frames it was sent, the way a client keeps it (levels by price, cut to the depth).
"""

from __future__ import annotations

import json
from bisect import bisect_left, insort
from datetime import datetime
from decimal import Decimal, InvalidOperation

from recorder.exchanges.kraken.pairs import Pair, find_pair
from recorder.simulator.kraken.market import Trade
from recorder.simulator.kraken.replay import Captured
from recorder.simulator.wire import encode


def _exact(text: str) -> object:
    """Parse keeping every number as its wire text."""
    return json.loads(text, parse_float=str, parse_int=str)


def book_levels(obj: object) -> tuple[bool, list[tuple[str, str, str]]] | None:
    """(is snapshot, [(side "a"/"b", price text, qty text)]) of a v1 or v2 book frame."""
    out: list[tuple[str, str, str]] = []
    if isinstance(obj, list):
        snapshot = False
        for part in obj[1:-2]:
            if not isinstance(part, dict):
                continue
            for key, levels in part.items():
                if key in ("as", "bs"):
                    snapshot = True
                if key in ("a", "b", "as", "bs") and isinstance(levels, list):
                    out += [(key[0], str(lv[0]), str(lv[1])) for lv in levels]
        return snapshot, out
    if isinstance(obj, dict) and obj.get("channel") == "book":
        d = (obj.get("data") or [{}])[0]
        for key, side in (("asks", "a"), ("bids", "b")):
            out += [(side, str(lv["price"]), str(lv["qty"])) for lv in d.get(key, [])]
        return obj.get("type") == "snapshot", out
    return None


class TextBook:
    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.keys: dict[str, list[Decimal]] = {"a": [], "b": []}

    def apply(self, side: str, price: str, qty: str) -> None:
        key = Decimal(price) * (-1 if side == "b" else 1)
        keys = self.keys[side]
        i = bisect_left(keys, key)
        present = i < len(keys) and keys[i] == key
        if Decimal(qty) == 0:
            if present:
                del keys[i]
        elif not present:
            insort(keys, key)

    def truncate(self) -> None:
        for keys in self.keys.values():
            del keys[self.depth:]

    def in_top10(self, side: str, price: str) -> bool:
        key = Decimal(price) * (-1 if side == "b" else 1)
        i = bisect_left(self.keys[side], key)
        return i < 10 and i < len(self.keys[side]) and self.keys[side][i] == key


def _bump(qty: str) -> str:
    """The same quantity one unit of its last decimal higher, written the same way."""
    whole, _, frac = qty.partition(".")
    value = int(whole + frac) + 1
    if not frac:
        return str(value)
    digits = str(value).rjust(len(frac) + 1, "0")
    return digits[:-len(frac)] + "." + digits[-len(frac):]


def _garble(text: str, version: int, price: str, qty: str) -> str | None:
    if version == 1:
        needle = f'"{price}","{qty}"'
        repl = f'"{price}","{_bump(qty)}"'
    else:
        needle = f'"price":{price},"qty":{qty}'
        repl = f'"price":{price},"qty":{_bump(qty)}'
    pos = text.rfind(needle)  # the last occurrence is the one the client keeps
    if pos < 0:
        return None
    return text[:pos] + repl + text[pos + len(needle):]


def corrupt_frame(frames: list[Captured], first: int, symbol: str) -> tuple[int, bytes] | None:
    """The first book update of ``symbol`` at index >= ``first`` with a level that stays in
    the client's top 10, and that frame with the level's quantity wrong; None if there is none.
    ``frames`` is what the client is sent, in order."""
    book: TextBook | None = None
    for i, f in enumerate(frames):
        name, sym = f.key
        if sym != symbol or not name.startswith("book-"):
            continue
        obj = _exact(f.text)
        parsed = book_levels(obj)
        if parsed is None:
            continue
        snapshot, levels = parsed
        if book is None or snapshot:
            book = TextBook(int(name.split("-")[1]))
        try:
            for side, price, qty in levels:
                book.apply(side, price, qty)
        except InvalidOperation:
            continue
        book.truncate()
        if i < first or snapshot:
            continue
        later: set[tuple[str, Decimal]] = set()
        for side, price, qty in reversed(levels):
            key = (side, Decimal(price))
            if key in later:
                continue
            later.add(key)
            if Decimal(qty) > 0 and book.in_top10(side, price):
                bad = _garble(f.text, 1 if isinstance(obj, list) else 2, price, qty)
                if bad is not None:
                    return i, encode(bad)
    return None


def _ticks(text: str, decimals: int) -> int:
    return int((Decimal(text).scaleb(decimals)).to_integral_value())


def trade_of(f: Captured, next_id: int) -> tuple[Pair, Trade] | None:
    """The first trade of a replayed trade frame, in the account's integer units."""
    if f.channel != "trade":
        return None
    pair = find_pair(f.key[1])
    if pair is None:
        return None
    obj = _exact(f.text)
    try:
        if isinstance(obj, list):
            lv = obj[1][0]
            price, qty, t, side = lv[0], lv[1], float(lv[2]), lv[3]
            trade_id = int(lv[6]) if len(lv) > 6 else next_id
            ord_type = lv[4]
        else:
            d = obj["data"][0]
            price, qty = str(d["price"]), str(d["qty"])
            side = "b" if d["side"] == "buy" else "s"
            stamp = d["timestamp"]
            t = datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()
            trade_id = int(d.get("trade_id", next_id))
            ord_type = "m" if d.get("ord_type") == "market" else "l"
        trade = Trade(_ticks(price, pair.price_decimals), _ticks(qty, pair.qty_decimals), side,
                      ord_type, t, trade_id)
    except (KeyError, IndexError, TypeError, ValueError, InvalidOperation):
        return None
    return pair, trade
