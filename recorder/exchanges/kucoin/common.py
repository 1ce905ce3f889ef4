"""Names the KuCoin modules share: what KuCoin supports and how its names map to ours.

Cheap to import (no msgspec, no network): ``spec`` reads it while configs are validated.
"""

from __future__ import annotations

from functools import lru_cache

EXCHANGE = "kucoin"
API = "spot"

PUBLIC_CHANNELS = ("trade", "book", "spread", "ohlc", "ticker")
PRIVATE_CHANNELS = ("fills",)
# Top-N book streams (/spotMarket/level2Depth5 and level2Depth50); no depth = the
# incremental /market/level2 full book, synced from a REST snapshot by sequence.
BOOK_DEPTHS = (5, 50)

# Candle types of /market/candles:{symbol}_{type} by interval in minutes (KuCoin docs).
INTERVAL_TYPES: dict[int, str] = {
    1: "1min", 3: "3min", 15: "15min", 30: "30min", 60: "1hour", 120: "2hour", 240: "4hour",
    360: "6hour", 480: "8hour", 720: "12hour", 1440: "1day", 10080: "1week",
}
TYPE_MINUTES: dict[str, int] = {v: k for k, v in INTERVAL_TYPES.items()}
OHLC_INTERVALS = tuple(INTERVAL_TYPES)

# Limits (KuCoin docs, "Request Rate Limit / WEBSOCKET"): topics per subscribe message and
# per connection; a connection is cut after 24 h, so it is replaced a little before.
MAX_TOPICS_PER_MESSAGE = 100
MAX_TOPICS_PER_CONNECTION = 300
MAX_CONNECTION_AGE = 23.5 * 3600
# Client messages (subscribes and pings) per connection: KuCoin allows 100 per 10 s and
# closes the connection beyond ("exceed max permits per second"). The runtime sends queued
# requests at this rate after a burst of one second's worth, so 10 s carry at most 88 of
# them, which leaves room for the pings (two or three per 10 s).
MAX_MESSAGES_PER_SECOND = 8.0

DEFAULT_REST_URL = "https://api.kucoin.com"
DEFAULT_KEY_ENV = "KUCOIN_API_KEY"
DEFAULT_SECRET_ENV = "KUCOIN_API_SECRET"
DEFAULT_PASSPHRASE_ENV = "KUCOIN_API_PASSPHRASE"
DEFAULT_KEY_VERSION = 2


@lru_cache(maxsize=8192)
def canonical(name: str) -> str:
    """BTC-USDT (KuCoin's wire name) or BTC/USDT -> BTC/USDT.

    KuCoin quote currencies never contain a dash, so the last dash splits base and quote.
    """
    if "/" in name:
        return name
    base, sep, quote = name.rpartition("-")
    return f"{base}/{quote}" if sep and base else name


@lru_cache(maxsize=8192)
def wire(name: str) -> str:
    """BTC/USDT or BTC-USDT -> BTC-USDT, the name KuCoin's topics and REST use."""
    return name.replace("/", "-")
