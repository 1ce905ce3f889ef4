"""Own fills from Kraken's REST history (``POST /0/private/TradesHistory``), for the
reconciliation of the private stream (recorder/exchanges/reconcile.py has the when and the
span; this module the how).

TradesHistory lists an account's trades newest first, 50 per call, with ``start``
(exclusive) and ``end`` (inclusive) unix times and ``ofs`` to page; ``count`` is how many
match in all. A span is read in chronological windows of a day, each paged completely with
``end`` fixed (so new trades cannot shift the pages). Each call costs 2 on Kraken's per-key
counter (15 at most, decaying 0.33 a second for a Starter account, the slowest tier): the
calls are paced to stay under it, and a refusal for the rate limit fails the reconciliation,
which is retried with backoff.

An item ``{TXID: {"ordertxid", "pair", "time", "type", "ordertype", "price", "cost",
"fee", "vol", "trade_id", "maker", ...}}`` becomes the ``fills`` row the WebSocket would
have given: with ``api = "v2"`` trade_id is Kraken's ``trade_id`` and exec_id the TXID
(``executions``' ``exec_id``); with ``api = "v1"`` trade_id is the TXID (``ownTrades``'
key). The fee is in the quote currency; ``maker`` gives the liquidity. ``pair`` is the REST
pair id (``XXBTZUSD``): the bundled and cached pair lists name it, else AssetPairs is asked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from recorder.exchanges.kraken.common import EXCHANGE, canonical, epoch_us
from recorder.exchanges.kraken.private import PrivateState, fill_key, fill_row
from recorder.exchanges.kraken.rest import KrakenError, PrivateClient, public_get
from recorder.exchanges.reconcile import REST, Chunk

log = logging.getLogger("recorder.private")

METHOD = "TradesHistory"
SOURCE = f"POST /0/private/{METHOD}"
PAGE = 50  # Kraken's page size
WINDOW_US = 86_400 * 1_000_000
# Kraken's private call counter for a Starter account: at most 15, minus 0.33 a second.
COUNTER_MAX = 15.0
COUNTER_DECAY = 0.33
CALL_COST = 2.0  # ledger and trade history calls
_LIQUIDITY = {True: "maker", False: "taker"}


class CallCounter:
    """Kraken's per-key call counter, mirrored on this side: a call waits until its cost
    fits under the maximum. Shared by the threads of one process."""

    def __init__(self, maximum: float = COUNTER_MAX, decay: float = COUNTER_DECAY,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.maximum, self.decay = maximum, decay
        self._clock, self._sleep = clock, sleep
        self._level = 0.0
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, cost: float) -> float:
        """Wait until ``cost`` fits; return the seconds waited."""
        with self._lock:
            now = self._clock()
            level = max(0.0, self._level - (now - self._at) * self.decay)
            wait = max(0.0, (level + cost - self.maximum) / self.decay)
            if wait:
                self._sleep(wait)
                now = self._clock()
                level = max(0.0, self._level - (now - self._at) * self.decay)
            self._level, self._at = level + cost, now
            return wait


class TradesHistory:
    """Reads TradesHistory for a Reconciler and turns its items into ``fills`` rows."""

    def __init__(self, client: PrivateClient, state: PrivateState, api: str, rest_url: str,
                 counter: CallCounter | None = None) -> None:
        self.client = client
        self.state = state
        self.api = api
        self.rest_url = rest_url
        self.counter = counter or CallCounter()
        self._pairs: dict[str, str] = {}  # REST pair id -> canonical symbol

    # -- on the worker thread ---------------------------------------------------------------

    def fetch(self, since_us: int, until_us: int) -> Iterator[Chunk]:
        start = since_us
        while True:
            end = min(until_us, start + WINDOW_US)
            items, pages = self._window(start, end)
            yield Chunk(items, end, pages)
            if end >= until_us:
                return
            start = end

    def _window(self, since_us: int, until_us: int) -> tuple[list[tuple], int]:
        # Whole seconds, widened: start is exclusive, end inclusive.
        fields = {"start": str(since_us // 1_000_000 - 1),
                  "end": str(-(-until_us // 1_000_000))}
        items: list[tuple] = []
        ofs = pages = 0
        while True:
            self.counter.take(CALL_COST)
            result = self.client.call(METHOD, {**fields, "ofs": str(ofs)}, exact=True)
            pages += 1
            trades = result.get("trades") if isinstance(result, dict) else None
            if not isinstance(trades, dict):
                raise KrakenError(f"{SOURCE}: the answer has no trades")
            for txid, t in trades.items():
                items.append((txid, t, self._symbol(t.get("pair"))))
            ofs += len(trades)
            try:
                count = int(result.get("count") or 0)
            except (TypeError, ValueError):
                count = 0
            if not trades or ofs >= count:
                return items, pages

    def _symbol(self, pair: Any) -> str:
        if not isinstance(pair, str) or not pair:
            raise KrakenError(f"{SOURCE}: a trade without a pair")
        known = self._pairs.get(pair)
        if known is None:
            known = self._pairs[pair] = self._lookup(pair)
        return known

    def _lookup(self, pair: str) -> str:
        from recorder.exchanges.kraken.pair_list import cached_pairs
        from recorder.exchanges.kraken.pairs import PAIRS

        for p in (*PAIRS.values(), *cached_pairs().values()):
            if pair in (p.rest_id, p.altname, p.wsname, p.symbol):
                return p.symbol
        # A pair listed since the bundled table and the cache: ask Kraken (public).
        doc = public_get(self.rest_url, f"/0/public/AssetPairs?pair={pair}")
        result = doc.get("result") if isinstance(doc, dict) else None
        if isinstance(result, dict):
            for rest_id, info in result.items():
                wsname = info.get("wsname") if isinstance(info, dict) else None
                if wsname and pair in (rest_id, info.get("altname")):
                    return canonical(wsname)
        raise KrakenError(f"{SOURCE}: unknown pair {pair!r} (not in AssetPairs)")

    # -- on the receive loop ------------------------------------------------------------------

    def record(self, items: list[tuple], ts_recv: int,
               rows: dict[str, list[tuple]]) -> tuple[int, int]:
        """Rows for the items not recorded yet; (new, already recorded)."""
        new = 0
        v2 = self.api != "v1"
        out = rows["fills"]
        # Oldest first, as they happened.
        for txid, t, symbol in sorted(items, key=lambda i: _time_key(i[1])):
            order_id = t.get("ordertxid")
            trade_id = _text(t.get("trade_id")) if v2 else txid
            if order_id:
                self.state.learn_order(order_id, symbol, t.get("type"), t.get("ordertype"))
            if not self.state.is_new_fill(fill_key(symbol, trade_id, order_id), REST):
                continue
            new += 1
            maker = t.get("maker")
            out.append(fill_row(
                exchange=EXCHANGE, symbol=symbol, ts_exchange=epoch_us(_text(t.get("time"))),
                ts_recv=ts_recv, order_id=order_id, trade_id=trade_id,
                exec_id=txid if v2 else None, side=t.get("type"), price=_text(t.get("price")),
                qty=_text(t.get("vol")), cost=_text(t.get("cost")), fee=_text(t.get("fee")),
                fee_currency=symbol.split("/")[1],
                liquidity=_LIQUIDITY.get(maker) if isinstance(maker, bool) else None,
                ord_type=t.get("ordertype"), is_snapshot=False))
        return new, len(items) - new


def _text(v: Any) -> str | None:
    return v if v is None or type(v) is str else str(v)


def _time_key(t: dict) -> int:
    try:
        return epoch_us(_text(t.get("time"))) or 0
    except (TypeError, ValueError):
        return 0
