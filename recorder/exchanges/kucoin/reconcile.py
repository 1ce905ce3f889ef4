"""Own fills from KuCoin's REST history, for the reconciliation of the private stream
(recorder/exchanges/reconcile.py has the when and the span; this module the how).

Two endpoints, both signed, newest first (../shared/reference/kucoin-protocol.md 1.10):

- ``GET /api/v1/fills`` (classic spot history, weight 10): the whole account in one list,
  ``startAt``/``endAt`` in ms spanning one week at most, ``currentPage``/``pageSize`` (up to
  500) and ``totalPage``. Read week by week. KuCoin's newer spec marks ``symbol`` required:
  if KuCoin refuses the list without one (400100), it is read per symbol from then on; if
  the endpoint is gone (404000), only the HF history is read.
- ``GET /api/v1/hf/fills`` (the HF/Pro account's history, weight 2): one symbol at a time
  (``symbol`` is required), up to 100 items a page, older pages by ``lastId``. The symbols
  read are those of the config's subscriptions and every symbol a fill was recorded or
  received for.

An item becomes the row the WebSocket would have given (same symbol, trade id, order id,
side, price, size, liquidity and order type), plus what only REST has: ``funds`` as cost,
``fee`` and ``feeCurrency``. ``createdAt`` is in ms (the WebSocket's match time is in ns).
``tradeId`` is compared as text: an integer on the HF list, a string elsewhere.

Rate limits: at most ``CALLS_PER_SECOND`` calls; a 429000 answer is retried after 1, 2 and
4 s, then the reconciliation fails (an event) and is retried later with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from recorder.core.schema import make_row
from recorder.exchanges.kucoin.common import EXCHANGE, canonical, wire
from recorder.exchanges.kucoin.rest import KucoinError, KucoinRest, RateLimited, decode_exact
from recorder.exchanges.reconcile import REST, Chunk, FillLedger

log = logging.getLogger("recorder.private")

FILLS = "/api/v1/fills"
HF_FILLS = "/api/v1/hf/fills"
SOURCE = f"GET {HF_FILLS}, GET {FILLS}"
WEEK_MS = 7 * 86_400_000
PAGE_SIZE = 500  # /api/v1/fills: at most 500
HF_LIMIT = 100  # /api/v1/hf/fills: at most 100
CALLS_PER_SECOND = 5.0
RATE_LIMIT_RETRIES = (1.0, 2.0, 4.0)


class KucoinFills:
    """Reads both fills lists for a Reconciler and turns their items into ``fills`` rows."""

    def __init__(self, rest: KucoinRest, ledger: FillLedger, symbols: Callable[[], set[str]],
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rest = rest
        self.ledger = ledger
        self.symbols = symbols  # canonical symbols to read the HF history of
        self._sleep, self._clock = sleep, clock
        self._next_call = 0.0
        self._lock = threading.Lock()
        self.v1_per_symbol = False
        self.v1_gone = False

    # -- on the worker thread ---------------------------------------------------------------

    def fetch(self, since_us: int, until_us: int) -> Iterator[Chunk]:
        since_ms, until_ms = since_us // 1000, -(-until_us // 1000)
        start = since_ms
        while True:
            end = min(until_ms, start + WEEK_MS - 1)
            items: list[dict] = []
            pages = 0
            symbols = sorted(self.symbols())
            if not self.v1_gone:
                n, got = self._classic(start, end, symbols)
                pages += n
                items += got
            for symbol in symbols:
                n, got = self._hf(wire(symbol), start, end)
                pages += n
                items += got
            # A fill both lists hold counts once.
            unique = {(i["symbol"], str(i["tradeId"]), i["orderId"]): i for i in items}
            yield Chunk(list(unique.values()), end * 1000, pages)
            if end >= until_ms:
                return
            start = end

    def _classic(self, start: int, end: int, symbols: list[str]) -> tuple[int, list[dict]]:
        if not self.v1_per_symbol:
            try:
                return self._classic_pages(start, end, None)
            except KucoinError as e:
                if e.code == "404000":
                    self.v1_gone = True
                    log.info("%s is gone: reading only %s from now on", FILLS, HF_FILLS)
                    return 0, []
                if e.code != "400100":
                    raise
                self.v1_per_symbol = True  # KuCoin wants a symbol: one list per symbol
        pages, items = 0, []
        for symbol in symbols:
            n, got = self._classic_pages(start, end, wire(symbol))
            pages += n
            items += got
        return pages, items

    def _classic_pages(self, start: int, end: int, symbol: str | None) -> tuple[int, list]:
        items: list[dict] = []
        page = 1
        while True:
            params = {"startAt": str(start), "endAt": str(end), "currentPage": str(page),
                      "pageSize": str(PAGE_SIZE)}
            if symbol:
                params["symbol"] = symbol
            data = self._get(FILLS, params)
            got = data.get("items") if isinstance(data, dict) else None
            if not isinstance(got, list):
                raise KucoinError(f"GET {FILLS}: the answer has no items", endpoint=FILLS)
            items += [_checked(i, FILLS) for i in got]
            total = data.get("totalPage")
            if not got or not isinstance(total, int) or page >= total:
                return page, items
            page += 1

    def _hf(self, symbol: str, start: int, end: int) -> tuple[int, list[dict]]:
        items: list[dict] = []
        last_id: Any = None
        pages = 0
        while True:
            params = {"symbol": symbol, "startAt": str(start), "endAt": str(end),
                      "limit": str(HF_LIMIT)}
            if last_id is not None:
                params["lastId"] = str(last_id)
            data = self._get(HF_FILLS, params)
            pages += 1
            got = data.get("items") if isinstance(data, dict) else None
            if not isinstance(got, list):
                raise KucoinError(f"GET {HF_FILLS}: the answer has no items",
                                  endpoint=HF_FILLS)
            items += [_checked(i, HF_FILLS) for i in got]
            next_id = data.get("lastId")
            if len(got) < HF_LIMIT or next_id in (None, 0, last_id):
                return pages, items
            last_id = next_id

    def _get(self, path: str, params: dict[str, str]) -> Any:
        for attempt in range(len(RATE_LIMIT_RETRIES) + 1):
            self._pace()
            try:
                return decode_exact(self.rest.call("GET", path, params, signed=True))
            except RateLimited:
                if attempt == len(RATE_LIMIT_RETRIES):
                    raise
                self._sleep(RATE_LIMIT_RETRIES[attempt])
        raise AssertionError("unreachable")

    def _pace(self) -> None:
        with self._lock:
            now = self._clock()
            if now < self._next_call:
                self._sleep(self._next_call - now)
                now = self._clock()
            self._next_call = now + 1.0 / CALLS_PER_SECOND

    # -- on the receive loop ------------------------------------------------------------------

    def record(self, items: list[dict], ts_recv: int,
               rows: dict[str, list[tuple]]) -> tuple[int, int]:
        """Rows for the items not recorded yet; (new, already recorded)."""
        new = 0
        out = rows["fills"]
        for i in sorted(items, key=lambda i: i["createdAt"]):
            symbol = canonical(i["symbol"])
            trade_id = str(i["tradeId"])
            if not self.ledger.is_new((symbol, trade_id, i["orderId"]), REST):
                continue
            new += 1
            out.append(make_row(
                "fills", exchange=EXCHANGE, symbol=symbol, ts_exchange=i["createdAt"] * 1000,
                ts_recv=ts_recv, order_id=i["orderId"], trade_id=trade_id, side=i.get("side"),
                price=_num(i.get("price")), qty=_num(i.get("size")), cost=_num(i.get("funds")),
                fee=_num(i.get("fee")), fee_currency=i.get("feeCurrency") or None,
                liquidity=i.get("liquidity"), ord_type=i.get("type"), is_snapshot=False))
        return new, len(items) - new


def _checked(item: Any, path: str) -> dict:
    """A history item with the fields a row needs, or KucoinError (the reconciliation
    fails and is retried; nothing half-read is recorded)."""
    ok = (isinstance(item, dict) and isinstance(item.get("symbol"), str)
          and isinstance(item.get("orderId"), str)
          and type(item.get("tradeId")) in (str, int) and type(item.get("createdAt")) is int
          and all(_num(item.get(k)) is not None for k in ("price", "size")))
    if not ok:
        raise KucoinError(f"GET {path}: an item without symbol, orderId, tradeId, createdAt, "
                          f"price or size: {str(item)[:200]}", endpoint=path)
    return item


def _num(v: Any) -> str | None:
    """Exact number text (KuCoin sends strings; a JSON number keeps its digits)."""
    if v is None or v == "":
        return None
    if type(v) is str:
        try:
            float(v)
        except ValueError:
            return None
        return v
    if type(v) is int:
        return str(v)
    return None
