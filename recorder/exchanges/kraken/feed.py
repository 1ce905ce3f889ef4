"""The Kraken public feed: what the capture runtime needs to record a config's public
subscriptions over WebSocket API v1 or v2."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recorder.exchanges.base import ConnectPlan, Feed, Subscription
from recorder.exchanges.kraken import v1, v2
from recorder.exchanges.kraken.book_rule import RULE
from recorder.exchanges.kraken.common import EXCHANGE
from recorder.exchanges.kraken.history import candle_history, trade_history

# Kraken's refusals that say "not now" rather than "never" (a pair it does not list, a depth
# it does not support): its WS rate limit and a busy or unavailable engine.
_REFUSED_FOR_NOW = ("Exceeded msg rate", "EService:Unavailable", "EService:Busy",
                    "EGeneral:Temporary lockout", "Rate limit exceeded")


def refused_for_now(why: str | None) -> bool:
    return bool(why) and any(text in why for text in _REFUSED_FOR_NOW)


def session_invalid(why: str | None) -> bool:
    """Kraken refused the private token ("ESession:Invalid session")."""
    return bool(why) and "Invalid session" in why


def public_feed(config: Any, url: str | None = None,
                subscriptions: Sequence[Subscription] | None = None,
                reqid_base: int = 1) -> Feed:
    """The public feed of ``config`` (its subscriptions, or the ``subscriptions`` given)."""
    mod = v1 if config.api == "v1" else v2
    if subscriptions is None:
        subscriptions = [Subscription(s.channel, s.symbols, s.depth, s.interval)
                         for s in config.public_subscriptions]
    subs = list(subscriptions)
    requests: list[str] = []
    for i, sub in enumerate(subs):
        requests.extend(mod.subscribe_requests(sub, reqid_base + i))
    # Kraken acknowledges each symbol of a subscribe request on its own.
    acks = sum(len(s.symbols) for s in subs)
    depths = {sym: s.depth or 10 for s in subs if s.channel == "book" for sym in s.symbols}
    if mod is v2:
        bbo = frozenset(sym for s in subs if s.channel == "spread" for sym in s.symbols)
        channels = {reqid_base + i: sub.channel for i, sub in enumerate(subs)}
        parse = v2.parser(bbo, depths, channels)
    else:
        parse = v1.parse
    endpoint = url or config.url

    def prepare() -> ConnectPlan:
        return ConnectPlan(endpoint, list(requests), acks_expected=acks)

    feed = Feed(EXCHANGE, endpoint, mod.decode, parse, prepare, mod.ping_request, RULE,
                book_resync=mod.book_resync_requests, book_depths=depths,
                refused_for_now=refused_for_now, session_invalid=session_invalid)
    feed.trade_symbols = tuple(sym for s in subs if s.channel == "trade" for sym in s.symbols)
    feed.candle_lanes = tuple((sym, s.interval or 1) for s in subs if s.channel == "ohlc"
                              for sym in s.symbols)
    if getattr(config, "backfill", False):  # gaps repaired from the REST history
        feed.trade_history = trade_history(config.rest_url, config.api)
        feed.candle_history = candle_history(config.rest_url)
    return feed
