"""Rebuild cost with and without book checkpoints: ``book_at`` at the end of a long recording.

A synthetic recording of one symbol (``--rows`` book rows, one update per message at
``--rate`` rows/s of recorded time, one exchange snapshot at the start, a checkpoint every
``--checkpoint`` seconds as the collector writes them) is written with the real
``ParquetSink``; then ``book_at`` one microsecond after the last row runs in a fresh process
twice, once folding from the snapshot (``checkpoints=False``) and once from the latest
checkpoint, each reporting its seconds and peak RSS. The two books must be equal.

    python bench/rebuild_bench.py [--rows 5000000] [--depth 25] [--rate 100]
                                  [--checkpoint 60] [--data DIR] [--keep]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SYMBOL = "BTC/USD"
S = 1_000_000
T0 = 1_795_000_000_000_000  # 2026-11-18T18:13:20Z


def generate(data: Path, rows: int, depth: int, rate: float, checkpoint_s: float,
             seed: int = 5) -> dict:
    """Write the recording; returns its shape."""
    from recorder.capture.book import _Side
    from recorder.core.schema import make_row
    from sinks.parquet_sink import ParquetSink

    rng = random.Random(seed)
    # No checksum text per level: this book only orders levels and cuts the depth.
    asks, bids = _Side(1.0), _Side(-1.0)
    step = round(S / rate)
    mid = 500_000  # in 0.1 ticks: 50000.0
    t, uid = T0, 1
    book: list[tuple] = []
    checkpoints = 0

    def row(side: str, price: str, qty: str, snap: bool) -> tuple:
        tx = t - 800
        return make_row("book", exchange="kraken", symbol=SYMBOL,
                        ts_exchange=f"{tx // S}.{tx % S:06d}", ts_recv=t, side=side, price=price,
                        qty=qty, is_snapshot=snap, update_id=uid, republish=False, depth=depth,
                        verified=True)

    def price_text(tick: int) -> str:
        return f"{tick // 10}.{tick % 10}"

    with ParquetSink(data, "kraken", source="bench", rotate_seconds=3600) as sink:
        for i in range(depth):
            for side, tick in ((asks, mid + 1 + i), (bids, mid - i)):
                p, q = price_text(tick), f"{rng.randrange(1, 900) / 100:.8f}"
                side.apply(p, q)
                book.append(row("ask" if side is asks else "bid", p, q, True))
        next_cp = t + round(checkpoint_s * S)
        written = len(book)
        while written < rows:
            t += step
            uid += 1
            is_ask = rng.random() < 0.5
            tick = rng.randrange(0, depth + 10)
            p = price_text(mid + 1 + tick if is_ask else mid - tick)
            q = "0.00000000" if rng.random() < 0.25 else f"{rng.randrange(1, 900) / 100:.8f}"
            side = asks if is_ask else bids
            side.apply(p, q)
            side.truncate(depth)
            book.append(row("ask" if is_ask else "bid", p, q, False))
            written += 1
            if t >= next_cp:
                # What BookKeeper.checkpoint_rows() writes for this book.
                n = len(asks.keys) + len(bids.keys)
                cps = [("kraken", SYMBOL, t, uid, depth, name, price, qty, n)
                       for name, s in (("ask", asks), ("bid", bids))
                       for price, qty in s.ordered()]
                sink.write("book_checkpoints", cps)
                checkpoints += 1
                next_cp = t + round(checkpoint_s * S)
            if len(book) >= 100_000:
                sink.write("book", book)
                book = []
        if book:
            sink.write("book", book)
    return {"rows": written, "checkpoints": checkpoints, "first_us": T0, "last_us": t}


def measure(data: Path, at_us: int, checkpoints: bool) -> dict:
    """One book_at in this process: seconds, peak RSS, and the book as text."""
    from recorder.analysis.dataset import open_dataset, to_datetime
    from recorder.analysis.rebuild import start_point

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    ds = open_dataset(data)
    book = ds.book(SYMBOL, to_datetime(at_us), depth=25, checkpoints=checkpoints)
    seconds = time.perf_counter() - t0
    start = start_point(ds, SYMBOL, at_us, checkpoints=checkpoints)
    return {
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mb": round(base_rss / 1024, 1),
        "started_from": start.kind if start else None,
        "book": [[str(p), str(q)] for p, q in book.asks + book.bids]
        + [str(book.last_update), str(book.snapshot_at), book.verified],
    }


def _child(data: Path, at_us: int, checkpoints: bool) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--measure", str(data), "--at", str(at_us),
                           "--checkpoints", "yes" if checkpoints else "no"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"rebuild_bench: measuring failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--depth", type=int, default=25)
    ap.add_argument("--rate", type=float, default=100.0, help="book rows per recorded second")
    ap.add_argument("--checkpoint", type=float, default=60.0, help="seconds between checkpoints")
    ap.add_argument("--data", type=Path, help="directory for the recording (default: a temp)")
    ap.add_argument("--keep", action="store_true", help="keep the recording")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--at", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--checkpoints", choices=("yes", "no"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.at, args.checkpoints == "yes")))
        return
    if args.rows < 1000 or args.depth < 1 or args.rate <= 0 or args.checkpoint <= 0:
        raise SystemExit("rebuild_bench: --rows >= 1000, --depth >= 1, --rate and "
                         "--checkpoint > 0")
    tmp = None
    data = args.data
    if data is None:
        tmp = Path(tempfile.mkdtemp(prefix="rebuild_bench."))
        data = tmp / "data"
    elif data.exists() and any(data.iterdir()):
        raise SystemExit(f"rebuild_bench: --data {data} is not empty")
    try:
        t0 = time.perf_counter()
        shape = generate(data, args.rows, args.depth, args.rate, args.checkpoint)
        gen_s = time.perf_counter() - t0
        at = shape["last_us"] + 1
        without = _child(data, at, checkpoints=False)
        with_cp = _child(data, at, checkpoints=True)
        equal = without.pop("book") == with_cp.pop("book")
        print(json.dumps({
            "bench": "rebuild_book_at", "rows": shape["rows"], "depth": args.depth,
            "rate_rows_per_s": args.rate, "recorded_hours": round(
                (shape["last_us"] - shape["first_us"]) / 3.6e9, 2),
            "checkpoint_s": args.checkpoint, "checkpoints": shape["checkpoints"],
            "generate_s": round(gen_s, 1), "without_checkpoints": without,
            "with_checkpoints": with_cp,
            "speedup": round(without["seconds"] / max(with_cp["seconds"], 1e-6), 1),
            "equal": equal,
        }))
        if not equal:
            raise SystemExit(1)
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif args.keep:
            print(f"kept {data}", file=sys.stderr)


if __name__ == "__main__":
    main()
