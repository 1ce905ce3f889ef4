"""The recorded tables: column names, their Arrow types, and the form adapters hand them in.

Adapters emit rows as tuples in the column order below, carrying values close to the wire:
decimal numbers as their exact text, timestamps as integer microseconds or ISO-8601 text.
The sink converts whole columns in Arrow, which is exact and cheap; converting per value in
Python is neither (see docs/architecture.md).

Input kinds:
- ``str``: text, dictionary-encoded on disk (low cardinality: exchange, symbol, side...).
- ``text``: free text (frames, details, ids), not dictionary-encoded.
- ``price`` / ``qty`` / ``wide`` / ``fee``: exact decimal text -> decimal128 (see the
  DECIMAL_* types).
- ``ts_text``: exchange time as integer microseconds, ISO-8601 text
  ("2026-07-07T23:00:03.947173Z"), or None -> timestamp[us, UTC]; nanosecond digits are
  truncated. (Decimal epoch-seconds text, "1618678142.557535", is still read, for rows
  journaled by earlier versions; adapters convert exchange-specific forms themselves.)
- ``ts_us``: integer microseconds since the epoch -> timestamp[us, UTC].
- ``int64`` / ``int32`` / ``uint32`` / ``bool``: Python ints / bools, or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# Bumped whenever a column is added or changes meaning; written into every Parquet file.
SCHEMA_VERSION = 4

# events.kind values that open a gap in the data: a connection that ended (a stale one ends
# with "stale" then "disconnected", so only the latter counts) and a collector that died
# and was restarted by the supervisor (it could write no "disconnected" of its own).
GAP_EVENT_KINDS = ("disconnected", "collector_restarted")

# events.kind values that say a book was found wrong (by the exchange's integrity rule):
# Kraken's checksum mismatch and KuCoin's sequence gap. Each is followed by a resync.
INTEGRITY_EVENT_KINDS = ("checksum_mismatch", "sequence_gap")

# SQL over ``events``: a trade repair (recorder/capture/backfill.py) that covered its whole
# span; the others (complete false, or abandoned at a stop) leave trades that may be
# missing. Here rather than in recorder/analysis/sql.py, which loads pyarrow: `recorder
# run`'s supervisor registers the status command and must stay lean.
REPAIRED_SQL = ("kind = 'trades_backfilled' AND "
                "json_extract(detail, '$.complete')::BOOLEAN IS TRUE")

# Final types (a table catalog cannot change a column's type or a decimal's scale later).
# Prices: up to 8 integer digits (BTC/JPY) and 10 decimals. Quantities: up to 12 integer
# digits (memecoin lots) and 10 decimals. Wide: 24h volumes and running totals. KuCoin fits
# too: its increments are at most 10 decimals in every listing we have (its wire text may pad
# to 20 decimals, "0.08200000000000000000", which casts exactly: only zeros go). A wider
# scale would cost ``sum(price * qty)`` its headroom: it is DECIMAL(38,20) in DuckDB, exact
# up to 10^18 of quote currency. A value that does not fit is never rounded: the sink nulls
# it and records a ``value_unconvertible`` event.
# Fees: a rate times an amount, so more decimals than either (KuCoin charges 0.1 % of
# 9-decimal amounts): 20 integer digits and 18 decimals.
_DECIMALS = {"price": (18, 10), "qty": (22, 10), "wide": (28, 10), "fee": (38, 18)}
_CONSTANTS = {"DECIMAL_PRICE": "price", "DECIMAL_QTY": "qty", "DECIMAL_WIDE": "wide",
              "DECIMAL_FEE": "fee",
              "TIMESTAMP": "ts_us"}


@cache
def _arrow_types() -> dict[str, pa.DataType]:
    # pyarrow is imported on first use: the supervisor of `recorder run` reads configs (and so
    # this module) but never builds a table, and pyarrow with numpy is ~60 MB of its RSS.
    import pyarrow as pa

    timestamp = pa.timestamp("us", tz="UTC")
    types = {kind: pa.decimal128(p, s) for kind, (p, s) in _DECIMALS.items()}
    types.update({"str": pa.string(), "text": pa.string(), "ts_text": timestamp,
                  "ts_us": timestamp, "int64": pa.int64(), "int32": pa.int32(),
                  "uint32": pa.uint32(), "bool": pa.bool_()})
    return types


def __getattr__(name: str) -> pa.DataType:
    """DECIMAL_PRICE, DECIMAL_QTY, DECIMAL_WIDE, TIMESTAMP: the Arrow types, built lazily."""
    if name in _CONSTANTS:
        return _arrow_types()[_CONSTANTS[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: str

    @property
    def arrow_type(self) -> pa.DataType:
        return _arrow_types()[self.kind]


def _cols(spec: str) -> tuple[Column, ...]:
    out = []
    for item in spec.split():
        name, kind = item.split(":")
        out.append(Column(name, kind))
    return tuple(out)


TABLES: dict[str, tuple[Column, ...]] = {
    # source: where the row came from, "ws" (the live stream) or "rest" (the exchange's
    # trade history, fetched to repair a gap); null in files written before schema
    # version 4, which only ever recorded the stream. It is the last column.
    "trades": _cols(
        "exchange:str symbol:str ts_exchange:ts_text ts_recv:ts_us price:price qty:qty "
        "side:str trade_id:text ord_type:str misc:str sequence:int64 source:str"
    ),
    # One exchange message = one update_id; checksum is the exchange's value for that update
    # (null on v1 snapshots). depth is the subscribed depth. verified: the book after this
    # update matched the checksum (true), did not or awaits a resync (false), or had no
    # checksum to compare (null). It is always the last column.
    "book": _cols(
        "exchange:str symbol:str ts_exchange:ts_text ts_recv:ts_us side:str price:price qty:qty "
        "is_snapshot:bool update_id:int64 checksum:uint32 republish:bool depth:int32 "
        "sequence:int64 verified:bool"
    ),
    # The whole kept book of one symbol (every level up to the subscribed depth, both
    # sides), written by the collector every [output] book_checkpoint while the book
    # verifies. update_id and ts_recv are those of the last update applied: book rows with
    # a greater update_id follow it. levels is the checkpoint's row count (both sides), so a
    # reader can tell a complete checkpoint. Rebuilds start from the latest one.
    "book_checkpoints": _cols(
        "exchange:str symbol:str ts_recv:ts_us update_id:int64 depth:int32 side:str "
        "price:price qty:qty levels:int32"
    ),
    "spread": _cols(
        "exchange:str symbol:str ts_exchange:ts_text ts_recv:ts_us bid_price:price bid_qty:qty "
        "ask_price:price ask_qty:qty"
    ),
    # source: "ws" (the stream's candle updates) or "rest" (a candle the exchange's OHLC
    # history gave to repair a gap; its ts_exchange is null: the history has no update
    # time); null before schema version 4. The last row of an interval is its final value.
    "ohlc": _cols(
        "exchange:str symbol:str interval:int32 interval_begin:ts_text ts_exchange:ts_text "
        "ts_recv:ts_us open:price high:price low:price close:price vwap:price volume:wide "
        "trades:int64 source:str"
    ),
    "ticker": _cols(
        "exchange:str symbol:str ts_exchange:ts_text ts_recv:ts_us bid:price bid_qty:qty "
        "ask:price ask_qty:qty last:price last_qty:qty volume:wide volume_today:wide "
        "vwap:price vwap_today:price low:price low_today:price high:price high_today:price "
        "open:price open_today:price change:price change_pct:price trades:int64 "
        "trades_today:int64"
    ),
    "fills": _cols(
        "exchange:str symbol:str ts_exchange:ts_text ts_recv:ts_us order_id:text trade_id:text "
        "side:str price:price qty:qty cost:wide fee:fee fee_currency:str liquidity:str "
        "ord_type:str exec_id:text is_snapshot:bool"
    ),
    "orders": _cols(
        "exchange:str symbol:str ts_exchange:ts_text ts_recv:ts_us order_id:text status:str "
        "side:str ord_type:str limit_price:price order_qty:qty filled_qty:qty avg_price:price "
        "detail:text exec_type:str is_snapshot:bool"
    ),
    # host: where it happened ($RECORDER_HOST or the host name), filled in by the sink;
    # null in files written before schema version 3 (it is the last column).
    "events": _cols(
        "exchange:str ts_recv:ts_us kind:str symbol:str channel:str detail:text conn_id:int64 "
        "host:str"
    ),
    "raw": _cols("exchange:str ts_recv:ts_us conn_id:int64 endpoint:str frame:text"),
}


def make_row(table: str, **values: object) -> tuple:
    """A row of ``table`` built by column name (columns not named are None)."""
    names = _names(table)
    unknown = set(values) - set(names)
    if unknown:
        raise KeyError(f"{table} has no column {', '.join(sorted(unknown))}")
    return tuple(values.get(n) for n in names)


@cache
def _names(table: str) -> tuple[str, ...]:
    return tuple(c.name for c in TABLES[table])


def column_index(table: str, name: str) -> int:
    for i, col in enumerate(TABLES[table]):
        if col.name == name:
            return i
    raise KeyError(f"{table}.{name}")


def arrow_schema(table: str) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field(c.name, c.arrow_type) for c in TABLES[table]])
