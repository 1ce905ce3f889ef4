"""The KuCoin public feed: what the capture runtime needs to record a config's public
subscriptions.

Per (re)connect, ``prepare`` asks ``POST /api/v1/bullet-public`` for a fresh token (KuCoin
refuses a reused one after 24 h, so none is ever kept), picks one of the instance servers
at random (as KuCoin's SDK does), and builds the URL ``endpoint?token=..&connectId=..``.
Nothing may be sent before KuCoin's welcome (``ready_kind``); then the subscribe messages
go out, at most 100 symbols each (one topic per symbol for candles and market snapshots,
which take a single symbol), no faster than KuCoin's 100 client messages per 10 s allow.
Application pings follow the bullet's ``pingInterval`` and its ``pingTimeout`` is the pong
deadline.

Each prepared connection gets its own parser (``ConnectPlan.parse``): its level2 books are
synced per connection, so a reconnect or a make-before-break rotation starts from fresh
snapshots. Level2 snapshots come from REST on the runtime's worker thread
(``fetch_snapshot``): the signed full-depth v3 book when the config has credentials, else
the public top-100 one.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import msgspec

from recorder.core.schema import column_index
from recorder.exchanges.base import ConnectPlan, Control, Feed, Subscription
from recorder.exchanges.kucoin import credentials as creds_mod
from recorder.exchanges.kucoin.book_rule import RULE
from recorder.exchanges.kucoin.common import (
    DEFAULT_REST_URL,
    EXCHANGE,
    INTERVAL_TYPES,
    MAX_MESSAGES_PER_SECOND,
    MAX_TOPICS_PER_MESSAGE,
    wire,
)
from recorder.exchanges.kucoin.history import candle_history, trade_history
from recorder.exchanges.kucoin.parse import Parser, decode, snapshot_frame
from recorder.exchanges.kucoin.rest import BULLET_PUBLIC, PUBLIC_BOOK_DEPTH, KucoinRest

_TRADE_SYMBOL = column_index("trades", "symbol")
_TRADE_ID = column_index("trades", "trade_id")

# KuCoin's refusals that say "not now" rather than "never": its 509 limits ("exceed max
# permits per second", "exceed max subscription count ...") and rate limits.
_REFUSED_FOR_NOW = ("exceed max", "too many", "rate limit", "try again")


def refused_for_now(why: str | None) -> bool:
    """A subscription refused by a limit: a reconnect after the backoff may succeed."""
    text = (why or "").lower()
    return any(t in text for t in _REFUSED_FOR_NOW)


def session_invalid(why: str | None) -> bool:
    """KuCoin refused the connection's token ("token is expired"): reconnect with a new one."""
    text = (why or "").lower()
    return "token" in text and ("expired" in text or "invalid" in text)


def ping_request(n: int) -> str:
    return f'{{"id":"{int(n)}","type":"ping"}}'


def topics(sub: Subscription) -> list[str]:
    """The topics of one subscription: comma lists of up to 100 symbols where KuCoin takes
    a list, one topic per symbol for candles and market snapshots."""
    names = [wire(s) for s in sub.symbols]
    if sub.channel == "ohlc":
        kind = INTERVAL_TYPES[sub.interval or 1]
        return [f"/market/candles:{n}_{kind}" for n in names]
    if sub.channel == "ticker":
        return [f"/market/snapshot:{n}" for n in names]
    if sub.channel == "trade":
        prefix = "/market/match"
    elif sub.channel == "spread":
        prefix = "/market/ticker"
    elif sub.channel == "book":
        prefix = {None: "/market/level2", 5: "/spotMarket/level2Depth5",
                  50: "/spotMarket/level2Depth50"}[sub.depth]
    else:
        raise ValueError(f"not a public KuCoin channel: {sub.channel}")
    step = MAX_TOPICS_PER_MESSAGE
    return [f"{prefix}:{','.join(names[i:i + step])}" for i in range(0, len(names), step)]


def subscribe_requests(subs: Sequence[Subscription], first_id: int = 1) -> list[str]:
    """One subscribe message per topic. Ids are "<n>.<channel>": KuCoin echoes the id in
    its ack and in an error, which then names the channel even in a replay."""
    out: list[str] = []
    n = first_id
    for sub in subs:
        for topic in topics(sub):
            out.append(msgspec.json.encode({
                "id": f"{n}.{sub.channel}", "type": "subscribe", "topic": topic,
                "privateChannel": False, "response": True}).decode())
            n += 1
    return out


class PublicFeed:
    """The state behind one config's public Feed: REST client, requests, parsers."""

    def __init__(self, config: Any, url: str | None,
                 subscriptions: Sequence[Subscription]) -> None:
        self.config = config
        self.rest_url = (getattr(config, "rest_url", None) or DEFAULT_REST_URL).rstrip("/")
        self.url_override = url or getattr(config, "url", None) or None
        self.subscriptions = list(subscriptions)
        self.requests = subscribe_requests(self.subscriptions)
        self.full_depth = creds_mod.configured(config)
        self._public = KucoinRest(self.rest_url)
        self._signed: KucoinRest | None = None
        self._lock = threading.Lock()
        # The parser of the connection prepared last (for a runtime that calls Feed.parse).
        self.parser = Parser()

    # -- connecting ---------------------------------------------------------------------

    def prepare(self) -> ConnectPlan:
        """A fresh bullet token and a fresh parser for this connection."""
        parser = Parser()
        data, redacted = self._public.bullet_public()
        server = random.choice(data["instanceServers"])
        endpoint = self.url_override or server["endpoint"]
        connect_id = f"{time.time_ns()}{random.randrange(1 << 16):04x}"
        query = urlencode({"token": data["token"], "connectId": connect_id})
        url = f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
        ping = server.get("pingInterval")
        pong = server.get("pingTimeout")
        plan = ConnectPlan(url, list(self.requests), ready_kind="welcome",
                           ping_interval=ping / 1000 if ping else None,
                           pong_timeout=pong / 1000 if pong else None,
                           max_messages_per_second=MAX_MESSAGES_PER_SECOND,
                           acks_expected=len(self.requests),
                           raw_records=[(f"POST {BULLET_PUBLIC}", redacted)],
                           parse=parser.parse)
        self.parser = parser
        return plan

    def parse(self, msg: Any, ts_recv: int, update_id: int,
              out: dict[str, list[tuple]]) -> Control | None:
        return self.parser.parse(msg, ts_recv, update_id, out)

    # -- snapshots ----------------------------------------------------------------------

    def fetch_snapshot(self, symbol: str, depth: int | None = None) -> tuple[str, str]:
        """(endpoint, frame text) of a level2 snapshot of ``symbol``: full depth (signed)
        when the config has credentials, else the public top 100 levels a side.
        ``depth`` is the runtime's idea of the book's depth; a level2 book has none."""
        name = wire(symbol)
        if self.full_depth:
            endpoint, data = self._signed_client().book_snapshot(name, full=True)
            return endpoint, snapshot_frame(name, endpoint, None, data)
        endpoint, data = self._public.book_snapshot(name, full=False)
        return endpoint, snapshot_frame(name, endpoint, PUBLIC_BOOK_DEPTH, data)

    def _signed_client(self) -> KucoinRest:
        with self._lock:
            if self._signed is None:
                self._signed = KucoinRest(self.rest_url, creds_mod.load(self.config))
            return self._signed


def _config_subscriptions(config: Any) -> list[Subscription]:
    subs = getattr(config, "public_subscriptions", None)
    if subs is None:
        subs = [s for s in getattr(config, "subscriptions", ()) if s.channel != "fills"]
    return [Subscription(s.channel, tuple(s.symbols), s.depth, s.interval) for s in subs]


def _trade_key(row: tuple) -> tuple:
    return row[_TRADE_SYMBOL], row[_TRADE_ID]


def public_feed(config: Any, url: str | None = None,
                subscriptions: Sequence[Subscription] | None = None) -> Feed:
    """The public feed of ``config`` (its subscriptions, or the ``subscriptions`` given).

    ``url`` (or the config's ``url``) replaces the WebSocket endpoint the bullet names; the
    token is still added to it."""
    subs = list(subscriptions) if subscriptions is not None else _config_subscriptions(config)
    state = PublicFeed(config, url, subs)
    depths = {sym: s.depth for s in subs if s.channel == "book" and s.depth
              for sym in s.symbols}
    label = state.url_override or f"{state.rest_url}{BULLET_PUBLIC}"
    feed = Feed(exchange=EXCHANGE, url=label, decode=decode, parse=state.parse,
                prepare=state.prepare, ping=ping_request, book_rule=RULE,
                book_resync=None, fetch_snapshot=state.fetch_snapshot, book_depths=depths,
                refused_for_now=refused_for_now, session_invalid=session_invalid,
                dedupe_keys={"trades": _trade_key})
    feed.trade_symbols = tuple(sym for s in subs if s.channel == "trade" for sym in s.symbols)
    feed.candle_lanes = tuple((sym, s.interval or 1) for s in subs if s.channel == "ohlc"
                              for sym in s.symbols)
    if getattr(config, "backfill", False):  # gaps repaired from the REST history
        feed.trade_history = trade_history(state.rest_url)
        feed.candle_history = candle_history(state.rest_url)
    return feed
