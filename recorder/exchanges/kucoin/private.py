"""The KuCoin private feed: own fills and order changes from ``/spotMarket/tradeOrdersV2``.

Per (re)connect, ``prepare`` asks ``POST /api/v1/bullet-private`` (signed) for a fresh
token (a token serves one connection; none is ever kept), connects to the server the answer
names (or ``[exchange] auth_url``), waits for the welcome and subscribes the topic with
``"privateChannel": true``. Pings follow the bullet's cadence as on public connections.

Rows (``orderChange`` pushes; ``ts`` is the matching engine's time in ns, truncated to µs):

- every push -> ``orders``: symbol, ts_exchange = ``ts``, order_id = ``orderId``, status =
  ``status`` (new, open, match, done), side, ord_type = ``orderType``, limit_price =
  ``price`` (limit orders), order_qty = ``size`` (``originSize`` on ``received``),
  filled_qty = ``filledSize``, exec_type = ``type`` (received, open, match, update,
  filled, canceled), detail = every other field;
- a ``match`` push also -> ``fills``: trade_id = ``tradeId``, price = ``matchPrice``, qty =
  ``matchSize`` (the match's own, not the order's), side, liquidity, ord_type, ts_exchange =
  ``ts``, cost = matchPrice x matchSize (exact). KuCoin's push has no fee amount: fee and
  fee_currency stay NULL on fills recorded live; fills recovered from the REST history have
  them (recorder/exchanges/kucoin/reconcile.py).

KuCoin sends no snapshot on subscribe and no sequence numbers on this topic: what happens
while the connection is down, or between a bullet and the subscription's acknowledgement,
only the REST history has. So after every acknowledgement, and every 15 minutes, the fills
since the last reconciliation are read from it on a worker thread (``Feed.poll``; see
recorder/exchanges/reconcile.py), de-duplicated against what is recorded by (symbol,
trade id, order id).

Credentials are judged by the bullet request: KuCoin's 400003 (key), 400004 (passphrase),
400005 (signature), 400006 (IP), 400007 (permission) are CredentialErrors naming the
variable or file to fix (recorder/exchanges/kucoin/rest.py), never a value.
"""

from __future__ import annotations

import logging
import random
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec

from recorder.core.events import detail, event, new_rows
from recorder.core.schema import column_index, make_row
from recorder.core.secrets import CredentialError
from recorder.exchanges.base import ConnectPlan, Control, Feed
from recorder.exchanges.kucoin import credentials as creds_mod
from recorder.exchanges.kucoin.book_rule import RULE
from recorder.exchanges.kucoin.common import (
    DEFAULT_REST_URL,
    EXCHANGE,
    MAX_MESSAGES_PER_SECOND,
    canonical,
)
from recorder.exchanges.kucoin.feed import ping_request, refused_for_now, session_invalid
from recorder.exchanges.kucoin.parse import Parser, decode
from recorder.exchanges.kucoin.reconcile import SOURCE, KucoinFills
from recorder.exchanges.kucoin.rest import BULLET_PRIVATE, KucoinError, KucoinRest
from recorder.exchanges.reconcile import FillLedger, Reconciler, recorded_history

log = logging.getLogger("recorder.private")

TOPIC = "/spotMarket/tradeOrdersV2"
REQUEST_ID = "1.fills"
# The cost column's scale (recorder/core/schema.py: wide = decimal(28, 10)).
_COST_DECIMALS = 10
# Order fields that have a column; every other one goes to ``detail``.
_ORDER_COLUMNS = frozenset({"symbol", "ts", "orderId", "status", "side", "orderType", "price",
                            "size", "filledSize", "type"})
_SYMBOL, _TRADE_ID, _ORDER_ID = (column_index("fills", c)
                                 for c in ("symbol", "trade_id", "order_id"))


def subscribe_request() -> str:
    return msgspec.json.encode({"id": REQUEST_ID, "type": "subscribe", "topic": TOPIC,
                                "privateChannel": True, "response": True}).decode()


def _text(v: Any) -> str:
    """Exact number text (strings as sent, JSON ints as their digits), else malformed."""
    if v.__class__ is str:
        float(v)  # ValueError for "abc"
        return v
    if v.__class__ is int:
        return str(v)
    raise TypeError(f"expected a number, got {type(v).__name__}")


def _opt(v: Any) -> str | None:
    return None if v is None or v == "" else _text(v)


def _str(v: Any, name: str) -> str:
    if v.__class__ is not str or not v:
        raise TypeError(f"{name} is not text")
    return v


def _ns_to_us(v: Any) -> int:
    if v.__class__ is str:
        v = int(v)
    if v.__class__ is not int:
        raise TypeError("ts is not an integer")
    return v // 1000


def cost(price: str, qty: str) -> str | None:
    """price x qty, exactly, or None if it has more decimals than the column keeps."""
    try:
        value = Decimal(price) * Decimal(qty)
    except InvalidOperation:
        return None
    exp = value.normalize().as_tuple().exponent
    if isinstance(exp, int) and -exp > _COST_DECIMALS:
        return None
    return format(value.normalize(), "f")


def fill_row(data: dict, ts_recv: int) -> tuple:
    """The ``fills`` row of one ``match`` push's data (raises on a malformed one)."""
    price, qty = _text(data["matchPrice"]), _text(data["matchSize"])
    trade_id = data["tradeId"]
    trade_id = str(trade_id) if trade_id.__class__ is int else _str(trade_id, "tradeId")
    return make_row(
        "fills", exchange=EXCHANGE, symbol=canonical(_str(data["symbol"], "symbol")),
        ts_exchange=_ns_to_us(data["ts"]), ts_recv=ts_recv,
        order_id=_str(data["orderId"], "orderId"), trade_id=trade_id,
        side=_str(data["side"], "side"), price=price, qty=qty, cost=cost(price, qty),
        liquidity=data.get("liquidity"), ord_type=data.get("orderType"), is_snapshot=False)


def order_row(data: dict, ts_recv: int) -> tuple:
    """The ``orders`` row of one ``orderChange`` push's data."""
    kind = data.get("orderType")
    size = data.get("size")
    extra = {k: v for k, v in data.items() if k not in _ORDER_COLUMNS}
    if size is None:
        size = extra.pop("originSize", None)
    return make_row(
        "orders", exchange=EXCHANGE, symbol=canonical(_str(data["symbol"], "symbol")),
        ts_exchange=_ns_to_us(data["ts"]), ts_recv=ts_recv,
        order_id=_str(data["orderId"], "orderId"), status=data.get("status"),
        side=data.get("side"), ord_type=kind,
        limit_price=_opt(data.get("price")) if kind == "limit" else None,
        order_qty=_opt(size), filled_qty=_opt(data.get("filledSize")),
        exec_type=data.get("type"), is_snapshot=False, detail=detail(**extra))


class PrivateFeed:
    """The state behind the private Feed: REST client, recorded fills, reconciliation."""

    def __init__(self, config: Any, data_root: Path, *, check: bool = True) -> None:
        self.config = config
        self.data_root = Path(data_root)
        self.rest_url = (getattr(config, "rest_url", None) or DEFAULT_REST_URL).rstrip("/")
        self.url_override = getattr(config, "auth_url", None) or None
        self.rest = KucoinRest(self.rest_url, creds_mod.load(config))
        self.ledger = FillLedger()
        self.seeded = False
        self.conn = 0
        # Symbols whose HF history is read: the config's and every one a fill was recorded
        # or received for. Replaced, never changed in place: the worker thread reads it.
        self.known_symbols: frozenset[str] = frozenset(
            s for sub in getattr(config, "public_subscriptions", ()) or ()
            for s in getattr(sub, "symbols", ()))
        self.history = KucoinFills(self.rest, self.ledger, lambda: set(self.known_symbols))
        # No sequence numbers on the private topic: the periodic reconciliation reads its
        # whole interval again (cheap: weight 2 a page of 100).
        self.reconciler = Reconciler(EXCHANGE, SOURCE, self.history.fetch, self._record,
                                     rereads=True)
        if check:
            check_bullet(self.rest)

    def learn_symbols(self, symbols: set[str]) -> None:
        if not symbols <= self.known_symbols:
            self.known_symbols = self.known_symbols | symbols

    def _record(self, items: list[dict], ts_recv: int,
                rows: dict[str, list[tuple]]) -> tuple[int, int]:
        found = self.history.record(items, ts_recv, rows)
        self.learn_symbols({canonical(i["symbol"]) for i in items})
        return found

    # -- connecting ---------------------------------------------------------------------

    def prepare(self) -> ConnectPlan:
        rows = new_rows()
        if not self.seeded:
            self._seed(rows)
        data, redacted = self.rest.bullet_private()
        server = random.choice(data["instanceServers"])
        endpoint = self.url_override or server["endpoint"]
        connect_id = f"{time.time_ns()}{random.randrange(1 << 16):04x}"
        query = urlencode({"token": data["token"], "connectId": connect_id})
        url = f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
        ping, pong = server.get("pingInterval"), server.get("pingTimeout")
        self.conn += 1
        self.reconciler.connecting()
        return ConnectPlan(url, [subscribe_request()], ready_kind="welcome",
                           ping_interval=ping / 1000 if ping else None,
                           pong_timeout=pong / 1000 if pong else None,
                           max_messages_per_second=MAX_MESSAGES_PER_SECOND, acks_expected=1,
                           raw_records=[(f"POST {BULLET_PRIVATE}", redacted)],
                           rows={k: v for k, v in rows.items() if v},
                           parse=ConnParser(self, self.conn).parse)

    def _seed(self, rows: dict[str, list[tuple]]) -> None:
        ts = time.time_ns() // 1000
        try:
            history = recorded_history(self.data_root, EXCHANGE, self.ledger.remember)
        except Exception as e:  # noqa: BLE001 - unreadable history must not stop recording
            log.warning("cannot read the fills recorded under %s (%s): reconciled fills may "
                        "be recorded twice", self.data_root, e)
            rows["events"].append(event(EXCHANGE, ts, "fills_seed_failed", channel="fills",
                                        detail=detail(error=str(e)[:300])))
        else:
            self.ledger.seed(history.keys)
            self.learn_symbols({k[0] for k in history.keys if k[0]})
            self.reconciler.restore(history)
            rows["events"].append(event(EXCHANGE, ts, "fills_seeded", channel="fills",
                                        detail=detail(recorded=len(history.keys))))
        self.seeded = True

    def poll(self, rows: dict[str, list[tuple]], stopping: bool) -> None:
        self.reconciler.poll(rows, stopping)


class ConnParser:
    """One connection's frames -> rows (``conn``: its number, for de-duplication)."""

    def __init__(self, feed: PrivateFeed, conn: int) -> None:
        self.feed = feed
        self.conn = conn
        self.control = Parser()  # welcome, pong, errors: as on public connections

    def parse(self, msg: Any, ts_recv: int, update_id: int,
              out: dict[str, list[tuple]]) -> Control | None:
        if msg.__class__ is not dict:
            raise TypeError("a KuCoin frame is a JSON object")
        kind = msg.get("type")
        if kind == "message" and msg.get("topic") == TOPIC:
            data = msg["data"]
            if data.__class__ is not dict:
                raise TypeError("data is not an object")
            # Both rows are built before either is kept: a malformed push changes nothing.
            order = order_row(data, ts_recv)
            fill = fill_row(data, ts_recv) if data.get("type") == "match" else None
            out["orders"].append(order)
            if fill is not None:
                feed = self.feed
                symbol = fill[_SYMBOL]
                if feed.ledger.is_new((symbol, fill[_TRADE_ID], fill[_ORDER_ID]), self.conn):
                    out["fills"].append(fill)
                    feed.learn_symbols({symbol})
                else:
                    out["events"].append(event(
                        EXCHANGE, ts_recv, "duplicate_fill", symbol=symbol, channel="fills",
                        detail=detail(trade_id=fill[_TRADE_ID], order_id=fill[_ORDER_ID])))
            return None
        if kind == "ack" and msg.get("id") == REQUEST_ID:
            out["events"].append(event(EXCHANGE, ts_recv, "subscribed", channel="fills",
                                       detail=detail(id=REQUEST_ID, topic=TOPIC)))
            self.feed.reconciler.subscribed()
            return Control("subscribed", channel="fills", extra={"id": REQUEST_ID})
        control = self.control.parse(msg, ts_recv, update_id, out)
        if control is not None and control.kind in ("subscribe_error", "error") and (
                control.extra.get("id") == REQUEST_ID):
            control.channel = "fills"
        return control


def check_bullet(rest: KucoinRest) -> None:
    """Judge the credentials by a private bullet: CredentialError if KuCoin refuses them
    (the message names what to fix); only a warning if KuCoin cannot be asked now."""
    try:
        rest.bullet_private()
    except CredentialError:
        raise
    except KucoinError as e:
        log.warning("%s; the private connection will retry", e)


def private_feed(config: Any, data_root: Path) -> Feed:
    """The collector's feed for the config's ``fills`` channel. Raises CredentialError when
    the credentials are missing, unreadable or refused by KuCoin at start-up."""
    state = PrivateFeed(config, data_root)
    return Feed(exchange=EXCHANGE, url=state.url_override or f"{state.rest_url}{BULLET_PRIVATE}",
                decode=decode, parse=ConnParser(state, 0).parse, prepare=state.prepare,
                ping=ping_request, book_rule=RULE, refused_for_now=refused_for_now,
                session_invalid=session_invalid, poll=state.poll)
