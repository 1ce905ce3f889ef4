"""Rows built by column name for the sink tests."""

from __future__ import annotations

from datetime import datetime

from recorder.core.schema import TABLES


def row(table: str, **values: object) -> tuple:
    values.setdefault("exchange", "kraken")
    return tuple(values.get(c.name) for c in TABLES[table])


def us(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond
