"""KuCoin's public trade and candle history (``GET /api/v1/market/histories``,
``/api/v1/market/candles``), read to repair gaps.

It holds only the most recent 100 trades of a symbol, with no paging and no time range:
a gap longer than that is repaired as far back as the window reaches and reported as
incomplete. Items carry ``sequence`` (the ``/market/match`` push's ``sequence``) but no
``tradeId``: trades are matched by sequence, and a repaired row's ``trade_id`` is its
sequence, which KuCoin's own match example shows to be the trade id as well.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from recorder.core.schema import column_index
from recorder.exchanges.base import CandleHistory, ExchangeError, RateLimited, TradeHistory
from recorder.exchanges.kucoin.common import EXCHANGE, INTERVAL_TYPES, wire
from recorder.exchanges.kucoin.rest import KucoinError, KucoinRest, decode_exact
from recorder.exchanges.kucoin.rest import RateLimited as KucoinRateLimited

HISTORIES_PATH = "/api/v1/market/histories"
WINDOW = 100
# Weight 3 of the public pool (2,000 per 30 s): far below it at five calls a second.
MIN_INTERVAL = 0.2
_SEQUENCE = column_index("trades", "sequence")


def trade_rows(symbol: str, items: list, ts_recv: int) -> list[tuple]:
    """``trades`` rows (``source`` "rest") of one answer's items, oldest first."""
    out = []
    for t in sorted(items, key=lambda t: int(t["sequence"])):
        seq = int(t["sequence"])
        out.append((EXCHANGE, symbol, int(t["time"]) // 1000, ts_recv, str(t["price"]),
                    str(t["size"]), t["side"], str(seq), None, None, seq, "rest"))
    return out


def key(row: tuple) -> int:
    return row[_SEQUENCE]


def _get_list(client: KucoinRest, path: str, params: dict[str, str]) -> list:
    """One public GET whose ``data`` is a list; ExchangeError / RateLimited otherwise."""
    try:
        data = decode_exact(client.call("GET", path, params))
    except KucoinRateLimited as e:
        raise RateLimited(str(e), retry_after=10.0) from None
    except KucoinError as e:
        raise ExchangeError(str(e)) from None
    if not isinstance(data, list):
        raise ExchangeError(f"GET {path}: expected a list")
    return data


def trade_history(rest_url: str) -> TradeHistory:
    client = KucoinRest(rest_url)

    def fetch(symbol: str, since_us: int) -> Iterator[list[tuple]]:
        data = _get_list(client, HISTORIES_PATH, {"symbol": wire(symbol)})
        yield trade_rows(symbol, data, time.time_ns() // 1000)

    return TradeHistory(f"GET {HISTORIES_PATH}", fetch, key, ordered=True, window=WINDOW,
                        min_interval=MIN_INTERVAL)


# -- candles -----------------------------------------------------------------------------------

CANDLES_PATH = "/api/v1/market/candles"
CANDLES_WINDOW = 1500  # rows one answer holds at most


def candle_rows(symbol: str, minutes: int, items: list, ts_recv: int) -> list[tuple]:
    """``ohlc`` rows (``source`` "rest"), oldest first, of one answer's rows ``[start (s),
    open, close, high, low, volume, turnover]`` (newest first on the wire). The history has
    no update time, VWAP or trade count."""
    return [(EXCHANGE, symbol, minutes, int(c[0]) * 1_000_000, None, ts_recv, str(c[1]),
             str(c[3]), str(c[4]), str(c[2]), None, str(c[5]), None, "rest")
            for c in sorted(items, key=lambda c: int(c[0]))]


def candle_history(rest_url: str) -> CandleHistory:
    client = KucoinRest(rest_url)

    def fetch(symbol: str, minutes: int, since_us: int) -> Iterator[list[tuple]]:
        start = since_us // 1_000_000 // (minutes * 60) * minutes * 60
        params = {"type": INTERVAL_TYPES[minutes], "symbol": wire(symbol), "startAt": str(start),
                  "endAt": str(time.time_ns() // 1_000_000_000 + minutes * 60)}
        data = _get_list(client, CANDLES_PATH, params)
        yield candle_rows(symbol, minutes, data, time.time_ns() // 1000)

    return CandleHistory(f"GET {CANDLES_PATH}", fetch, window=CANDLES_WINDOW,
                         min_interval=MIN_INTERVAL)
