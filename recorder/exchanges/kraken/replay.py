"""Parsing recorded Kraken frames again (``recorder renormalize``): one session per recorded
connection, its state learnt from the frames themselves (v2 acknowledgements say which
ticker streams are bbo and which depth each book has)."""

from __future__ import annotations

from typing import Any

from recorder.exchanges.base import ReplaySession
from recorder.exchanges.kraken import v1, v2
from recorder.exchanges.kraken.book_rule import RULE


class _V2State:
    def __init__(self) -> None:
        self.bbo: set[str] = set()
        self.depths: dict[str, int] = {}

    def parse(self, msg: Any, ts: int, update_id: int, out: dict[str, list[tuple]]) -> Any:
        if msg.__class__ is dict and msg.get("method") == "subscribe" and msg.get("success"):
            result = msg.get("result") or {}
            sym = result.get("symbol")
            if result.get("channel") == "ticker" and result.get("event_trigger") == "bbo":
                self.bbo.add(sym)
            if result.get("channel") == "book" and result.get("depth"):
                self.depths[sym] = result["depth"]
        return v2.parse(msg, ts, update_id, out, bbo_symbols=frozenset(self.bbo),
                        book_depths=self.depths)


def replay_session(endpoint: str) -> ReplaySession:
    if "/v2" in endpoint:
        return ReplaySession(v2.decode, _V2State().parse, RULE)
    return ReplaySession(v1.decode, v1.parse, RULE)
