"""Row tuples -> Arrow RecordBatch with exactly ``arrow_schema(table)``.

Whole columns are converted in Arrow: decimal text through Arrow's exact decimal parser,
timestamps through decimal / ISO-8601 casts. Python never touches a value on the fast path,
which is what keeps a 100k-row book batch in the tens of milliseconds.

A value that cannot be converted exactly becomes null and is returned as a ``Problem`` so
the caller can record it; one bad value never costs the rest of its batch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain

import pyarrow as pa
import pyarrow.compute as pc

from recorder.core.schema import TABLES, TIMESTAMP, arrow_schema

_ARROW_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)
_TEXT_LIMIT = 200  # keep a problem report readable even if an adapter hands over a frame


@dataclass(frozen=True, slots=True)
class Problem:
    """One value that could not be stored as sent (it is null in the batch)."""

    table: str
    column: str  # "*" when the whole row was malformed
    row: int  # index in the rows handed to the converter
    text: str  # the original value, as text (repr for non-text values)
    reason: str = ""


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "..."


# --- isolating bad values -------------------------------------------------------------------

Converter = Callable[[pa.Array], pa.Array]


def _convert_isolating(
    strings: pa.Array, convert: Converter, out_type: pa.DataType
) -> tuple[pa.Array, list[int]]:
    """Run a vectorised conversion; on failure, bisect to find and null the bad values.

    Good stretches are still converted in bulk, so k bad values cost O(k log n) casts.
    """
    try:
        return convert(strings), []
    except _ARROW_ERRORS:
        if len(strings) == 1:
            return pa.nulls(1, out_type), [0]
    mid = len(strings) // 2
    left, bad_left = _convert_isolating(strings.slice(0, mid), convert, out_type)
    right, bad_right = _convert_isolating(strings.slice(mid), convert, out_type)
    return pa.concat_arrays([left, right]), bad_left + [mid + i for i in bad_right]


# --- text columns -----------------------------------------------------------------------------


def _text_column(values: Sequence, exact_text: Callable[[object], str | None],
                 reason: str) -> tuple[pa.Array, list[tuple[int, str, str]]]:
    """A text column; values ``exact_text`` cannot render are nulled and reported."""
    try:
        return pa.array(values, pa.string()), []
    except _ARROW_ERRORS:
        pass
    clean: list[str | None] = []
    bad: list[tuple[int, str, str]] = []
    for i, v in enumerate(values):
        text = v if v is None or isinstance(v, str) else exact_text(v)
        if text is None and v is not None:
            bad.append((i, _shown(v), reason))
        clean.append(text)
    return pa.array(clean, pa.string()), bad


def _as_strings(values: Sequence) -> tuple[pa.Array, list[tuple[int, str, str]]]:
    """Text column; anything that is not text (or None) is nulled and reported."""
    return _text_column(values, lambda v: None, "not text")


def _as_id_text(values: Sequence) -> tuple[pa.Array, list[tuple[int, str, str]]]:
    """Free text such as ids: an int (a numeric id from an earlier adapter) is kept as its
    exact decimal text; anything else that is not text is nulled and reported."""
    return _text_column(values, lambda v: str(v) if type(v) is int else None, "not text")


def _number_text(v: object) -> str | None:
    if isinstance(v, int | Decimal) and not isinstance(v, bool):
        return str(v)
    return None


def _as_number_text(values: Sequence) -> tuple[pa.Array, list[tuple[int, str, str]]]:
    """Text of decimal numbers. Ints and Decimals are exact, so their text is used; a float
    has already lost the exchange's digits, so it is reported rather than guessed at."""
    return _text_column(values, _number_text, "not decimal text")


# --- decimals ---------------------------------------------------------------------------------


def _decimal_column(values: Sequence, typ: pa.DataType):
    strings, bad = _as_number_text(values)

    def cast(a: pa.Array) -> pa.Array:
        # safe=True is the exactness guarantee: Arrow refuses to drop digits or overflow.
        return pc.cast(a, typ)

    out, failed = _convert_isolating(strings, cast, typ)
    bad += [(i, _shown(strings[i].as_py()), f"not exact as {typ}") for i in failed]
    return out, bad


# --- timestamps -------------------------------------------------------------------------------

_LITTLE_ENDIAN = sys.byteorder == "little"
_EPOCH_US = pa.decimal128(17, 6)  # 11 digits of seconds, exact to the microsecond
_EPOCH_NS = pa.decimal128(20, 9)  # sub-microsecond epoch text, truncated to us below
_MILLION = pa.scalar(Decimal(1_000_000), pa.decimal128(7, 0))
_even_cache: list[pa.Array] = [pa.array([], pa.int64())]


def _even_indices(n: int) -> pa.Array:
    cached = _even_cache[0]
    if len(cached) < n:
        cached = pa.array(range(0, 2 * max(n, 2 * len(cached)), 2), pa.int64())
        _even_cache[0] = cached
    return cached.slice(0, n)


def _decimal_us_to_timestamp(dec: pa.Array) -> pa.Array:
    """decimal(p, 6) seconds -> timestamp[us]: the unscaled integer *is* the microsecond
    count, so read the low 64 bits of each 128-bit value instead of doing decimal maths."""
    if _LITTLE_ENDIAN:
        words = pa.Array.from_buffers(
            pa.int64(), 2 * len(dec), [None, dec.buffers()[1]], offset=2 * dec.offset
        )
        low = words.take(_even_indices(len(dec)))
        ts = pa.Array.from_buffers(TIMESTAMP, len(dec), [None, low.buffers()[1]])
    else:  # pragma: no cover - portable path for big-endian hosts
        ts = pc.cast(pc.multiply(dec, _MILLION), pa.int64(), safe=False).view(TIMESTAMP)
    if dec.null_count:
        ts = pc.if_else(pc.is_null(dec), pa.scalar(None, TIMESTAMP), ts)
    return ts


def _epoch_to_ts(strings: pa.Array) -> pa.Array:
    try:
        dec = pc.cast(strings, _EPOCH_US)
    except pa.ArrowInvalid:
        # More than 6 decimals (ns text): parse exactly, then drop the sub-us digits the way
        # ISO-8601 nanoseconds are dropped. Truncation cannot overflow at this precision.
        dec = pc.cast(pc.cast(strings, _EPOCH_NS), pa.decimal128(20, 6), safe=False)
    return _decimal_us_to_timestamp(dec)


def _iso_to_ts(strings: pa.Array) -> pa.Array:
    # Arrow parses up to 9 fractional digits into ns; ns -> us with safe=False truncates.
    return pc.cast(pc.cast(strings, pa.timestamp("ns", "UTC")), TIMESTAMP, safe=False)


_INT_OR_NONE = frozenset({int, type(None)})


def _ts_text_column(values: Sequence):
    kinds = set(map(type, values))  # in C (a Python loop was 5 % of the conversion)
    if int in kinds:
        if kinds <= _INT_OR_NONE:
            return _ts_us_column(values)
        return _mixed_ts_column(values)
    strings, bad = _as_strings(values)
    n = len(strings)
    if strings.null_count == n:
        return pa.nulls(n, TIMESTAMP), bad
    first = next(v for v in values if isinstance(v, str))
    guess = _iso_to_ts if ":" in first else _epoch_to_ts
    try:
        return guess(strings), bad
    except _ARROW_ERRORS:
        pass
    # Mixed forms (v1 and v2 rows in one batch) or bad values: convert each form on its own
    # rows, then put the results back in place.
    is_iso = pc.fill_null(pc.match_substring(strings, ":"), False)
    out = pa.nulls(n, TIMESTAMP)
    failed: list[int] = []
    for mask, convert in ((is_iso, _iso_to_ts), (pc.invert(is_iso), _epoch_to_ts)):
        mask = pc.and_(mask, pc.is_valid(strings))
        positions = pc.indices_nonzero(mask)
        if len(positions) == 0:
            continue
        part, part_bad = _convert_isolating(strings.filter(mask), convert, TIMESTAMP)
        out = pc.replace_with_mask(out, mask, part)
        failed += [positions[i].as_py() for i in part_bad]
    failed.sort()
    bad += [(i, _shown(strings[i].as_py()), "not a timestamp") for i in failed]
    return out, bad


def _mixed_ts_column(values: Sequence):
    """Integer microseconds and text in one column: each kind converted on its own rows."""
    as_int = [v if type(v) is int else None for v in values]
    as_text = [None if type(v) is int else v for v in values]
    ints, bad_int = _ts_us_column(as_int)
    texts, bad_text = _ts_text_column(as_text)
    mask = pa.array([type(v) is int for v in values])
    return pc.if_else(mask, ints, texts), sorted(bad_int + bad_text)


def _ts_us_column(values: Sequence):
    arr, bad = _int_column(values, pa.int64())
    return arr.view(TIMESTAMP), bad


# --- plain scalars ----------------------------------------------------------------------------


def _int_column(values: Sequence, typ: pa.DataType):
    # Inferring first (instead of pa.array(values, typ)) is what catches a float: pyarrow
    # would quietly turn 1.5 into 1 when told the target is an integer type.
    try:
        arr = pa.array(values)
        if pa.types.is_integer(arr.type) or pa.types.is_null(arr.type):
            return pc.cast(arr, typ), []
    except _ARROW_ERRORS:
        pass
    return _per_value(values, typ, lambda v: type(v) is int)


def _bool_column(values: Sequence):
    try:
        arr = pa.array(values)
        if pa.types.is_boolean(arr.type) or pa.types.is_null(arr.type):
            return arr.cast(pa.bool_()), []
    except _ARROW_ERRORS:
        pass
    return _per_value(values, pa.bool_(), lambda v: type(v) is bool)


def _per_value(values: Sequence, typ: pa.DataType, accept: Callable[[object], bool]):
    clean: list[object] = []
    bad: list[tuple[int, str, str]] = []
    for i, v in enumerate(values):
        ok = v is None
        if not ok and accept(v):
            try:
                pa.scalar(v, typ)
                ok = True
            except _ARROW_ERRORS:
                pass
        clean.append(v if ok else None)
        if not ok:
            bad.append((i, _shown(v), f"not {typ}"))
    return pa.array(clean, typ), bad


# Kinds whose one repeated value can be stored as is: exactly that Python type, and no
# conversion beyond range (checked by building the scalar).
_REPEATABLE = {"str": str, "text": str, "bool": bool, "int64": int, "int32": int, "uint32": int}


def _one_value(kind: str, typ: pa.DataType, values: Sequence) -> pa.Array | None:
    """The column when every value is the same None, text, bool or int (a batch's exchange,
    depth, republish flag, a sequence Kraken does not have): built in Arrow at once, not
    converted value by value. None when the column varies or needs its full conversion."""
    n = len(values)
    if n < 2:
        return None
    first = values[0]
    # Two probes first, so a column of many values does not pay for the full count.
    if values[-1] != first or values[n >> 1] != first:
        return None
    if first is None:
        if values.count(None) == n:
            return pa.nulls(n, typ)
        return None
    if first.__class__ is not _REPEATABLE.get(kind) or values.count(first) != n:
        return None
    try:
        scalar = pa.scalar(first, typ)
    except _ARROW_ERRORS:
        return None  # out of range: the full conversion reports it
    # count() compares with ==: 1 == True, so check the types of what it matched.
    if first.__class__ is not str and set(map(type, values)) != {first.__class__}:
        return None
    return pa.repeat(scalar, n)


def _column(kind: str, typ: pa.DataType, values: Sequence):
    same = _one_value(kind, typ, values)
    if same is not None:
        return same, []
    if kind == "str":
        return _as_strings(values)
    if kind == "text":
        return _as_id_text(values)
    if kind in ("price", "qty", "wide", "fee"):
        return _decimal_column(values, typ)
    if kind == "ts_text":
        return _ts_text_column(values)
    if kind == "ts_us":
        return _ts_us_column(values)
    if kind == "bool":
        return _bool_column(values)
    return _int_column(values, typ)


# --- public API -------------------------------------------------------------------------------


def columns_to_batch(
    table: str, columns: Sequence[Sequence], *, row_numbers: Sequence[int] | None = None
) -> tuple[pa.RecordBatch, list[Problem]]:
    """Convert one list per column (schema order) into a batch of ``arrow_schema(table)``.

    ``row_numbers`` maps positions back to the caller's row indices in problem reports.
    """
    spec = TABLES[table]
    schema = arrow_schema(table)
    if len(columns) != len(spec):
        raise ValueError(f"{table}: expected {len(spec)} columns, got {len(columns)}")
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise ValueError(f"{table}: columns of different lengths {sorted(lengths)}")
    arrays = []
    problems: list[Problem] = []
    for col, field, values in zip(spec, schema, columns, strict=True):
        arr, bad = _column(col.kind, field.type, values)
        arrays.append(arr)
        for i, text, reason in bad:
            row = row_numbers[i] if row_numbers is not None else i
            problems.append(Problem(table, col.name, row, text, reason))
    problems.sort(key=lambda p: p.row)
    return pa.RecordBatch.from_arrays(arrays, schema=schema), problems


def rows_to_batch(table: str, rows: Sequence[tuple]) -> tuple[pa.RecordBatch, list[Problem]]:
    """Convert row tuples (schema column order) into a batch of ``arrow_schema(table)``.

    A row of the wrong length cannot be placed column by column; it is left out of the batch
    and reported whole (column ``"*"``) rather than shifted into the wrong columns.
    """
    width = len(TABLES[table])
    if not rows:
        return _empty(table), []
    columns = _transpose(rows, width)
    if columns is not None:
        return columns_to_batch(table, columns)
    good = [i for i, r in enumerate(rows) if isinstance(r, tuple | list) and len(r) == width]
    good_set = set(good)
    problems = [
        Problem(table, "*", i, _shown(r), f"row is not a {width}-tuple")
        for i, r in enumerate(rows)
        if i not in good_set
    ]
    if good:
        columns = list(zip(*(rows[i] for i in good), strict=True))
        batch, more = columns_to_batch(table, columns, row_numbers=good)
    else:
        batch, more = _empty(table), []
    return batch, sorted(problems + more, key=lambda p: p.row)


_ROW_TYPES = frozenset({tuple, list})


def _transpose(rows: Sequence, width: int) -> list[list] | None:
    """One list per column, or None unless every row is a ``width``-long tuple or list.

    The rows are flattened in one pass, then each column is a strided slice of that list:
    ``zip(*rows)`` visits every row once per column, and rows made one by one over a tenth
    of a second lie scattered in memory, so that was 60 % of the whole conversion.
    """
    if not set(map(type, rows)) <= _ROW_TYPES or set(map(len, rows)) != {width}:
        return None
    flat = list(chain.from_iterable(rows))
    return [flat[i::width] for i in range(width)]


def _empty(table: str) -> pa.RecordBatch:
    schema = arrow_schema(table)
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
