"""Kraken's public trade and candle history (``GET /0/public/Trades``, ``/OHLC``), read to
repair gaps.

The endpoint pages forward in time: ``since`` is a nanosecond cursor (exclusive) and each
answer's ``last`` is the next one; up to 1000 trades a call, oldest first. Rows are
``[price, volume, time, side, ordertype, misc, trade_id]``: ``trade_id`` is the v2
stream's ``trade_id`` (a per-pair sequence), so v2 trades are matched by it; v1 trades
carry no id and are matched by time, price, volume and side. Times are read as decimal
text (never a float) and truncated to the microsecond like the stream's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlencode

from recorder.core.schema import column_index
from recorder.exchanges.base import CandleHistory, ExchangeError, RateLimited, TradeHistory
from recorder.exchanges.kraken.common import EXCHANGE, epoch_us
from recorder.exchanges.kraken.pairs import find_pair
from recorder.exchanges.kraken.rest import KrakenError, public_get

TRADES_PATH = "/0/public/Trades"
# Public endpoints: about one call a second (Kraken's documented public limit).
MIN_INTERVAL = 1.0
_SIDE = {"b": "buy", "s": "sell"}
_ORD_TYPE = {"l": "limit", "m": "market"}
_RATE_LIMITS = ("EGeneral:Too many requests", "EAPI:Rate limit exceeded")
_TRADE_ID, _TS, _PRICE, _QTY, _SIDE_COL = (
    column_index("trades", c) for c in ("trade_id", "ts_exchange", "price", "qty", "side"))


def rest_pair(symbol: str) -> str:
    """The name Kraken's REST API takes (``XBTUSD``)."""
    pair = find_pair(symbol)
    return pair.altname if pair is not None else symbol.replace("/", "")


def trade_rows(symbol: str, items: list, ts_recv: int) -> list[tuple]:
    """``trades`` rows (``source`` "rest") of one answer's rows."""
    out = []
    for t in items:
        trade_id = str(t[6]) if len(t) > 6 and t[6] is not None else None
        out.append((EXCHANGE, symbol, epoch_us(str(t[2])), ts_recv, str(t[0]), str(t[1]),
                    _SIDE.get(t[3]), trade_id, _ORD_TYPE.get(t[4], t[4]), t[5] or None, None,
                    "rest"))
    return out


def v2_key(row: tuple) -> int:
    return int(row[_TRADE_ID])


def v1_key(row: tuple) -> tuple:
    ts = row[_TS]
    return (ts if ts.__class__ is int else epoch_us(ts), Decimal(row[_PRICE]),
            Decimal(row[_QTY]), row[_SIDE_COL])


def _get(base: str, path: str, params: dict, timeout: float) -> dict:
    """One public GET; Kraken's ``result``, or ExchangeError / RateLimited."""
    try:
        doc = public_get(base, f"{path}?{urlencode(params)}", timeout, exact=True)
    except KrakenError as e:
        raise ExchangeError(str(e)) from None
    if not isinstance(doc, dict):
        raise ExchangeError(f"{path}: the answer is not a JSON object")
    errors = doc.get("error") or []
    if any(e.startswith(_RATE_LIMITS) for e in errors):
        raise RateLimited(f"{path}: {', '.join(errors)}", retry_after=5.0)
    if errors or not isinstance(doc.get("result"), dict):
        raise ExchangeError(f"{path} {params.get('pair')}: {', '.join(errors) or 'no result'}")
    return doc["result"]


def trade_history(rest_url: str, api: str, timeout: float = 15.0) -> TradeHistory:
    base = rest_url.rstrip("/")

    def fetch(symbol: str, since_us: int) -> Iterator[list[tuple]]:
        pair = rest_pair(symbol)
        cursor = since_us * 1000 - 1  # exclusive: the trades at since_us come back too
        while True:
            result = _get(base, TRADES_PATH, {"pair": pair, "since": cursor}, timeout)
            items = next((v for k, v in result.items() if k != "last"), [])
            rows = trade_rows(symbol, items, time.time_ns() // 1000)
            yield rows
            last = int(result.get("last") or 0)
            if not rows or last <= cursor:
                return
            cursor = last

    return TradeHistory(f"GET {TRADES_PATH}", fetch, v2_key if api == "v2" else v1_key,
                        ordered=api == "v2", min_interval=MIN_INTERVAL)


# -- candles -----------------------------------------------------------------------------------

OHLC_PATH = "/0/public/OHLC"
OHLC_WINDOW = 720  # Kraken keeps the last 720 intervals of each size


def candle_rows(symbol: str, interval: int, items: list, ts_recv: int) -> list[tuple]:
    """``ohlc`` rows (``source`` "rest") of one OHLC answer: ``[time, open, high, low,
    close, vwap, volume, count]``; the history has no update time (``ts_exchange`` null)."""
    return [(EXCHANGE, symbol, interval, int(c[0]) * 1_000_000, None, ts_recv, str(c[1]),
             str(c[2]), str(c[3]), str(c[4]), str(c[5]), str(c[6]), int(c[7]), "rest")
            for c in items]


def candle_history(rest_url: str, timeout: float = 15.0) -> CandleHistory:
    base = rest_url.rstrip("/")

    def fetch(symbol: str, interval: int, since_us: int) -> Iterator[list[tuple]]:
        # ``since`` is exclusive: one second before the interval that holds since_us.
        since = since_us // 1_000_000 // (interval * 60) * interval * 60 - 1
        result = _get(base, OHLC_PATH, {"pair": rest_pair(symbol), "interval": interval,
                                         "since": since}, timeout)
        items = next((v for k, v in result.items() if k != "last"), [])
        yield candle_rows(symbol, interval, items, time.time_ns() // 1000)

    return CandleHistory(f"GET {OHLC_PATH}", fetch, window=OHLC_WINDOW,
                         min_interval=MIN_INTERVAL)
