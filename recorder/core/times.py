"""Times and durations as users write them (ISO-8601, epoch seconds, '5m'), as microseconds.

Kept apart from the dataset module so that commands parsing their options do not load
pyarrow: the supervisor process of `recorder run` imports the whole CLI.
"""

from __future__ import annotations

import datetime as dt
import re


class DatasetError(ValueError):
    """A bad argument (unknown table, unparseable time, ...): the message says what is
    allowed."""


_TIME_UNITS = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "min": 60_000_000,
               "h": 3_600_000_000, "d": 86_400_000_000}
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|m|h|d)?\s*$")


def parse_interval(text: str | int | float | dt.timedelta, what: str = "interval") -> int:
    """'500ms', '1s', '5m', '1h', '1d' (a bare number is seconds) -> microseconds (> 0)."""
    if isinstance(text, dt.timedelta):
        us = round(text.total_seconds() * 1_000_000)
    elif isinstance(text, int | float):
        us = round(text * 1_000_000)
    else:
        m = _INTERVAL.match(str(text))
        if not m:
            raise DatasetError(f"{what} {text!r} is not a duration; use e.g. 500ms, 1s, 5m, "
                               "1h, 1d")
        us = round(float(m.group(1)) * _TIME_UNITS[m.group(2) or "s"])
    if us <= 0:
        raise DatasetError(f"{what} {text!r} must be longer than 0")
    return us


def parse_time(value: str | int | float | dt.datetime | dt.date | None,
               what: str = "time") -> int | None:
    """ISO-8601 ('2026-11-22', '2026-11-22T04:30', '...Z', '+02:00'; no zone means UTC),
    epoch seconds, or a datetime -> microseconds since the epoch."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        d = value
    elif isinstance(value, dt.date):
        d = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float):
        return round(value * 1_000_000)
    else:
        text = str(value).strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return round(float(text) * 1_000_000)
        try:
            d = dt.datetime.fromisoformat(text.replace(" ", "T", 1) if len(text) > 10
                                          else text)
        except ValueError:
            raise DatasetError(f"{what} {value!r} is not a time; use ISO-8601 such as "
                               "2026-11-22 or 2026-11-22T04:30:00Z, or epoch seconds"
                               ) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    delta = d - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def ts_literal(us: int) -> str:
    """A TIMESTAMPTZ literal for microseconds since the epoch."""
    d = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
    return f"TIMESTAMPTZ '{d.strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"


def date_of(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).strftime(
        "%Y-%m-%d")


def to_datetime(us: int | None) -> dt.datetime | None:
    if us is None:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)


def iso_us(us: int) -> str:
    """Microseconds since the epoch as events write times: 2026-01-02T03:04:05.123456Z."""
    t = dt.datetime.fromtimestamp(us // 1_000_000, dt.UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{us % 1_000_000:06d}Z"
