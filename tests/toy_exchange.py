"""A toy exchange, defined only here: its spec, its parser, its book rule and a tiny server.

It proves the seam: the real runtime (supervisor, collector, sink, commands) records it end
to end with no edit to any of them. The recorder finds it through the registry's plugin
variable: ``RECORDER_EXCHANGES=toy=tests.toy_exchange``.

Protocol (made up, but shaped like real ones): the server greets with ``{"type":"hello"}``
and ignores anything sent before it; the client subscribes with
``{"op":"sub","symbols":[...]}`` and gets one ``{"type":"ack"}`` per symbol; application
pings ``{"op":"ping"}`` are answered ``{"type":"pong"}``. Data: ``trade`` (id, price,
amount, side, time in ms), ``book`` with ``levels`` (the number of levels the book holds after
the message: the integrity rule checks it).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from typing import Any

import msgspec

from recorder.core.events import event
from recorder.core.schema import column_index, make_row
from recorder.exchanges.base import (
    ConnectPlan,
    Control,
    ExchangeSpec,
    Feed,
    ReplaySession,
    Subscription,
)

NAME = "toy"
_CHECKSUM = column_index("book", "checksum")
decode = msgspec.json.Decoder(float_hook=str).decode


class LevelCountRule:
    """The toy's integrity rule: the book holds as many levels as the message says."""

    failure_kind = "level_count_mismatch"
    price_bytes = qty_bytes = None

    def max_depth(self, first_row: tuple) -> int | None:
        return None

    def verify(self, book: Any, first_row: tuple) -> bool | None | dict:
        expected = first_row[_CHECKSUM]
        if expected is None:
            return None
        held = len(book.asks.keys) + len(book.bids.keys)
        return True if held == expected else {"expected": expected, "computed": held}


RULE = LevelCountRule()


def parse(msg: Any, ts_recv: int, update_id: int, out: dict) -> Control | None:
    kind = msg.get("type")
    if kind == "trade":
        out["trades"].append(make_row(
            "trades", exchange=NAME, symbol=msg["symbol"], ts_exchange=msg["t"] * 1000,
            ts_recv=ts_recv, price=msg["price"], qty=msg["amount"], side=msg["side"],
            trade_id=msg["id"], source="ws"))
        return None
    if kind == "book":
        for side, key in (("bid", "bids"), ("ask", "asks")):
            for price, qty in msg[key]:
                out["book"].append(make_row(
                    "book", exchange=NAME, symbol=msg["symbol"], ts_exchange=msg["t"] * 1000,
                    ts_recv=ts_recv, side=side, price=price, qty=qty,
                    is_snapshot=msg.get("snapshot", False), update_id=update_id,
                    checksum=msg["levels"], republish=False))
        return None
    if kind == "hello":
        return Control("welcome")
    if kind == "ack":
        out["events"].append(event(NAME, ts_recv, "subscribed", symbol=msg.get("symbol")))
        return Control("subscribed", symbol=msg.get("symbol"))
    if kind == "pong":
        return Control("pong")
    out["events"].append(event(NAME, ts_recv, "unknown_event", detail=json.dumps(msg)))
    return None


def public_feed(config: Any, url: str | None = None,
                subscriptions: Sequence[Subscription] | None = None) -> Feed:
    subs = list(subscriptions or ())
    symbols = sorted({s for sub in subs for s in sub.symbols})
    endpoint = url or config.url

    def prepare() -> ConnectPlan:
        return ConnectPlan(endpoint, [json.dumps({"op": "sub", "symbols": symbols})],
                           ready_kind="welcome", ping_interval=1.0, pong_timeout=5.0,
                           acks_expected=len(symbols))

    return Feed(NAME, endpoint, decode, parse, prepare, lambda n: '{"op":"ping"}', RULE)


SPEC = ExchangeSpec(
    name=NAME, apis=("v1",), public_channels=("trade", "book"), private_channels=(),
    book_depths=(), default_book_depth=None, ohlc_intervals=(1,),
    default_urls={"v1": ("ws://127.0.0.1:9/toy", "")}, default_rest_url="http://127.0.0.1:9",
    lookup_symbol=lambda name, rest: name if name.count("/") == 1 else None,
    unknown_symbol_hint=lambda: "toy symbols are BASE/QUOTE",
    public_feed=public_feed,
    replay_session=lambda endpoint: ReplaySession(decode, parse, RULE),
)


# -- the server ----------------------------------------------------------------------------

SCRIPT = [
    {"type": "book", "symbol": "AAA/ZZZ", "snapshot": True, "t": 1_700_000_000_000,
     "bids": [["10.50", "1.0"], ["10.00", "2.5"]], "asks": [["11.00", "3"]], "levels": 3},
    {"type": "trade", "symbol": "AAA/ZZZ", "id": "ab12", "price": "10.75", "amount": "0.125",
     "side": "buy", "t": 1_700_000_000_100},
    {"type": "book", "symbol": "AAA/ZZZ", "t": 1_700_000_000_200, "bids": [["10.50", "0"]],
     "asks": [["11.25", "1.75"]], "levels": 3},
    {"type": "trade", "symbol": "AAA/ZZZ", "id": "ab13", "price": "10.999999999",
     "amount": "42", "side": "sell", "t": 1_700_000_000_300},
    {"type": "book", "symbol": "AAA/ZZZ", "t": 1_700_000_000_400, "bids": [],
     "asks": [["11.00", "0"]], "levels": 2},
]


class ToyServer:
    """Serves SCRIPT to every subscriber, then stays open answering pings."""

    def __init__(self) -> None:
        self.url = ""
        self.connections = 0
        self.sent_before_hello: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ToyServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        import websockets

        self._stop = asyncio.Event()
        async with websockets.serve(self._client, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/toy"
            self._ready.set()
            await self._stop.wait()

    async def _client(self, ws: Any) -> None:
        self.connections += 1
        await asyncio.sleep(0.2)  # a slow greeting: nothing may be sent before it
        try:
            while True:
                early = await asyncio.wait_for(ws.recv(), 0.001)
                self.sent_before_hello.append(early)
        except TimeoutError:
            pass
        await ws.send(json.dumps({"type": "hello"}))
        async for text in ws:
            msg = json.loads(text)
            if msg.get("op") == "ping":
                await ws.send('{"type":"pong"}')
            elif msg.get("op") == "sub":
                for sym in msg["symbols"]:
                    await ws.send(json.dumps({"type": "ack", "symbol": sym}))
                for frame in SCRIPT:
                    await ws.send(json.dumps(frame))
