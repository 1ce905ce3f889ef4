"""Parsing recorded KuCoin frames again (``recorder renormalize``): one session per recorded
connection, with a fresh level2 state, fed the connection's raw rows in their recorded
order (REST snapshot frames included, which is how its books are rebuilt exactly)."""

from __future__ import annotations

from recorder.exchanges.base import ReplaySession
from recorder.exchanges.kucoin.book_rule import RULE
from recorder.exchanges.kucoin.parse import Parser, decode


def replay_session(endpoint: str) -> ReplaySession:
    """A session for a connection recorded from ``endpoint`` (any KuCoin endpoint: the
    classic protocol has a single form)."""
    return ReplaySession(decode, Parser().parse, RULE)
