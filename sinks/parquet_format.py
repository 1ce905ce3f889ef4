"""How a table is laid out inside a Parquet file: compression, encodings, metadata.

Chosen by measurement (``python -m sinks.bench``, docs/storage.md): dictionary pages only on
low-cardinality strings (dictionaries on prices and timestamps cost speed and size), delta
encoding on timestamps and ids (they grow slowly), prices stored as plain INT64 (zstd does
better with them than delta or byte-stream-split: prices of several pairs interleave).
Byte-stream-split on the 16-byte decimals saved 7% of their size, but DuckDB 2.0 cannot read
it on FIXED_LEN_BYTE_ARRAY columns, so they stay PLAIN.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recorder.core import schema as _schema
from recorder.core.schema import TABLES, arrow_schema

COMPRESSION = "zstd"
COMPRESSION_LEVEL = 1
META_PREFIX = "market_recorder."
# Bumped when the sink changes how it writes (layout, encodings, metadata keys).
FORMAT_VERSION = "1"


def recorder_version() -> str:
    try:
        from importlib.metadata import version

        return version("market-recorder")
    except Exception:  # noqa: BLE001 - an uninstalled checkout still records
        return "0+unknown"


def schema_fingerprint(table: str) -> str:
    """Changes whenever a column is added, renamed or retyped: lets a reader tell layouts
    apart even if nobody remembered to bump a version number."""
    spec = " ".join(f"{c.name}:{c.kind}" for c in TABLES[table])
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def file_metadata(table: str, **extra: str) -> dict[str, str]:
    """Key-value metadata every file carries. Only facts about the data: never the
    environment, the command line or credentials."""
    meta = {
        "recorder_version": recorder_version(),
        "format_version": FORMAT_VERSION,
        "table": table,
        "schema_version": str(getattr(_schema, "SCHEMA_VERSION", 1)),
        "schema_fingerprint": schema_fingerprint(table),
        **extra,
    }
    return {META_PREFIX + k: v for k, v in meta.items()}


def read_file_metadata(path: Path) -> dict[str, str]:
    raw = pq.read_schema(path).metadata or {}
    out = {}
    for k, v in raw.items():
        key = k.decode()
        if key.startswith(META_PREFIX):
            out[key[len(META_PREFIX) :]] = v.decode()
    return out


def writer_options(table: str, names: list[str]) -> dict:
    """Options for the columns ``names`` of ``table`` (a file may predate a new column)."""
    kinds = {c.name: c.kind for c in TABLES[table]}
    dictionary: list[str] = []
    encoding: dict[str, str] = {}
    for name in names:
        kind = kinds.get(name)
        if kind == "str":
            dictionary.append(name)
        elif kind in ("ts_text", "ts_us", "int64", "int32"):
            encoding[name] = "DELTA_BINARY_PACKED"
    return {
        "compression": COMPRESSION,
        "compression_level": COMPRESSION_LEVEL,
        "use_dictionary": dictionary,
        "column_encoding": encoding,
        # Decimals of precision <= 18 become INT64: smaller, and faster for DuckDB to sum.
        "store_decimal_as_integer": True,
        "write_statistics": True,
    }


def parquet_writer(
    where: str | Path,
    table: str,
    metadata: dict[str, str] | None = None,
    schema: pa.Schema | None = None,
) -> pq.ParquetWriter:
    """A writer for ``table``; ``schema`` defaults to the current one (a journal segment
    written by an older version brings its own)."""
    schema = (schema or arrow_schema(table)).with_metadata(metadata or file_metadata(table))
    return pq.ParquetWriter(str(where), schema, **writer_options(table, schema.names))
