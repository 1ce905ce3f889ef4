"""Synthetic Kraken pairs for scale tests and benchmarks (a whole exchange's worth of pairs).

``SYN<n>/USD`` (n = 1..99999) is not a Kraken pair; naming one in ``--pairs`` adds it to this
simulator process's pair table (the recorder's bundled table, extended in this process only),
so the simulator serves it on every channel and lists it in REST ``AssetPairs``, where the
recorder's config check finds it (``rest_url``). Its v1 name is the same text.
"""

from __future__ import annotations

from recorder.exchanges.kraken import pairs as _pairs
from recorder.exchanges.kraken.pairs import Pair

PREFIX = "SYN"


def synthetic_pair(name: str) -> Pair | None:
    """Register and return ``SYN<n>/USD``; None for any other name."""
    base, _, quote = name.strip().upper().partition("/")
    digits = base[len(PREFIX):]
    if (quote != "USD" or not base.startswith(PREFIX) or not digits.isdigit()
            or len(digits) > 5 or int(digits) == 0):
        return None
    symbol = f"{base}/{quote}"
    pair = _pairs.PAIRS.get(symbol)
    if pair is None:
        pair = Pair(symbol, symbol, f"{base}Z{quote}", f"{base}{quote}", 4, 8, "1")
        _pairs.PAIRS[symbol] = pair
        _pairs._BY_WSNAME[symbol] = pair  # noqa: SLF001 - this process's table, on purpose
    return pair
