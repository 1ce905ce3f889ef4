"""Exact fixed-decimal text for integer tick values.

The market keeps prices and quantities as integers in units of the pair's last decimal, so
rendering never goes through a binary float and always keeps Kraken's trailing zeros.
"""

from __future__ import annotations


def fmt_fixed(ticks: int, decimals: int) -> str:
    """12345, 2 -> "123.45"; 5, 3 -> "0.005"; 7, 0 -> "7"."""
    if decimals == 0:
        return str(ticks)
    sign = "-" if ticks < 0 else ""
    digits = str(abs(ticks)).rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def parse_fixed(text: str, decimals: int) -> int:
    """The inverse of fmt_fixed for text with at most ``decimals`` decimals."""
    neg = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    if len(frac) > decimals:
        raise ValueError(f"{text!r} has more than {decimals} decimals")
    value = int(whole or "0") * 10**decimals + int(frac.ljust(decimals, "0") or "0")
    return -value if neg else value
