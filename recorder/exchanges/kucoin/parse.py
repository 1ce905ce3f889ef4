"""KuCoin classic WebSocket frames -> rows: pure functions plus one connection's book state.

Frames are decoded with msgspec keeping every number's exact text (``float_hook=str``);
KuCoin sends most numbers as strings anyway, sequences as ints or strings, and some ints
above 2^53 (nanosecond times), which stay exact Python ints.

Topics (``{"type":"message","topic":...,"subject":...,"data":{...}}``):

- ``/market/match:{s}`` -> ``trades``: trade_id = ``tradeId`` (24-hex ids before 2023,
  numeric strings since), sequence = ``sequence``, side = the taker's side, ts_exchange =
  ``time`` (ns text) truncated to µs, ord_type none.
- ``/market/level2:{s}`` -> ``book`` through ``book_sync.BookSync`` (snapshot by sequence).
- ``/spotMarket/level2Depth5:{s}`` / ``level2Depth50:{s}`` -> ``book``: every message is a
  full top-N snapshot (is_snapshot, depth 5 or 50, sequence none, verified none: nothing to
  check it against), ts_exchange = ``timestamp`` (ms).
- ``/market/ticker:{s}`` (and ``:all``, symbol in ``subject``) -> ``spread``: bestBid,
  bestBidSize, bestAsk, bestAskSize; ts_exchange = ``time`` (ms; KuCoin's spec example
  spells it ``Time``).
- ``/market/snapshot:{s}`` -> ``ticker``. KuCoin's 24 h market snapshot (JSON numbers, up to
  20 decimals, kept as text), mapped where the meaning is the same:

  ======================  ==========================================================
  ticker column           KuCoin ``data.data`` field
  ======================  ==========================================================
  ts_exchange             ``datetime`` (ms)
  bid / bid_qty           ``buy`` / ``bidSize`` (best bid; bidSize only since 2024)
  ask / ask_qty           ``sell`` / ``askSize``
  last                    ``lastTradedPrice`` (else ``close``)
  volume                  ``vol`` (24 h base volume, rolling, as Kraken's ``volume``)
  low / high / open       ``low`` / ``high`` / ``open`` (rolling 24 h)
  change                  ``changePrice`` (24 h)
  change_pct              ``changeRate`` x 100, exact (KuCoin: a ratio, -0.0534; the
                          column is percent, as Kraken's -5.34)
  ======================  ==========================================================

  Left empty: last_qty, the ``*_today`` columns and trades (KuCoin sends none), and vwap:
  ``averagePrice`` is KuCoin's 24 h average price, which is not volValue / vol in the
  captures, so it is not a VWAP. Not recorded: ``volValue`` (quote volume; no column),
  the fee and market fields, ``marketChange1h/4h/24h``.
- ``/market/candles:{s}_{type}`` -> ``ohlc``. ``candles`` = [start (s), open, close, high,
  low, volume, turnover] (note O, C, H, L); interval = the topic's type in minutes;
  ts_exchange = ``time`` (ns); vwap none (turnover / volume is not exact), trades none.

Control frames: ``welcome``, ``pong``, ``ack`` (-> ``subscribed``, with an events row), and
``error``: 404 "topic ... is not found" and 509 (limits) are subscribe errors; 401 "token
is expired" is an error that ``feed.session_invalid`` recognises. Anything else well formed
is an ``unknown_event`` row. A frame that is not a JSON object, or a known topic with a
missing or broken field, raises KeyError/ValueError/TypeError/IndexError/AttributeError (the
runtime records it as ``malformed``) before any row or book state is touched.

REST snapshots come back from ``feed.fetch_snapshot`` as a frame of their own, recorded in
``raw`` like any other so that renormalize rebuilds the same book::

    {"type":"rest_snapshot","topic":"/market/level2:BTC-USDT",
     "endpoint":"GET /api/v1/market/orderbook/level2_100","depth":100,
     "data":{...KuCoin's data, byte for byte...}}

A REST answer recorded in ``raw`` when a connection was prepared (the bullet, token
redacted) parses to nothing.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any

import msgspec

from recorder.core.events import detail, event
from recorder.exchanges.base import Control
from recorder.exchanges.kucoin.book_sync import BookSync, L2Message, Snapshot
from recorder.exchanges.kucoin.common import EXCHANGE, TYPE_MINUTES, canonical

decode = msgspec.json.Decoder(float_hook=str).decode

REST_SNAPSHOT = "rest_snapshot"
LEVEL2 = "/market/level2"
# Topic prefix -> our channel (events and errors name it).
TOPIC_CHANNELS = {
    "/market/match": "trade",
    LEVEL2: "book",
    "/spotMarket/level2Depth5": "book",
    "/spotMarket/level2Depth50": "book",
    "/market/ticker": "spread",
    "/market/snapshot": "ticker",
    "/market/candles": "ohlc",
}
_DEPTH_TOPICS = {"/spotMarket/level2Depth5": 5, "/spotMarket/level2Depth50": 50}
_NOT_FOUND = re.compile(r"topic (\S+) is not found")
_by_sequence = itemgetter(0)


def _text(v: Any) -> str:
    """Exact number text: strings as sent, JSON ints as their digits; anything else is
    malformed. The text must be a number (the book keeper parses it later)."""
    if v.__class__ is str:
        float(v)  # ValueError for "abc"
        return v
    if v.__class__ is int:
        return str(v)
    raise TypeError(f"expected a number, got {type(v).__name__}")


def _opt(v: Any) -> str | None:
    return None if v is None else _text(v)


def _int(v: Any) -> int:
    if v.__class__ is int:
        return v
    if v.__class__ is str:
        return int(v)
    raise TypeError(f"expected an integer, got {type(v).__name__}")


def _ms(v: Any) -> int | None:
    return None if v is None else _int(v) * 1000


def _pct(v: Any) -> str | None:
    """A ratio's text x 100, exactly ("-0.0534" -> "-5.34")."""
    if v is None:
        return None
    try:
        return format(Decimal(_text(v)).scaleb(2), "f")
    except InvalidOperation:
        raise ValueError(f"not a number: {v!r:.40}") from None


def _symbol(rest: str, data: dict) -> str:
    """The wire symbol of a push: ``data.symbol`` if sent, else the topic's single one."""
    sym = data.get("symbol")
    if sym is None:
        if not rest or "," in rest or rest == "all":
            raise KeyError("symbol")
        sym = rest
    if sym.__class__ is not str:
        raise TypeError("symbol is not text")
    return sym


def channel_of_request_id(req_id: Any) -> str | None:
    """Our subscribe ids are "<n>.<channel>" (feed.subscribe_requests): an ack or an error
    naming one says which channel it is about, in a live session and in a replay alike."""
    if req_id.__class__ is str:
        _, dot, channel = req_id.partition(".")
        if dot and channel in _CHANNELS:
            return channel
    return None


_CHANNELS = frozenset(TOPIC_CHANNELS.values())


def topic_parts(topic: str) -> tuple[str | None, list[str]]:
    """(channel, canonical symbols) of a topic such as ``/market/match:BTC-USDT,ETH-USDT``
    or ``/market/candles:BTC-USDT_1hour``."""
    prefix, _, rest = topic.partition(":")
    channel = TOPIC_CHANNELS.get(prefix)
    names = [n for n in rest.split(",") if n]
    if prefix == "/market/candles":
        names = [n.rpartition("_")[0] or n for n in names]
    return channel, [canonical(n) for n in names if n != "all"]


# -- data topics ---------------------------------------------------------------------------


def trade_row(data: dict, ts_recv: int, rest: str = "") -> tuple:
    """The ``trades`` row of one ``/market/match`` push's data."""
    side = data["side"]
    if side.__class__ is not str:
        raise TypeError("side is not text")
    trade_id = data["tradeId"]
    if trade_id.__class__ is not str:
        trade_id = str(_int(trade_id))
    return (EXCHANGE, canonical(_symbol(rest, data)), _int(data["time"]) // 1000, ts_recv,
            _text(data["price"]), _text(data["size"]), side, trade_id, None, None,
            _int(data["sequence"]), "ws")


def spread_row(data: dict, symbol: str, ts_recv: int) -> tuple:
    """The ``spread`` row of one ``/market/ticker`` push's data."""
    t = data.get("time")
    if t is None:
        t = data.get("Time")
    return (EXCHANGE, canonical(symbol), _ms(t), ts_recv, _opt(data["bestBid"]),
            _opt(data["bestBidSize"]), _opt(data["bestAsk"]), _opt(data["bestAskSize"]))


def ticker_row(inner: dict, ts_recv: int) -> tuple:
    """The ``ticker`` row of one ``/market/snapshot`` push's ``data.data``."""
    g = inner.get
    last = g("lastTradedPrice")
    if last is None:
        last = g("close")
    return (EXCHANGE, canonical(_symbol("", inner)), _ms(g("datetime")), ts_recv,
            _opt(g("buy")), _opt(g("bidSize")), _opt(g("sell")), _opt(g("askSize")),
            _opt(last), None, _opt(g("vol")), None, None, None, _opt(g("low")), None,
            _opt(g("high")), None, _opt(g("open")), None, _opt(g("changePrice")),
            _pct(g("changeRate")), None, None)


def ohlc_row(data: dict, rest: str, ts_recv: int) -> tuple:
    """The ``ohlc`` row of one ``/market/candles:{symbol}_{type}`` push."""
    wire_sym, _, kind = rest.rpartition("_")
    minutes = TYPE_MINUTES[kind]
    c = data["candles"]
    start, o, cl, h, lo, vol = c[0], c[1], c[2], c[3], c[4], c[5]
    t = data.get("time")
    return (EXCHANGE, canonical(data.get("symbol") or wire_sym), minutes,
            _int(start) * 1_000_000, None if t is None else _int(t) // 1000, ts_recv,
            _text(o), _text(h), _text(lo), _text(cl), None, _text(vol), None, "ws")


def depth_rows(data: dict, symbol: str, depth: int, ts_recv: int,
               update_id: int) -> list[tuple]:
    """The ``book`` rows of one top-N snapshot push (bids, then asks)."""
    ts = _ms(data.get("timestamp"))
    sym = canonical(symbol)
    return [(EXCHANGE, sym, ts, ts_recv, side, _text(lv[0]), _text(lv[1]), True, update_id,
             None, False, depth, None, None)
            for side, key in (("bid", "bids"), ("ask", "asks")) for lv in data[key]]


def l2_message(data: dict, rest: str) -> L2Message:
    """One l2update's data, validated (sequences as ints, changes sorted by sequence,
    price "0" placeholders left out)."""
    sym = canonical(_symbol(rest, data))
    start, end = _int(data["sequenceStart"]), _int(data["sequenceEnd"])
    changes = []
    ch = data["changes"]
    for side, key in (("ask", "asks"), ("bid", "bids")):
        for c in ch.get(key) or ():
            price, size, seq = _text(c[0]), _text(c[1]), _int(c[2])
            if float(price) == 0.0:
                continue  # a sequence-only placeholder
            changes.append((seq, side, price, size))
    changes.sort(key=_by_sequence)
    return L2Message(sym, start, end, _ms(data.get("time")), changes)


def rest_snapshot(msg: dict) -> Snapshot:
    """A ``rest_snapshot`` frame (see the module docstring), validated."""
    prefix, _, wire_sym = msg["topic"].partition(":")
    if prefix != LEVEL2 or not wire_sym or "," in wire_sym:
        raise ValueError(f"rest_snapshot for an unexpected topic {msg['topic']!r:.60}")
    depth = msg.get("depth")
    if depth is not None:
        depth = _int(depth)
    data = msg["data"]
    bids = [(_text(lv[0]), _text(lv[1])) for lv in data["bids"]]
    asks = [(_text(lv[0]), _text(lv[1])) for lv in data["asks"]]
    return Snapshot(canonical(wire_sym), _int(data["sequence"]), _ms(data.get("time")), depth,
                    bids, asks)


def snapshot_frame(wire_symbol: str, endpoint: str, depth: int | None, data: bytes) -> str:
    """The frame text for a REST snapshot: KuCoin's ``data`` spliced in byte for byte."""
    head = msgspec.json.encode({"type": REST_SNAPSHOT, "topic": f"{LEVEL2}:{wire_symbol}",
                                "endpoint": endpoint, "depth": depth}).decode()
    return f'{head[:-1]},"data":{data.decode()}}}'


# -- the parser of one connection ----------------------------------------------------------


class Parser:
    """Frames of one connection -> rows; holds its level2 books (``books``)."""

    def __init__(self, buffer_limit: int | None = None) -> None:
        self.books = BookSync() if buffer_limit is None else BookSync(buffer_limit)

    def parse(self, msg: Any, ts_recv: int, update_id: int,
              out: dict[str, list[tuple]]) -> Control | None:
        """Append the rows of one decoded frame to ``out``; a Control for non-data frames."""
        if msg.__class__ is not dict:
            raise TypeError("a KuCoin frame is a JSON object")
        kind = msg.get("type")
        if kind == "message":
            topic = msg["topic"]
            if topic.__class__ is not str:
                raise TypeError("topic is not text")
            prefix, _, rest = topic.partition(":")
            if prefix == LEVEL2:
                return self.books.update(l2_message(msg["data"], rest), ts_recv, update_id, out)
            if prefix == "/market/match":
                out["trades"].append(trade_row(msg["data"], ts_recv, rest))
                return None
            if prefix == "/market/ticker":
                sym = msg["subject"] if rest == "all" else _symbol(rest, msg["data"])
                out["spread"].append(spread_row(msg["data"], sym, ts_recv))
                return None
            depth = _DEPTH_TOPICS.get(prefix)
            if depth is not None:
                data = msg["data"]
                out["book"].extend(depth_rows(data, _symbol(rest, data), depth, ts_recv,
                                              update_id))
                return None
            if prefix == "/market/candles":
                out["ohlc"].append(ohlc_row(msg["data"], rest, ts_recv))
                return None
            if prefix == "/market/snapshot":
                out["ticker"].append(ticker_row(msg["data"]["data"], ts_recv))
                return None
            return self._unknown(msg, ts_recv, out, TOPIC_CHANNELS.get(prefix))
        if kind == REST_SNAPSHOT:
            return self.books.snapshot(rest_snapshot(msg), ts_recv, update_id, out)
        if kind == "pong":
            return Control("pong")
        if kind == "welcome":
            return Control("welcome", extra={"id": msg.get("id")})
        if kind == "ack":
            req_id = msg.get("id")
            channel = channel_of_request_id(req_id)
            out["events"].append(event(EXCHANGE, ts_recv, "subscribed", channel=channel,
                                       detail=detail(id=req_id)))
            return Control("subscribed", channel=channel, extra={"id": req_id})
        if kind == "error":
            return self._error(msg, ts_recv, out)
        if kind is None and "code" in msg:
            return None  # a REST answer kept in raw when the connection was prepared
        return self._unknown(msg, ts_recv, out, None)

    def _error(self, msg: dict, ts_recv: int, out: dict[str, list[tuple]]) -> Control:
        code = msg.get("code")
        text = msg.get("data")
        if text is not None and text.__class__ is not str:
            text = msgspec.json.encode(text).decode()[:300]
        req_id = msg.get("id")
        channel = channel_of_request_id(req_id)
        symbol = None
        symbols: list[str] = []
        found = _NOT_FOUND.search(text or "")
        topic = found.group(1) if found else None
        if topic is not None:
            channel, symbols = topic_parts(topic)
            symbol = symbols[0] if len(symbols) == 1 else None
        code_text = str(code)
        subscribe = topic is not None or code_text == "509" or channel is not None
        kind = "subscribe_error" if subscribe else "error"
        out["events"].append(event(
            EXCHANGE, ts_recv, kind, symbol=symbol, channel=channel,
            detail=detail(code=code, error=text, id=req_id, topic=topic,
                          symbols=symbols if len(symbols) > 1 else None)))
        return Control(kind, value=text, channel=channel, symbol=symbol,
                       extra={"id": req_id, "code": code})

    def _unknown(self, msg: dict, ts_recv: int, out: dict[str, list[tuple]],
                 channel: str | None) -> None:
        frame = msgspec.json.encode(msg).decode()
        out["events"].append(event(EXCHANGE, ts_recv, "unknown_event", channel=channel,
                                   detail=detail(frame=frame[:500])))
        return None
