"""Small recorded datasets for the query, export, rebuild and report tests (real sink)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import typer
from typer.testing import CliRunner

from recorder.cli.query import book, catalog, export, query, report
from recorder.core.schema import make_row
from sinks.parquet_sink import ParquetSink

DAY = 86_400_000_000


HOUR = 3_600_000_000


T0 = 1_795_000_000_000_000 // DAY * DAY  # 2026-11-18 00:00 UTC


def us(text: str) -> int:
    d = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(d.timestamp()) * 1_000_000 + d.microsecond


def trade(symbol: str, t: int, price: str, qty: str, side: str = "buy", tid: int = 0,
          tx: int | None = None) -> tuple:
    tx = t - 1000 if tx is None else tx
    return make_row("trades", exchange="kraken", symbol=symbol,
                    ts_exchange=f"{tx // 1_000_000}.{tx % 1_000_000:06d}", ts_recv=t,
                    price=price, qty=qty, side=side, trade_id=tid, ord_type="limit",
                    source="ws")


def write(root: Path, rows: dict[str, list[tuple]], exchange: str = "kraken", **kw) -> None:
    kw.setdefault("source", "test")
    with ParquetSink(root, exchange, **kw) as sink:
        for table, r in rows.items():
            sink.write(table, r)


def run(*args: str):  # noqa: ANN201
    return CliRunner().invoke(cli(), list(args))


S = 1_000_000


D = Decimal


def level(t: int, uid: int, side: str, price: str, qty: str, snap: bool = False,
          verified: bool | None = True, symbol: str = "BTC/USD", depth: int = 3) -> tuple:
    tx = t - 500
    return make_row("book", exchange="kraken", symbol=symbol,
                    ts_exchange=f"{tx // S}.{tx % S:06d}", ts_recv=t, side=side, price=price,
                    qty=qty, is_snapshot=snap, update_id=uid, republish=False, depth=depth,
                    verified=verified)


# One day before midnight and the next day after it, so the last snapshot is found in an
# older date partition.
M1 = T0 + DAY - 10 * S


def scenario() -> list[tuple]:
    t = M1
    return [
        # 1: snapshot, depth 3
        *[level(t, 1, "ask", p, "1", True) for p in ("101", "102", "103")],
        *[level(t, 1, "bid", p, "1", True) for p in ("99", "98", "97")],
        # 2: a better ask pushes 103 out of scope (no delete is sent for it)
        level(t + 1 * S, 2, "ask", "100.5", "1"),
        # 3: the better ask goes; 103 must not come back by itself
        level(t + 2 * S, 3, "ask", "100.5", "0"),
        # 4: Kraken republishes the level that came into scope
        level(t + 3 * S, 4, "ask", "103.5", "2"),
        # 5: a checksum mismatch: the book is known wrong until the resync
        level(t + 4 * S, 5, "bid", "99", "5", verified=False),
        # 6 (next day): the resync snapshot restarts the book
        level(T0 + DAY + 5 * S, 6, "ask", "200", "3", True),
        level(T0 + DAY + 5 * S, 6, "bid", "150", "4", True),
        # 7: two rows of one message at the same price: file order, the last one wins
        level(T0 + DAY + 6 * S, 7, "bid", "151", "1"),
        level(T0 + DAY + 6 * S, 7, "bid", "151", "2.5"),
        # another symbol's rows in between change nothing
        level(T0 + DAY + 6 * S, 8, "bid", "1", "1", True, symbol="ETH/USD"),
        level(T0 + DAY + 6 * S, 8, "ask", "2", "1", True, symbol="ETH/USD"),
    ]


def cli() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    for fn in (query, catalog, export, book, report):
        app.command(fn.__name__)(fn)
    return app
