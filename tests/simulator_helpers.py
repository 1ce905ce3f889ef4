"""Client-side helpers for the simulator tests, independent of the simulator's own code.

The book checksum here follows Kraken's documented rule over the *wire text* (remove ".",
then leading zeros), unlike the simulator, which computes it from integer ticks.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import zlib
from bisect import bisect_left, insort
from decimal import Decimal
from pathlib import Path

import websocket

from recorder.exchanges.kraken.signer import api_sign
from recorder.simulator.testing import DEMO_API_KEY, DEMO_API_SECRET

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kraken"


def _digits(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def wire_checksum(asks: list[tuple[str, str]], bids: list[tuple[str, str]]) -> int:
    s = "".join(_digits(p) + _digits(q) for p, q in asks[:10])
    s += "".join(_digits(p) + _digits(q) for p, q in bids[:10])
    return zlib.crc32(s.encode()) & 0xFFFFFFFF


class ClientBook:
    """A depth-limited book as a client keeps it, fed with wire text (prices as text)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        # Sorted Decimal keys best first (bids negated) and key -> (price text, qty text).
        self.keys: dict[str, list[Decimal]] = {"a": [], "b": []}
        self.levels: dict[str, dict[Decimal, tuple[str, str]]] = {"a": {}, "b": {}}
        self.checked = 0
        self.failed = 0

    def clear(self) -> None:
        for side in ("a", "b"):
            self.keys[side].clear()
            self.levels[side].clear()

    def apply(self, side: str, price: str, qty: str) -> None:
        key = Decimal(price) * (-1 if side == "b" else 1)
        keys, levels = self.keys[side], self.levels[side]
        if Decimal(qty) == 0:
            if key in levels:
                del levels[key]
                del keys[bisect_left(keys, key)]
            return
        if key not in levels:
            insort(keys, key)
        levels[key] = (price, qty)

    def truncate(self) -> None:
        for side in ("a", "b"):
            keys, levels = self.keys[side], self.levels[side]
            for key in keys[self.depth:]:
                del levels[key]
            del keys[self.depth:]

    def size(self, side: str) -> int:
        return len(self.keys[side])

    def top(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        a, b = self.levels["a"], self.levels["b"]
        return [a[k] for k in self.keys["a"][:10]], [b[k] for k in self.keys["b"][:10]]

    def verify(self, expected: int) -> bool:
        ok = wire_checksum(*self.top()) == expected
        self.checked += 1
        self.failed += not ok
        return ok


def v1_book_message(books: dict[str, ClientBook], msg: list) -> bool | None:
    """Apply one v1 book frame; True/False = checksum result, None for a snapshot."""
    pair = msg[-1]
    if "as" in msg[1]:
        book = books[pair]
        book.clear()
        for p, q, *_ in msg[1]["as"]:
            book.apply("a", p, q)
        for p, q, *_ in msg[1]["bs"]:
            book.apply("b", p, q)
        return None
    book = books[pair]
    checksum = None
    for part in msg[1:-2]:
        for key in ("a", "b"):
            for lv in part.get(key, []):
                book.apply(key, lv[0], lv[1])
        checksum = part.get("c", checksum)
    book.truncate()
    return book.verify(int(checksum))


def v2_book_message(books: dict[str, ClientBook], msg: dict) -> bool:
    d = msg["data"][0]
    book = books[d["symbol"]]
    if msg["type"] == "snapshot":
        book.clear()
    for lv in d["asks"]:
        book.apply("a", str(lv["price"]), str(lv["qty"]))
    for lv in d["bids"]:
        book.apply("b", str(lv["price"]), str(lv["qty"]))
    book.truncate()
    return book.verify(int(d["checksum"]))


def loads_exact(text: str) -> object:
    """Parse keeping every decimal number as its wire text."""
    return json.loads(text, parse_float=str)


class Client:
    def __init__(self, url: str, timeout: float = 20.0) -> None:
        # Generous: on a loaded machine (CI runs four shards on two cores, a JVM among them)
        # a --speed max simulator may pause for seconds while it builds its next cycle.
        self.ws = websocket.create_connection(
            url, timeout=timeout, skip_utf8_validation=True, enable_multithread=False
        )

    def send(self, obj: object) -> None:
        self.ws.send(json.dumps(obj))

    def recv(self) -> object:
        return loads_exact(self.ws.recv())

    def recv_until(self, pred, limit: int = 100000, timeout: float = 10.0) -> object:
        deadline = time.monotonic() + timeout
        for _ in range(limit):
            msg = self.recv()
            if pred(msg):
                return msg
            if time.monotonic() > deadline:
                break
        raise AssertionError("expected message not received")

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.ws.close(timeout=0.5)
        except Exception:
            pass


def book_check(books: dict[str, ClientBook], version: int, msg: object) -> bool | None:
    """The checksum result of a book update in either version; None for anything else."""
    if version == 1:
        if isinstance(msg, list) and str(msg[-2]).startswith("book-"):
            return v1_book_message(books, msg)
        return None
    if isinstance(msg, dict) and msg.get("channel") == "book":
        if msg["type"] == "snapshot":
            v2_book_message(books, msg)
            return None
        return v2_book_message(books, msg)
    return None


def is_market_data(msg: object) -> bool:
    """A public data frame (not status, heartbeat, ack or pong)."""
    if isinstance(msg, list):
        return True
    return isinstance(msg, dict) and msg.get("channel") in ("book", "trade", "ticker", "ohlc",
                                                            "spread")


def subscribe_book(c: Client, version: int, symbols: list[str], depth: int = 10) -> None:
    """``symbols`` in v2 names; v1 gets the wsnames."""
    if version == 1:
        pairs = ["XBT" + s[3:] if s.startswith("BTC/") else s for s in symbols]
        c.send({"event": "subscribe", "pair": pairs,
                "subscription": {"name": "book", "depth": depth}})
    else:
        c.send({"method": "subscribe", "params": {"channel": "book", "depth": depth,
                                                  "symbol": symbols}})


def new_books(version: int, symbols: list[str], depth: int = 10) -> dict[str, ClientBook]:
    names = [("XBT" + s[3:] if s.startswith("BTC/") else s) if version == 1 else s
             for s in symbols]
    return {n: ClientBook(depth) for n in names}


def token(sim) -> str:
    reply = post(sim, "/0/private/GetWebSocketsToken", f"nonce={time.time_ns() // 1000}")
    assert reply["error"] == []
    return reply["result"]["token"]


def post(sim, path: str, body: str, key: str = DEMO_API_KEY, sign: str | None = None,
         secret: str = DEMO_API_SECRET) -> dict:
    nonce = urllib.parse.parse_qs(body).get("nonce", [""])[0]
    sign = sign if sign is not None else api_sign(path, nonce, body, secret)
    req = urllib.request.Request(
        sim.urls["rest"] + path, data=body.encode(), method="POST",
        headers={"API-Key": key, "API-Sign": sign,
                 "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
        return json.loads(resp.read())
