"""Rows of the ``events`` table, built by column name, and their detail text.

Gaps, reconnects, integrity failures and status changes are data: every part of the
recorder that notices one hands an events row to the sink, built here so that no module
depends on the table's column order.
"""

from __future__ import annotations

import msgspec

from recorder.core.schema import TABLES

_encode = msgspec.json.encode
_COLUMNS = tuple(c.name for c in TABLES["events"])
_DEFAULTS = dict.fromkeys(_COLUMNS)


def detail(**fields: object) -> str:
    """Event detail as compact JSON text (None values left out)."""
    return _encode({k: v for k, v in fields.items() if v is not None}).decode()


def event(exchange: str, ts_recv: int, kind: str, *, symbol: str | None = None,
          channel: str | None = None, detail: str | None = None,
          conn_id: int | None = None, **more: object) -> tuple:
    """One ``events`` row (a tuple in the table's column order)."""
    values = {**_DEFAULTS, **more, "exchange": exchange, "ts_recv": ts_recv, "kind": kind,
              "symbol": symbol, "channel": channel, "detail": detail, "conn_id": conn_id}
    if len(values) != len(_COLUMNS):
        unknown = sorted(set(values) - set(_COLUMNS))
        raise KeyError(f"events has no column {', '.join(unknown)}")
    return tuple(values[c] for c in _COLUMNS)


def with_conn_id(row: tuple, conn_id: int) -> tuple:
    """The row with ``conn_id`` filled in when the parser could not know it."""
    i = _CONN_ID
    return row if row[i] is not None else row[:i] + (conn_id,) + row[i + 1:]


_CONN_ID = _COLUMNS.index("conn_id")


def new_rows() -> dict[str, list[tuple]]:
    """An empty row buffer with one list per table."""
    return {name: [] for name in TABLES}


def short_error(e: BaseException) -> str:
    """An exception as one bounded line for events and logs (its type when it says nothing)."""
    text = str(e) or type(e).__name__
    return text if len(text) < 300 else text[:300] + "..."
