"""Kraken-shaped synthetic rows, and the measurements quoted in docs/storage.md.

    .venv/bin/python -m sinks.bench [ROWS]

The rows look like the wire: random-walk prices on the pair's tick, 8-decimal lognormal
quantities, v1 epoch text or v2 ISO-8601 exchange times, receive times 1-50 ms later, 8 pairs,
book updates of 1-2 levels with one checksum per message.
"""

from __future__ import annotations

import gc
import math
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

PAIRS = [  # symbol, start price, price decimals
    ("BTC/USD", 64066.7, 1),
    ("ETH/USD", 3120.55, 2),
    ("SOL/USD", 142.37, 2),
    ("XRP/USD", 0.52341, 5),
    ("DOGE/USD", 0.1234567, 7),
    ("ADA/EUR", 0.384512, 6),
    ("LTC/USD", 81.23, 2),
    ("ETH/BTC", 0.05123, 5),
]
START_US = 1_795_000_000_000_000  # 2026-11-18


def _ts_text(us: int, iso: bool) -> str:
    if iso:
        return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


class _Walk:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ticks = [round(p * 10**d) for _, p, d in PAIRS]

    def step(self, k: int) -> int:
        self.ticks[k] = max(1, self.ticks[k] + self.rng.choice((-2, -1, 0, 0, 1, 2)))
        return self.ticks[k]


def _price(ticks: int, decimals: int) -> str:
    return f"{ticks / 10**decimals:.{decimals}f}"


def _qty(rng: random.Random) -> str:
    return f"{math.exp(rng.gauss(-1.0, 2.0)):.8f}"


def trade_rows(n: int, *, seed: int = 1, iso: bool = False, rate: float = 200.0) -> list[tuple]:
    """``n`` trades rows, ``rate`` rows per second on average."""
    rng = random.Random(seed)
    walk = _Walk(rng)
    rows: list[tuple] = []
    us = last_recv = START_US
    trade_id = 90_000_000
    while len(rows) < n:
        us += int(rng.expovariate(rate / 2.1 / 1e6))
        k = rng.randrange(len(PAIRS))
        symbol, _, dec = PAIRS[k]
        recv = last_recv = max(last_recv, us + rng.randint(1_000, 50_000))
        side = rng.choice(("buy", "sell"))
        for _ in range(rng.choice((1, 1, 2, 3))):
            trade_id += 1
            rows.append(
                (
                    "kraken", symbol, _ts_text(us, iso), recv, _price(walk.step(k), dec),
                    _qty(rng), side, trade_id, rng.choice(("limit", "market")), "",
                )
            )  # fmt: skip
    return rows[:n]


def book_rows(n: int, *, seed: int = 2, iso: bool = False, rate: float = 2000.0) -> list[tuple]:
    """``n`` book level rows (updates of 1-2 levels, ~30% deletions)."""
    rng = random.Random(seed)
    walk = _Walk(rng)
    rows: list[tuple] = []
    us = last_recv = START_US
    update_id = 0
    while len(rows) < n:
        us += int(rng.expovariate(rate / 1.7 / 1e6))
        k = rng.randrange(len(PAIRS))
        symbol, _, dec = PAIRS[k]
        mid = walk.step(k)
        recv = last_recv = max(last_recv, us + rng.randint(1_000, 50_000))
        update_id += 1
        checksum = rng.getrandbits(32)
        ts = _ts_text(us, iso)
        for _ in range(rng.choice((1, 1, 2))):
            side = rng.choice(("bid", "ask"))
            level = rng.randint(1, 12) * (-1 if side == "bid" else 1)
            qty = "0.00000000" if rng.random() < 0.3 else _qty(rng)
            rows.append(
                (
                    "kraken", symbol, ts, recv, side, _price(mid + level, dec), qty, False,
                    update_id, checksum, False, 10, True,
                )
            )  # fmt: skip
    return rows[:n]


def _measure_convert(name: str, table: str, rows: list[tuple], chunk: int) -> None:
    from sinks.convert import rows_to_batch

    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(0, len(rows), chunk):
            rows_to_batch(table, rows[i : i + chunk])
        best = min(best, time.perf_counter() - t0)
    print(f"convert {name:<12} {best / len(rows) * 1e9:7.0f} ns/row  chunk={chunk}")


def _measure_parquet(table: str, rows: list[tuple], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sinks.convert import rows_to_batch
    from sinks.parquet_format import parquet_writer

    batches = [rows_to_batch(table, rows[i : i + 16384])[0] for i in range(0, len(rows), 16384)]
    whole = pa.Table.from_batches(batches).combine_chunks()
    path = out / f"{table}.parquet"
    t0 = time.perf_counter()
    with parquet_writer(path, table) as writer:
        for i in range(0, whole.num_rows, 100_000):
            writer.write_table(whole.slice(i, 100_000), row_group_size=100_000)
    secs = time.perf_counter() - t0
    size = path.stat().st_size
    meta = pq.ParquetFile(path).metadata
    cols: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(g).column(c)
            cols[col.path_in_schema] = cols.get(col.path_in_schema, 0) + col.total_compressed_size
    n = whole.num_rows
    print(f"parquet {table:<7} {n / secs / 1e6:5.2f} M rows/s  {size / n:5.1f} B/row")
    print("    " + "  ".join(f"{k}={v / n:.2f}" for k, v in cols.items()))


def _measure_sink(table: str, rows: list[tuple], out: Path) -> None:
    """Rows through the whole sink: write() in 100-row calls, tick() every 1000 calls
    (as a collector would), close() publishing the Parquet file."""
    import resource

    from sinks.parquet_sink import ParquetSink

    root = out / f"sink-{table}"
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    sink = ParquetSink(root, "kraken", source="bench")
    for k, i in enumerate(range(0, len(rows), 100)):
        sink.write(table, rows[i : i + 100])
        if k % 1000 == 0:
            sink.tick()
    t1 = time.perf_counter()
    sink.close()
    secs = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    size = sum(p.stat().st_size for p in root.rglob("*.parquet"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"sink    {table:<7} {len(rows) / secs / 1e6:5.2f} M rows/s end to end "
          f"(write() done after {t1 - t0:.2f} s, close {secs - (t1 - t0):.2f} s, "
          f"{cpu / len(rows) * 1e9:.0f} ns CPU/row), {size / len(rows):.1f} B/row, "
          f"peak RSS {rss:.0f} MiB, blocked {sink.stats()['blocked_seconds']:.2f} s")


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 1_000_000
    trades_v1 = trade_rows(n)
    trades_v2 = trade_rows(n, iso=True)
    book_v1 = book_rows(n)
    # Millions of live row tuples would make every GC pass crawl (performance-baseline §2);
    # a running sink holds at most its queue bound, so keep the GC out of the measurement.
    gc.collect()
    gc.freeze()
    for chunk in (16384, 100_000):
        _measure_convert("trades v1", "trades", trades_v1, chunk)
        _measure_convert("trades v2", "trades", trades_v2, chunk)
        _measure_convert("book v1", "book", book_v1, chunk)
    with tempfile.TemporaryDirectory() as tmp:
        _measure_parquet("trades", trades_v1, Path(tmp))
        _measure_parquet("book", book_v1, Path(tmp))
        _measure_sink("trades", trades_v1, Path(tmp))
        _measure_sink("book", book_v1, Path(tmp))


if __name__ == "__main__":
    main(sys.argv[1:])
