"""`make bench`: the recorder against its ceiling, in one run, on loopback.

1. bare websocket-client receive loop on the simulator's --speed max stream: the ceiling;
2. the naive way of Kraken's sample client (default settings, print every frame);
3. `recorder run` end to end (receive, parse, normalise, verify checksums, journal, Parquet):
   msgs/s, rows/s, CPU seconds per million messages, peak RSS, bytes on disk per row
   against raw JSON and zstd-compressed JSONL;
4. latency from the simulator's send to journaled and to queryable (p50, p99);
5. DuckDB over recorded-format data: VWAP per symbol per minute over 10M trades, and one
   symbol over one hour;
and, for reference, the simulator's own --speed max rate (bench/sim_rate.py) and a book
rebuild at the end of a long recording with and without checkpoints (bench/rebuild_bench.py).

The figures that count are ratios against (1), measured in the same run. Results go to
bench/results.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recorder.analysis.query import connect  # noqa: E402
from recorder.core.config import load_config  # noqa: E402
from recorder.exchanges.kraken.feed import public_feed  # noqa: E402
from recorder.simulator.testing import SimulatorProcess  # noqa: E402

OUT = ROOT / "bench" / "out"
PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD"]
LATENCY_RATE = 5000  # msg/s, a busy minute on Kraken for four pairs
# "On one core of this 2-core machine": the clients and the recorder share core 0, the
# simulator has core 1 to itself, so the simulator never competes with what is measured.
RECORDER_CORE, SIMULATOR_CORE = 0, 1


def _config(path: Path, url: str, raw: bool = False) -> Path:
    pairs = json.dumps(PAIRS)
    path.write_text(
        f'[exchange]\nname = "kraken"\napi = "v2"\nurl = "{url}"\n\n'
        f'[output]\nraw = {str(raw).lower()}\n\n'
        f'[[subscribe]]\nchannel = "book"\nsymbols = {pairs}\ndepth = 10\n\n'
        f'[[subscribe]]\nchannel = "trade"\nsymbols = {pairs}\n')
    return path


def _client(mode: str, url: str, n: int, requests: list[str], sample: Path | None) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "clients.py"), mode, url, str(n),
           str(sample) if sample else "-", *requests]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          preexec_fn=_pinned(RECORDER_CORE),
                          timeout=600, check=True)
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    result["msgs_per_s"] = result["frames"] / result["seconds"]
    result["cpu_s_per_million"] = result["cpu_seconds"] / result["frames"] * 1e6
    return result


def _pin(pid: int | None, core: int) -> None:
    """Pin every thread of a process (and what it starts later) to one core."""
    if pid is None or not hasattr(os, "sched_setaffinity") or core >= (os.cpu_count() or 1):
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {core})


def _pinned(core: int):  # noqa: ANN202
    """A preexec_fn: the child and everything it starts run on one core."""
    def pin() -> None:
        if hasattr(os, "sched_setaffinity") and core < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {core})
    return pin


def _sample_rss(pid: int, peak: dict[str, int], stop: threading.Event) -> None:
    """Peak RSS of the whole tree (supervisor + collectors, summed at each sample) and of
    its largest single process."""
    try:
        root = psutil.Process(pid)
        while not stop.is_set():
            sizes = []
            for p in [root, *root.children(recursive=True)]:
                try:
                    sizes.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            peak["tree"] = max(peak["tree"], sum(sizes))
            peak["process"] = max(peak["process"], max(sizes, default=0))
            stop.wait(0.05)
    except psutil.Error:
        pass


def _recorder(config: Path, data: Path, seconds: float) -> dict:
    """Run `recorder run` as a child on RECORDER_CORE; return its CPU and peak RSS."""
    cmd = [sys.executable, "-m", "recorder", "run", str(config), "--data", str(data),
           "--duration", str(seconds), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_pinned(RECORDER_CORE))
    peak, stop = {"tree": 0, "process": 0}, threading.Event()
    sampler = threading.Thread(target=_sample_rss, args=(proc.pid, peak, stop), daemon=True)
    sampler.start()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"recorder exited with {proc.returncode}")
    # wait4's ru_maxrss covers the largest process of the tree, never the sum: the sampler's
    # tree total is the figure that counts against the target.
    largest = max(usage.ru_maxrss * 1024, peak["process"])
    return {"cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": max(peak["tree"], largest) / 2**20,
            "peak_process_rss_mb": largest / 2**20}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.parquet"))


def measure_e2e(url: str, seconds: float, sample: Path) -> dict:
    data = OUT / "e2e"
    shutil.rmtree(data, ignore_errors=True)
    usage = _recorder(_config(OUT / "e2e.toml", url), data, seconds)
    con = connect(data)
    frames = sum(json.loads(d)["frames"] for (d,) in con.execute(
        "SELECT detail FROM events WHERE kind = 'stopped'").fetchall())
    book_rows, first_b, last_b = con.execute(
        "SELECT count(*), epoch_us(min(ts_recv)), epoch_us(max(ts_recv)) FROM book").fetchone()
    trade_rows, first_t, last_t = con.execute(
        "SELECT count(*), epoch_us(min(ts_recv)), epoch_us(max(ts_recv)) FROM trades"
    ).fetchone()
    bad = con.execute("SELECT count(*) FROM book WHERE verified IS NOT true").fetchone()[0]
    verified = con.execute("SELECT count(DISTINCT update_id) FROM book WHERE verified"
                           ).fetchone()[0]
    span = (max(last_b, last_t) - min(first_b, first_t)) / 1e6
    rows = book_rows + trade_rows
    disk = _dir_bytes(data / "book") + _dir_bytes(data / "trades")
    text = sample.read_bytes()
    lines = text.count(b"\n") + 1
    zstd = len(pa.compress(text, codec="zstd", asbytes=True))
    rows_per_frame = rows / frames
    return {
        "msgs_per_s": frames / span, "rows_per_s": rows / span, "frames": frames,
        "rows": rows, "book_rows": book_rows, "trade_rows": trade_rows,
        "checksums_verified": verified, "unverified_book_rows": bad,
        "cpu_s_per_million": usage["cpu_seconds"] / frames * 1e6,
        "peak_rss_mb": usage["peak_rss_mb"],
        "peak_process_rss_mb": usage["peak_process_rss_mb"], "bytes_per_row": disk / rows,
        "json_bytes_per_row": len(text) / lines / rows_per_frame,
        "jsonl_zstd_bytes_per_row": zstd / lines / rows_per_frame,
    }


def measure_latency(seconds: float) -> dict:
    """Realtime synthetic feed; a probe watches the journal and the query views."""
    from sinks.journal_readers import pending_batches

    data = OUT / "latency"
    shutil.rmtree(data, ignore_errors=True)
    journaled: dict[int, float] = {}
    queryable: dict[int, float] = {}
    sent: dict[int, float] = {}
    with SimulatorProcess(["--pairs", ",".join(PAIRS), "--rate", str(LATENCY_RATE), "--seed",
                           "3"]) as sim:
        cfg = _config(OUT / "latency.toml", sim.urls["ws_v2"], raw=True)
        proc = subprocess.Popen([sys.executable, "-m", "recorder", "run", str(cfg), "--data",
                                 str(data), "--duration", str(seconds), "--log-level",
                                 "warning"], cwd=ROOT)
        while proc.poll() is None:
            now = time.time()
            for table in pending_batches(data, "trades"):
                ids = table.column("trade_id").to_pylist()
                ts = pc.cast(table.column("ts_exchange"), pa.int64()).to_pylist()
                syms = table.column("symbol").to_pylist()
                for sym, tid, t in zip(syms, ids, ts, strict=True):
                    key = hash((sym, tid))
                    if key not in journaled:
                        journaled[key] = now
                        sent[key] = t / 1e6
            try:
                con = connect(data)
                for sym, tid, t in con.execute(
                        "SELECT symbol, trade_id, epoch_us(ts_exchange) FROM trades").fetchall():
                    key = hash((sym, tid))
                    if key not in queryable:
                        queryable[key] = now
                        sent.setdefault(key, t / 1e6)
                con.close()
            except Exception:  # noqa: BLE001 - a file published mid-read; poll again
                pass
            time.sleep(0.05)

    def pct(obs: dict[int, float]) -> tuple[float | None, float | None]:
        lat = np.array([obs[k] - sent[k] for k in obs if k in sent])
        if not len(lat):
            return None, None
        return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))

    j50, j99 = pct(journaled)
    q50, q99 = pct(queryable)
    # The --speed max stream repeats one cycle of frames, which compresses unrealistically
    # well; this realtime random-walk recording gives the honest bytes per row.
    con = connect(data)
    rows = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("book", "trades"))
    disk = _dir_bytes(data / "book") + _dir_bytes(data / "trades")
    text = "\n".join(f for (f,) in con.execute(
        "SELECT frame FROM raw WHERE frame LIKE '{\"channel\":\"book%' "
        "OR frame LIKE '{\"channel\":\"trade%'").fetchall()).encode()
    zstd = len(pa.compress(text, codec="zstd", asbytes=True))
    return {"journaled_p50_s": j50, "journaled_p99_s": j99, "queryable_p50_s": q50,
            "queryable_p99_s": q99, "trades_observed": len(sent), "rows": rows,
            "bytes_per_row": disk / rows if rows else None,
            "json_bytes_per_row": len(text) / rows if rows else None,
            "jsonl_zstd_bytes_per_row": zstd / rows if rows else None}


def measure_verification(repeat: int = 20) -> dict:
    """Cost of the book keeper per update: parse the real v2 capture with and without it."""
    from recorder.capture.book import BookKeeper
    from recorder.exchanges.kraken import v2
    from recorder.exchanges.kraken.book_rule import RULE
    from recorder.exchanges.kraken.common import new_rows

    capture = ROOT.parent / "shared" / "data" / "kraken" / "flashbook" / "live-btc-eth.ndjson"
    if not capture.exists():
        return {}
    frames = [line.encode() for line in capture.read_text().splitlines()
              if line.startswith('{"channel":"book"')]
    depths = {"BTC/USD": 10, "ETH/USD": 10}

    def run(verify: bool) -> float:
        t0 = time.perf_counter()
        for _ in range(repeat):
            out, keeper = new_rows(), BookKeeper(RULE)
            book = out["book"]
            for i, f in enumerate(frames):
                start = len(book)
                v2.parse(v2.decode(f), 0, i, out, book_depths=depths)
                if verify and len(book) > start:
                    keeper.process(book, start)
        return (time.perf_counter() - t0) / (repeat * len(frames))

    parse_only, with_keeper = min(run(False) for _ in range(3)), min(run(True) for _ in range(3))
    return {"updates": len(frames), "parse_us": parse_only * 1e6,
            "verify_us": (with_keeper - parse_only) * 1e6}


def _decimal_from_ticks(ticks: np.ndarray, scale: int, typ: pa.DataType) -> pa.Array:
    """int64 ticks of 10**-scale -> exact decimal128 (no floats, no Python objects)."""
    words = np.empty((len(ticks), 2), dtype=np.int64)
    words[:, 0] = ticks
    words[:, 1] = ticks >> 63
    raw = pa.Array.from_buffers(pa.decimal128(38, scale), len(ticks),
                                [None, pa.py_buffer(words.tobytes())])
    return raw.cast(typ)


def measure_duckdb(n: int) -> dict:
    from recorder.core.schema import arrow_schema
    from sinks.parquet_format import parquet_writer

    root = OUT / "duckdb"
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(1)
    schema = arrow_schema("trades")
    days = 10
    per_day = n // days
    start_us = 1_767_225_600_000_000  # 2026-01-01
    for day in range(days):
        ts = np.sort(rng.integers(0, 86_400_000_000, per_day)) + start_us + day * 86_400_000_000
        sym_idx = rng.integers(0, len(PAIRS), per_day)
        price = (np.array([650_000, 35_000, 1_500, 25])[sym_idx] * 10
                 + rng.integers(-500, 500, per_day))
        qty = rng.lognormal(10, 2, per_day).astype(np.int64) + 1
        batch = pa.table({
            "exchange": pa.array(["kraken"] * per_day),
            "symbol": pa.array(np.array(PAIRS)[sym_idx]),
            "ts_exchange": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "ts_recv": pa.array(ts + 20_000, pa.timestamp("us", tz="UTC")),
            "price": _decimal_from_ticks(price, 1, schema.field("price").type),
            "qty": _decimal_from_ticks(qty, 8, schema.field("qty").type),
            "side": pa.array(np.where(rng.random(per_day) < 0.5, "buy", "sell")),
            "trade_id": pa.array(np.arange(per_day) + day * per_day),
            "ord_type": pa.array(["limit"] * per_day),
            "misc": pa.nulls(per_day, pa.string()),
        }, schema=schema)
        date = time.strftime("%Y-%m-%d", time.gmtime((start_us / 1e6) + day * 86400))
        folder = root / "trades" / "exchange=kraken" / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        # Laid out as `recorder run` writes it: one file per hour (rotate = "1h"), row groups
        # of at most 50,000 rows, the sink's own Parquet settings.
        hour = ((ts - start_us) // 3_600_000_000) % 24
        bounds = np.searchsorted(hour, np.arange(25))
        for h in range(24):
            part = batch.slice(bounds[h], bounds[h + 1] - bounds[h])
            with parquet_writer(folder / f"bench-{h:02d}.parquet", "trades") as w:
                w.write_table(part, row_group_size=50_000)
    con = connect(root)
    timings = {}
    queries = {
        "vwap_per_symbol_minute_s": "SELECT symbol, date_trunc('minute', ts_recv) AS m, "
        "sum(price * qty) / sum(qty), sum(qty), count(*) FROM trades GROUP BY ALL",
        "one_symbol_one_hour_s": "SELECT date_trunc('minute', ts_recv) AS m, "
        "sum(price * qty) / sum(qty) FROM trades WHERE symbol = 'ETH/USD' AND "
        "date = DATE '2026-01-05' AND ts_recv >= TIMESTAMPTZ '2026-01-05 12:00:00+00' "
        "AND ts_recv < TIMESTAMPTZ '2026-01-05 13:00:00+00' GROUP BY ALL",
    }
    for name, sql in queries.items():
        con.execute(sql).fetchall()  # warm the page cache
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            con.execute(sql).fetchall()
            runs.append(time.perf_counter() - t0)
        timings[name] = sorted(runs)[1]
    timings["trades"] = days * per_day
    return timings


def _script(name: str, *args: str) -> dict:
    """Run another bench script (its own processes) and read the JSON it prints last."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / name), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300_000, help="frames per receive run")
    ap.add_argument("--duckdb-rows", type=int, default=10_000_000)
    ap.add_argument("--latency-seconds", type=float, default=12)
    ap.add_argument("--skip", nargs="*", default=[],
                    help="naive, latency, duckdb, simulator, rebuild")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                              "recorder_core": RECORDER_CORE, "simulator_core": SIMULATOR_CORE}}
    with SimulatorProcess(["--pairs", ",".join(PAIRS), "--speed", "max", "--seed", "1"]) as sim:
        _pin(sim.proc.pid, SIMULATOR_CORE)
        url = sim.urls["ws_v2"]
        requests = public_feed(load_config(_config(OUT / "e2e.toml", url)),
                               url).prepare().requests
        print(f"bare receive loop, {args.frames:,} frames ...", flush=True)
        sample = OUT / "sample.jsonl"
        results["bare"] = _client("bare", url, args.frames, requests, sample)
        if "naive" not in args.skip:
            print("naive client (print every frame) ...", flush=True)
            results["naive"] = _client("naive", url, args.frames, requests, None)
        seconds = max(8.0, args.frames / results["bare"]["msgs_per_s"] * 2)
        print(f"recorder run end to end, {seconds:.0f} s ...", flush=True)
        results["e2e"] = measure_e2e(url, seconds, sample)
    if "latency" not in args.skip:
        print(f"latency at {LATENCY_RATE:,} msg/s, {args.latency_seconds:.0f} s ...", flush=True)
        results["latency"] = measure_latency(args.latency_seconds)
    results["verification"] = measure_verification()
    if "simulator" not in args.skip:
        print("simulator --speed max, raw-socket drain ...", flush=True)
        results["simulator"] = _script("sim_rate.py", "--seconds", "3", "--json")
    if "rebuild" not in args.skip:
        print("book rebuild at the end of 5M book rows, with and without checkpoints ...",
              flush=True)
        results["rebuild"] = _script("rebuild_bench.py", "--rows", "5000000")
    if "duckdb" not in args.skip:
        print(f"DuckDB over {args.duckdb_rows:,} trades ...", flush=True)
        results["duckdb"] = measure_duckdb(args.duckdb_rows)
    bare, e2e = results["bare"], results["e2e"]
    results.update({
        "e2e_msgs_per_s": e2e["msgs_per_s"], "bare_msgs_per_s": bare["msgs_per_s"],
        "ratio": e2e["msgs_per_s"] / bare["msgs_per_s"], "peak_rss_mb": e2e["peak_rss_mb"],
        "bytes_per_row": (results.get("latency") or {}).get("bytes_per_row")
        or e2e["bytes_per_row"],
    })
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    _print(results)
    return 0


def _print(r: dict) -> None:
    bare = r["bare"]["msgs_per_s"]
    rows = [("bare websocket-client receive (ceiling)", f"{bare:,.0f} msg/s", "1.00"),]
    if "naive" in r:
        n = r["naive"]["msgs_per_s"]
        rows.append(("naive client, print every frame", f"{n:,.0f} msg/s", f"{n / bare:.2f}"))
    e = r["e2e"]
    rows += [
        ("recorder run end to end", f"{e['msgs_per_s']:,.0f} msg/s", f"{r['ratio']:.2f}"),
        ("  rows", f"{e['rows_per_s']:,.0f} rows/s", ""),
        ("  CPU per million messages", f"{e['cpu_s_per_million']:.2f} s",
         f"{e['cpu_s_per_million'] / r['bare']['cpu_s_per_million']:.2f}"),
        ("  peak RSS, supervisor + collector", f"{e['peak_rss_mb']:.0f} MB", ""),
        ("  peak RSS, largest process", f"{e['peak_process_rss_mb']:.0f} MB", ""),
        ("  bytes per row on disk (cycled max-speed stream)", f"{e['bytes_per_row']:.1f} B", ""),
        ("  bytes per row on disk (realtime random walk)", f"{r['bytes_per_row']:.1f} B", ""),
        ("  raw JSON per row (cycled)", f"{e['json_bytes_per_row']:.1f} B",
         f"{e['json_bytes_per_row'] / e['bytes_per_row']:.1f}x"),
        ("  zstd JSONL per row (cycled)", f"{e['jsonl_zstd_bytes_per_row']:.1f} B",
         f"{e['jsonl_zstd_bytes_per_row'] / e['bytes_per_row']:.1f}x"),
        ("  checksums verified / unverified rows",
         f"{e['checksums_verified']:,} / {e['unverified_book_rows']:,}", ""),
    ]
    v = r.get("verification")
    if v:
        share = v["verify_us"] / (e["cpu_s_per_million"])  # µs per msg / µs per msg
        rows.append(("  book checksum verification per update", f"{v['verify_us']:.2f} µs",
                     f"{share:.2f}"))
    if "latency" in r:
        lat = r["latency"]
        if lat.get("json_bytes_per_row"):
            b = lat["bytes_per_row"]
            rows.append(("  raw JSON per row (realtime)", f"{lat['json_bytes_per_row']:.1f} B",
                         f"{lat['json_bytes_per_row'] / b:.1f}x"))
            rows.append(("  zstd JSONL per row (realtime)",
                         f"{lat['jsonl_zstd_bytes_per_row']:.1f} B",
                         f"{lat['jsonl_zstd_bytes_per_row'] / b:.1f}x"))
        for what in ("journaled", "queryable"):
            p50, p99 = lat[f"{what}_p50_s"], lat[f"{what}_p99_s"]
            if p50 is not None:
                rows.append((f"latency send -> {what} p50 / p99", f"{p50:.2f} / {p99:.2f} s",
                             ""))
    if "duckdb" in r:
        d = r["duckdb"]
        rows.append((f"DuckDB VWAP/symbol/minute, {d['trades']:,} trades",
                     f"{d['vwap_per_symbol_minute_s']:.2f} s", ""))
        rows.append(("DuckDB one symbol, one hour", f"{d['one_symbol_one_hour_s'] * 1000:.1f} ms",
                     ""))
    rb = r.get("rebuild")
    if rb:
        for how in ("without_checkpoints", "with_checkpoints"):
            rows.append((f"book_at after {rb['rows']:,} book rows, {how.replace('_', ' ')}",
                         f"{rb[how]['seconds']:.2f} s, {rb[how]['peak_rss_mb']:.0f} MB", ""))
    for version, sim in sorted((r.get("simulator") or {}).items()):
        rows.append((f"simulator --speed max ({version}, raw drain)",
                     f"{sim['msg_per_s']:,.0f} msg/s", f"{sim['msg_per_s'] / bare:.1f}"))
    width = max(len(a) for a, _, _ in rows)
    print()
    print(f"{'measure':<{width}}  {'value':>22}  {'ratio':>6}")
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:>22}  {c:>6}")
    print("\nresults: bench/results.json")


if __name__ == "__main__":
    raise SystemExit(main())
