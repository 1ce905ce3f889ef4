"""sinks.convert: rows -> Arrow, exact, with unconvertible values reported and nulled."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from recorder.core.schema import TABLES, arrow_schema
from sinks.convert import columns_to_batch, rows_to_batch
from tests.rows import row, us


def col(batch: pa.RecordBatch, name: str) -> list:
    return batch.column(batch.schema.get_field_index(name)).to_pylist()




def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@pytest.mark.parametrize("table", list(TABLES))
def test_schema_is_exactly_the_contract(table: str) -> None:
    empty, problems = rows_to_batch(table, [])
    assert empty.schema == arrow_schema(table) and empty.num_rows == 0 and problems == []
    batch, problems = rows_to_batch(table, [row(table), row(table)])
    assert batch.schema == arrow_schema(table)
    assert problems == []


def test_decimals_come_back_exactly() -> None:
    prices = ["0.00005100", "64066.76432", "1774.00", "99999999.9999999999", "0", "-0.5",
              "0.0000000001"]
    qtys = ["0.00005100", "999999999999.9999999999", "1", "0.12345678", "5e-8", "1E3", "42."]
    rows = [row("trades", price=p, qty=q, ts_recv=i) for i, (p, q) in
            enumerate(zip(prices, qtys, strict=True))]
    batch, problems = rows_to_batch("trades", rows)
    assert problems == []
    assert col(batch, "price") == [Decimal(p) for p in prices]
    assert col(batch, "qty") == [Decimal(q) for q in qtys]
    assert str(col(batch, "price")[0]) == "0.0000510000"  # same value, scale 10


def test_unconvertible_values_are_nulled_and_reported_never_dropped() -> None:
    rows = [
        row("trades", ts_recv=1, price="1.5", qty="1"),
        row("trades", ts_recv=2, price="0.12345678901", qty="1"),  # 11 decimals
        row("trades", ts_recv=3, price="123456789.5", qty="1"),  # 9 integer digits
        row("trades", ts_recv=4, price="abc", qty=""),
        row("trades", ts_recv=5, price=1.5, qty=7),  # a float lost its digits; an int did not
        row("trades", ts_recv=6, price="2.5", qty="3", trade_id=2.5, side=7),
        row("trades", ts_recv=7, price="2.5", qty="3"),
    ]
    batch, problems = rows_to_batch("trades", rows)
    assert batch.num_rows == len(rows)
    assert col(batch, "price") == [Decimal("1.5"), None, None, None, None, Decimal("2.5"),
                                   Decimal("2.5")]
    assert col(batch, "qty")[4] == Decimal(7)
    found = {(p.row, p.column, p.text) for p in problems}
    assert found == {
        (1, "price", "0.12345678901"), (2, "price", "123456789.5"), (3, "price", "abc"),
        (3, "qty", ""), (4, "price", "1.5"), (5, "trade_id", "2.5"), (5, "side", "7"),
    }
    assert all(p.table == "trades" for p in problems)


def test_many_bad_values_in_a_large_batch() -> None:
    rows = [row("book", ts_recv=i, price=str(i), qty="1", side="bid") for i in range(5000)]
    for i in (0, 17, 2500, 4999):
        rows[i] = row("book", ts_recv=i, price="x", qty="1", side="bid")
    batch, problems = rows_to_batch("book", rows)
    assert [p.row for p in problems] == [0, 17, 2500, 4999]
    prices = col(batch, "price")
    assert prices[1] == Decimal(1) and prices[4998] == Decimal(4998) and prices[17] is None


def test_timestamps_epoch_iso_mixed_and_null() -> None:
    texts = [
        "1618678142.557535",
        "2026-07-07T23:00:03.947173Z",
        "2026-09-25T17:48:26.844359566Z",  # ns: truncated to us, not rounded
        None,
        "1618678142",
        "1618678142.557535999",  # epoch with ns digits: truncated too
        "2026-07-07T23:00:03Z",
        "2026-07-07T23:00:03.5+00:00",
    ]
    batch, problems = rows_to_batch("trades", [row("trades", ts_exchange=t, ts_recv=0)
                                               for t in texts])
    assert problems == []
    assert col(batch, "ts_exchange") == [
        utc("2021-04-17T16:49:02.557535Z"),
        utc("2026-07-07T23:00:03.947173Z"),
        utc("2026-09-25T17:48:26.844359Z"),
        None,
        utc("2021-04-17T16:49:02Z"),
        utc("2021-04-17T16:49:02.557535Z"),
        utc("2026-07-07T23:00:03Z"),
        utc("2026-07-07T23:00:03.5Z"),
    ]
    assert batch.schema.field("ts_exchange").type == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize("texts", [
    ["1618678142.557535"] * 3,
    ["2026-07-07T23:00:03.947173Z"] * 3,
    ["1618678142.557535", "2026-07-07T23:00:03.947173Z", "1618678142.1"],
])
def test_bad_timestamps_are_reported(texts: list[str]) -> None:
    texts = [*texts, "yesterday", "2026-07-07T23:00:03", "1e30", ""]
    batch, problems = rows_to_batch("trades", [row("trades", ts_exchange=t, ts_recv=0)
                                               for t in texts])
    assert [(p.row, p.column) for p in problems] == [(i, "ts_exchange") for i in range(3, 7)]
    values = col(batch, "ts_exchange")
    assert all(v is not None for v in values[:3]) and values[3:] == [None] * 4


def test_ts_us_and_plain_scalars() -> None:
    t = us("2026-11-22T04:00:00.000001Z")
    batch, problems = rows_to_batch("book", [
        row("book", ts_recv=t, checksum=4294967295, update_id=2**62, is_snapshot=True,
            depth=10),
        row("book", ts_recv=t, checksum=-1, update_id="3", is_snapshot=1, depth=2**40),
    ])
    assert col(batch, "ts_recv") == [utc("2026-11-22T04:00:00.000001Z")] * 2
    assert col(batch, "checksum") == [4294967295, None]
    assert col(batch, "update_id") == [2**62, None]
    assert col(batch, "is_snapshot") == [True, None]
    assert col(batch, "depth") == [10, None]
    assert {(p.row, p.column) for p in problems} == {
        (1, "checksum"), (1, "update_id"), (1, "is_snapshot"), (1, "depth")}


def test_malformed_rows_are_reported_whole() -> None:
    good = row("trades", ts_recv=1, price="1")
    batch, problems = rows_to_batch("trades", [good, ("kraken", "BTC/USD"), good + ("x",), good])
    assert batch.num_rows == 2
    assert [(p.row, p.column) for p in problems] == [(1, "*"), (2, "*")]
    assert "BTC/USD" in problems[0].text


def test_columns_interface_matches_rows() -> None:
    rows = [row("spread", ts_recv=i, bid_price="1.1", ask_price="1.2", bid_qty="3",
                ask_qty="4", ts_exchange="1618678142.5") for i in range(10)]
    by_rows, _ = rows_to_batch("spread", rows)
    by_cols, _ = columns_to_batch("spread", [list(c) for c in zip(*rows, strict=True)])
    assert by_rows.equals(by_cols)


def test_one_value_columns_are_the_same_as_converted_one_by_one():
    """A column of one repeated value is built at once; nothing about it may differ from the
    value-by-value conversion, and a value of the wrong type still goes through it."""
    from sinks.convert import rows_to_batch

    n = 50
    base = ("kraken", "BTC/USD", "2026-12-07T00:00:00.000001Z", 1_765_000_000_000_000,
            "bid", "100.5", "0.25", False, 7, 12345, False, 10, None, True)
    same, problems = rows_to_batch("book", [base] * n)
    assert not problems
    varied = [base[:8] + (i,) + base[9:] for i in range(n)]  # update_id varies
    other, _ = rows_to_batch("book", varied)
    for name in ("exchange", "symbol", "republish", "depth", "sequence", "verified"):
        assert same.column(name).type == other.column(name).type
        assert same.column(name).to_pylist() == other.column(name).to_pylist()
    # 1 == True: a repeated int in a bool column is still refused, not stored as true.
    ints, problems = rows_to_batch("book", [base[:10] + (1,) + base[11:]] * n)
    assert ints.column("republish").null_count == n and len(problems) == n
    # Out of range for int32 (depth): reported, not wrapped.
    big, problems = rows_to_batch("book", [base[:11] + (2**40,) + base[12:]] * n)
    assert big.column("depth").null_count == n and {p.column for p in problems} == {"depth"}
