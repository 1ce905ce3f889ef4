"""The built-in KuCoin spot symbol table, and number text in KuCoin's style.

Prices and sizes are integers in units of the symbol's increment (``priceIncrement``,
``baseIncrement``), so every text is exact. KuCoin's WebSocket and book text drops trailing
zeros (``"67523"``, ``"0.003"``); ``fmt_trim`` writes that form.

BTC-USDT, ETH-USDT and ADA-USDT carry the increments of real ``/api/v2/symbols`` answers
(../shared/data/kucoin/rest.json, S8, 2024); the other rows use plausible increments of the
same kind (not checked against KuCoin today).
"""

from __future__ import annotations

from dataclasses import dataclass

from recorder.simulator.numbers import fmt_fixed


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str  # "BTC-USDT"
    base: str
    quote: str
    pd: int  # price decimals (priceIncrement = 10**-pd)
    sd: int  # size decimals (baseIncrement = 10**-sd)
    base_min: str
    quote_min: str
    usd: float  # rough price of the base in the quote's units, for the synthetic market
    market: str = "USDS"

    @property
    def price_increment(self) -> str:
        return fmt_fixed(1, self.pd)

    @property
    def base_increment(self) -> str:
        return fmt_fixed(1, self.sd)

    def info(self) -> dict:
        """One ``/api/v2/symbols`` entry, keys in KuCoin's order."""
        return {
            "symbol": self.name, "name": self.name, "baseCurrency": self.base,
            "quoteCurrency": self.quote, "feeCurrency": self.quote, "market": self.market,
            "baseMinSize": self.base_min, "quoteMinSize": self.quote_min,
            "baseMaxSize": "10000000000", "quoteMaxSize": "99999999",
            "baseIncrement": self.base_increment, "quoteIncrement": "0.000001",
            "priceIncrement": self.price_increment, "priceLimitRate": "0.1",
            "minFunds": "0.1", "isMarginEnabled": True, "enableTrading": True,
            "feeCategory": 1, "makerFeeCoefficient": "1.00", "takerFeeCoefficient": "1.00",
            "st": False, "callauctionIsEnabled": False, "callauctionPriceFloor": None,
            "callauctionPriceCeiling": None, "callauctionFirstStageStartTime": None,
            "callauctionSecondStageStartTime": None, "callauctionThirdStageStartTime": None,
            "tradingStartTime": None,
        }


_TABLE = [
    Symbol("BTC-USDT", "BTC", "USDT", 1, 8, "0.00001", "0.1", 65000.0),
    Symbol("ETH-USDT", "ETH", "USDT", 2, 7, "0.0001", "0.01", 3500.0),
    Symbol("ADA-USDT", "ADA", "USDT", 4, 2, "1", "0.1", 0.45),
    Symbol("SOL-USDT", "SOL", "USDT", 2, 4, "0.01", "0.1", 150.0),
    Symbol("XRP-USDT", "XRP", "USDT", 4, 4, "0.1", "0.1", 0.6),
    Symbol("DOGE-USDT", "DOGE", "USDT", 5, 4, "10", "0.1", 0.15),
    Symbol("LTC-USDT", "LTC", "USDT", 2, 6, "0.001", "0.1", 80.0),
    Symbol("DOT-USDT", "DOT", "USDT", 3, 4, "0.01", "0.1", 7.0),
    Symbol("LINK-USDT", "LINK", "USDT", 3, 4, "0.01", "0.1", 15.0),
    Symbol("KCS-USDT", "KCS", "USDT", 3, 4, "0.01", "0.1", 10.0),
    Symbol("TRX-USDT", "TRX", "USDT", 6, 4, "1", "0.1", 0.12),
    Symbol("BTC-USDC", "BTC", "USDC", 1, 8, "0.00001", "0.1", 65000.0),
    Symbol("ETH-BTC", "ETH", "BTC", 5, 7, "0.0001", "0.00001", 3500.0 / 65000.0, "BTC"),
]
SYMBOLS: dict[str, Symbol] = {s.name: s for s in _TABLE}


# Synthetic symbols for scale tests and benchmarks (a whole exchange's worth of pairs):
# SYN1-USDT ... SYN99999-USDT exist without being in the table, each quoted like a cheap coin.
SYNTHETIC_PREFIX = "SYN"


def synthetic_symbol(name: str) -> Symbol | None:
    """``SYN<n>-USDT`` (n = 1..99999) as a symbol, or None for any other name."""
    base, _, quote = name.partition("-")
    digits = base[len(SYNTHETIC_PREFIX):]
    if (quote != "USDT" or not base.startswith(SYNTHETIC_PREFIX) or not digits.isdigit()
            or len(digits) > 5 or int(digits) == 0):
        return None
    return Symbol(name, base, "USDT", 4, 4, "0.1", "0.1", 0.5 + int(digits) % 97 / 10)


def find_symbol(name: str) -> Symbol | None:
    """``BTC-USDT``; ``BTC/USDT`` and lower case are accepted too; ``SYN<n>-USDT`` is a
    synthetic symbol (see synthetic_symbol)."""
    key = name.strip().upper().replace("/", "-")
    return SYMBOLS.get(key) or synthetic_symbol(key)


def fmt_trim(ticks: int, decimals: int) -> str:
    """Exact decimal text without trailing zeros: 675230, 1 -> "67523"; 30, 4 -> "0.003"."""
    text = fmt_fixed(ticks, decimals)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def fmt_pad(ticks: int, decimals: int, places: int) -> str:
    """``ticks`` at ``decimals`` written with ``places`` decimals (a JSON number of
    ``/market/snapshot``: ``-1689.90000000000000000000``)."""
    if places >= decimals:
        return fmt_fixed(ticks * 10 ** (places - decimals), places)
    cut = abs(ticks) // 10 ** (decimals - places)  # toward zero
    return fmt_fixed(-cut if ticks < 0 else cut, places)
