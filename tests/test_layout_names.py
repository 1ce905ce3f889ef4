"""File names tell the time span and the source; readers take them apart with one parser."""

from __future__ import annotations

from sinks.layout import parquet_name, parse_parquet_name
from tests.datasets import T0


def test_names_round_trip_with_the_collision_suffix():
    name = parquet_name(T0, T0 + 59_000_000, "job-public-12345", 3)
    assert name == "20261118T000000Z-20261118T000059Z-job-public-12345-0003.parquet"
    assert parse_parquet_name(name) == ("job-public-12345", 3, 0)
    # finalize adds "-N" when the name is taken: still the same source and segment.
    again = name.replace(".parquet", "-1.parquet")
    assert parse_parquet_name(again) == ("job-public-12345", 3, 1)
    assert parse_parquet_name("renamed-by-hand.parquet") is None
