"""Kraken spot pairs known to the recorder and the simulator.

The table is a snapshot of Kraken's REST ``AssetPairs`` (``wsname``, ``pair_decimals``,
``lot_decimals``, ``ordermin``). Kraken WS v1 names pairs by ``wsname`` (``XBT/USD``,
``XDG/USD``); v2 and this project's canonical ``symbol`` use ``BTC`` and ``DOGE`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass

# Kraken's legacy asset codes that v2 (and the canonical symbol) spell differently.
_V1_TO_CANONICAL_ASSET = {"XBT": "BTC", "XDG": "DOGE"}
_CANONICAL_TO_V1_ASSET = {v: k for k, v in _V1_TO_CANONICAL_ASSET.items()}


@dataclass(frozen=True, slots=True)
class Pair:
    symbol: str  # canonical and v2 name, BTC/USD
    wsname: str  # v1 name, XBT/USD
    rest_id: str  # AssetPairs key, XXBTZUSD
    altname: str  # XBTUSD
    price_decimals: int
    qty_decimals: int
    ordermin: str

    @property
    def v1_price_decimals(self) -> int:
        """Decimals of prices on the WS v1 wire (see V1_WIRE_PRICE_DECIMALS)."""
        return V1_WIRE_PRICE_DECIMALS.get(self.wsname, self.price_decimals)

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]


# WS v1 writes prices with more decimals than AssetPairs' pair_decimals for many pairs, the
# same in its book, trade, spread, ticker and ohlc channels (XBT/USD "27119.90000" with
# pair_decimals 1). There is no rule behind it that the data shows, so these are the pairs
# whose real v1 frames we have (python-kraken-sdk 2023, cryptofeed 2021); any other pair is
# written with pair_decimals. The checksum covers the wire text, so the padding changes it.
V1_WIRE_PRICE_DECIMALS: dict[str, int] = {
    "XBT/USD": 5, "XBT/CHF": 5, "ETH/CHF": 5, "XMR/USD": 8, "SC/EUR": 6, "WAVES/EUR": 6,
    "KSM/XBT": 8, "ADA/XBT": 9, "GRT/ETH": 9, "OCEAN/XBT": 9, "OMG/USD": 6,
}

# wsname, rest_id, altname, pair_decimals, lot_decimals, ordermin
_TABLE: tuple[tuple[str, str, str, int, int, str], ...] = (
    ("XBT/USD", "XXBTZUSD", "XBTUSD", 1, 8, "0.00005"),
    ("XBT/EUR", "XXBTZEUR", "XBTEUR", 1, 8, "0.00005"),
    ("XBT/GBP", "XXBTZGBP", "XBTGBP", 1, 8, "0.00005"),
    ("XBT/CHF", "XBTCHF", "XBTCHF", 1, 8, "0.00005"),
    ("XBT/JPY", "XXBTZJPY", "XBTJPY", 0, 8, "0.00005"),
    ("XBT/USDT", "XBTUSDT", "XBTUSDT", 1, 8, "0.00005"),
    ("XBT/USDC", "XBTUSDC", "XBTUSDC", 2, 8, "0.00005"),
    ("ETH/USD", "XETHZUSD", "ETHUSD", 2, 8, "0.001"),
    ("ETH/EUR", "XETHZEUR", "ETHEUR", 2, 8, "0.001"),
    ("ETH/GBP", "XETHZGBP", "ETHGBP", 2, 8, "0.001"),
    ("ETH/CHF", "ETHCHF", "ETHCHF", 2, 8, "0.001"),
    ("ETH/XBT", "XETHXXBT", "ETHXBT", 5, 8, "0.001"),
    ("ETH/USDT", "ETHUSDT", "ETHUSDT", 2, 8, "0.001"),
    ("SOL/USD", "SOLUSD", "SOLUSD", 2, 8, "0.06"),
    ("SOL/EUR", "SOLEUR", "SOLEUR", 2, 8, "0.06"),
    ("XDG/USD", "XDGUSD", "XDGUSD", 7, 8, "50"),
    ("XDG/EUR", "XDGEUR", "XDGEUR", 7, 8, "50"),
    ("XRP/USD", "XXRPZUSD", "XRPUSD", 5, 8, "1.65"),
    ("XRP/EUR", "XXRPZEUR", "XRPEUR", 5, 8, "1.65"),
    ("ADA/USD", "ADAUSD", "ADAUSD", 6, 8, "25"),
    ("ADA/EUR", "ADAEUR", "ADAEUR", 6, 8, "25"),
    ("ADA/XBT", "ADAXBT", "ADAXBT", 8, 8, "25"),
    ("DOT/USD", "DOTUSD", "DOTUSD", 4, 8, "0.5"),
    ("DOT/EUR", "DOTEUR", "DOTEUR", 4, 8, "0.5"),
    ("LTC/USD", "XLTCZUSD", "LTCUSD", 2, 8, "0.05"),
    ("LTC/EUR", "XLTCZEUR", "LTCEUR", 2, 8, "0.05"),
    ("LINK/USD", "LINKUSD", "LINKUSD", 5, 8, "0.5"),
    ("ATOM/USD", "ATOMUSD", "ATOMUSD", 4, 8, "1"),
    ("USDT/USD", "USDTZUSD", "USDTUSD", 4, 8, "5"),
    ("USDC/USD", "USDCUSD", "USDCUSD", 4, 8, "5"),
    ("XMR/USD", "XXMRZUSD", "XMRUSD", 2, 8, "0.05"),
    ("WAVES/EUR", "WAVESEUR", "WAVESEUR", 4, 8, "2"),
    ("KSM/XBT", "KSMXBT", "KSMXBT", 6, 8, "0.1"),
    ("GRT/ETH", "GRTETH", "GRTETH", 7, 8, "20"),
    ("SC/EUR", "SCEUR", "SCEUR", 5, 8, "1500"),
    ("OCEAN/XBT", "OCEANXBT", "OCEANXBT", 8, 8, "10"),
    ("OMG/USD", "OMGUSD", "OMGUSD", 6, 8, "2"),
)


def canonical_symbol(name: str) -> str:
    """BASE/QUOTE with Kraken's legacy XBT/XDG replaced: XBT/USD -> BTC/USD."""
    base, _, quote = name.partition("/")
    base = _V1_TO_CANONICAL_ASSET.get(base, base)
    quote = _V1_TO_CANONICAL_ASSET.get(quote, quote)
    return f"{base}/{quote}"


def v1_name(symbol: str) -> str:
    """The v1 wsname of a canonical symbol: BTC/USD -> XBT/USD."""
    base, _, quote = symbol.partition("/")
    base = _CANONICAL_TO_V1_ASSET.get(base, base)
    quote = _CANONICAL_TO_V1_ASSET.get(quote, quote)
    return f"{base}/{quote}"


def _build() -> dict[str, Pair]:
    out: dict[str, Pair] = {}
    for wsname, rest_id, altname, pdec, qdec, ordermin in _TABLE:
        sym = canonical_symbol(wsname)
        out[sym] = Pair(sym, wsname, rest_id, altname, pdec, qdec, ordermin)
    return out


PAIRS: dict[str, Pair] = _build()
_BY_WSNAME: dict[str, Pair] = {p.wsname: p for p in PAIRS.values()}


def find_pair(name: str) -> Pair | None:
    """Look a pair up by canonical/v2 name (BTC/USD) or by v1 wsname (XBT/USD)."""
    return PAIRS.get(name) or _BY_WSNAME.get(name)


def by_v1_name(wsname: str) -> Pair | None:
    return _BY_WSNAME.get(wsname)


def by_v2_name(symbol: str) -> Pair | None:
    return PAIRS.get(symbol)
