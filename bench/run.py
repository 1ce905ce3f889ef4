"""`make bench`: the recorder against its ceilings and its peer, in one run, on loopback.

Kraken, the simulator's --speed max stream (v2, then v1; book depth 10 and trades, 4 pairs):
1. raw receive: a plain socket drained in 1 MiB chunks, frames split by their headers only:
   the transport's (and the simulator's) limit;
2. the bare websocket-client receive loop: the ceiling of a websocket-client client;
3. the naive way of Kraken's sample client (default settings, print every frame);
4. `recorder run` end to end (receive, parse, normalise, verify checksums, journal, Parquet):
   msgs/s, rows/s, CPU seconds per million messages, peak RSS, bytes on disk per row against
   raw JSON and zstd-compressed JSONL;
5. the peer: cryptofeed 2.4.1 (bench/peer_cryptofeed.py, its own virtual environment) on the
   v1 stream, as shipped and with its book trimmed once per message, against the recorder
   and the bare loop on the same v1 stream;
KuCoin, its simulator's --speed max stream (level2 and match, 2 symbols):
6. raw and bare receive, and `recorder run` end to end with full-depth level2 books synced
   from the signed REST snapshot; again with books of 5,000 levels a side;
and:
7. latency from the simulator's send to journaled and to queryable (p50, p99);
8. DuckDB over recorded-format data: VWAP per symbol per minute over 10M trades, and one
   symbol over one hour;
9. whole-exchange scale (bench/scale.py): 600 Kraken pairs and 1,000 KuCoin pairs at real
   rates, and the memory each additional connection costs;
for reference, the simulator's own --speed max rate (bench/sim_rate.py) and a book rebuild at
the end of a long recording with and without checkpoints (bench/rebuild_bench.py).

Every rate is measured the same way (bench/measure.py): data frames only, the first 20,000
excluded (warm-up), from the 20,000th data frame to the last. The figures that count are
ratios measured in the same run. Results go to bench/results.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import peer_cryptofeed  # noqa: E402
import scale  # noqa: E402
from measure import (  # noqa: E402
    OUT,
    RECORDER_CORE,
    SIMULATOR_CORE,
    WARMUP,
    frame_times,
    pin,
    pinned,
    run_recorder,
    steady_rate,
)

from recorder.analysis.query import connect  # noqa: E402
from recorder.core.config import load_config  # noqa: E402
from recorder.exchanges.kraken.feed import public_feed  # noqa: E402
from recorder.simulator.kucoin.auth import (  # noqa: E402
    DEMO_API_KEY,
    DEMO_API_PASSPHRASE,
    DEMO_API_SECRET,
)
from recorder.simulator.testing import SimulatorProcess  # noqa: E402

PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD"]
KUCOIN_PAIRS = ["BTC-USDT", "ETH-USDT"]
DEEP_LEVELS = 5000  # levels a side of the deep KuCoin book
LATENCY_RATE = 5000  # msg/s, a busy minute on Kraken for four pairs
# The recorder's credentials for the signed full-depth KuCoin snapshot: the simulator's demo
# key, passed through the environment as a user would.
KUCOIN_ENV = {"BENCH_KC_KEY": DEMO_API_KEY, "BENCH_KC_SECRET": DEMO_API_SECRET,
              "BENCH_KC_PASSPHRASE": DEMO_API_PASSPHRASE}


def _config(path: Path, url: str, raw: bool = False, api: str = "v2") -> Path:
    pairs = json.dumps(PAIRS)
    path.write_text(
        f'[exchange]\nname = "kraken"\napi = "{api}"\nurl = "{url}"\n\n'
        f'[output]\nraw = {str(raw).lower()}\n\n'
        f'[[subscribe]]\nchannel = "book"\nsymbols = {pairs}\ndepth = 10\n\n'
        f'[[subscribe]]\nchannel = "trade"\nsymbols = {pairs}\n')
    return path


def _kucoin_config(path: Path, rest: str) -> Path:
    """level2 (full depth: with credentials the snapshot is the signed full book) and match."""
    pairs = json.dumps(KUCOIN_PAIRS)
    path.write_text(
        f'[exchange]\nname = "kucoin"\nrest_url = "{rest}"\n\n'
        '[credentials]\napi_key_env = "BENCH_KC_KEY"\napi_secret_env = "BENCH_KC_SECRET"\n'
        'api_passphrase_env = "BENCH_KC_PASSPHRASE"\n\n'
        f'[[subscribe]]\nchannel = "book"\nsymbols = {pairs}\n\n'
        f'[[subscribe]]\nchannel = "trade"\nsymbols = {pairs}\n')
    return path


def _kucoin_requests() -> list[str]:
    symbols = ",".join(KUCOIN_PAIRS)
    return [json.dumps({"id": i, "type": "subscribe", "topic": f"{topic}:{symbols}",
                        "response": True})
            for i, topic in enumerate(("/market/level2", "/market/match"), 1)]


def _client(mode: str, url: str, seconds: float, requests: list[str],
            sample: Path | None = None) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "clients.py"), mode, url, str(WARMUP),
           str(seconds), str(sample) if sample else "-", *requests]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          preexec_fn=pinned(RECORDER_CORE), timeout=300, check=True)
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    result["msgs_per_s"] = result["frames"] / result["seconds"]
    result["mb_per_s"] = result["bytes"] / result["seconds"] / 1e6
    result["cpu_s_per_million"] = result["cpu_seconds"] / result["frames"] * 1e6
    return result


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.parquet"))


def measure_e2e(name: str, exchange: str, config: Path, seconds: float,
                sample: Path | None = None, env: dict[str, str] | None = None) -> dict:
    """`recorder run` for ``seconds``; the rate rule on the frames it recorded."""
    data = OUT / name
    shutil.rmtree(data, ignore_errors=True)
    run = run_recorder([config], data, seconds,
                       env=None if env is None else {**os.environ, **env})
    sampler = run["sampler"]
    con = connect(data)
    rate = steady_rate(frame_times(con, exchange))
    t_w, t_last = rate["t_warm"], rate["t_last"]
    frames = rate["frames"]
    # Rows of the frames counted (ts_recv after the warm-up frame's).
    w_us = int(t_w * 1e6)
    book_rows, trade_rows = (con.execute(
        f"SELECT count(*) FROM {t} WHERE epoch_us(ts_recv) > {w_us}").fetchone()[0]
        for t in ("book", "trades"))
    all_rows = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                   for t in ("book", "trades"))
    unverified = con.execute("SELECT count(*) FROM book WHERE verified IS NOT true"
                             ).fetchone()[0]
    verified_updates = con.execute("SELECT count(DISTINCT update_id) FROM book WHERE verified"
                                   ).fetchone()[0]
    events = dict(con.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    snapshots = con.execute(
        "SELECT symbol, side, count(*), max(epoch_us(ts_recv)) FROM book WHERE is_snapshot "
        "GROUP BY ALL ORDER BY ALL").fetchall()
    synced_at = max((s[3] for s in snapshots), default=None)
    cpu_w = sampler.cpu_at(t_w)
    out = {
        **{k: rate[k] for k in ("frames", "seconds", "msgs_per_s", "all_frames")},
        "warmup_frames": WARMUP, "rows_per_s": (book_rows + trade_rows) / rate["seconds"],
        "book_rows": book_rows, "trade_rows": trade_rows,
        "unverified_book_rows": unverified, "checksums_verified": verified_updates,
        "events": events,
        "snapshot_levels": {f"{s[0]} {s[1]}": s[2] for s in snapshots},
        # From the start of `recorder run` to the last book snapshot received; the warm-up
        # must end after it (else the rate includes the sync).
        "synced_after_s": None if synced_at is None else synced_at / 1e6 - run["start"],
        "warmup_after_sync": synced_at is None or t_w >= synced_at / 1e6,
        # CPU of the whole tree from the warm-up frame to the last frame (receiving), and to
        # the end of the run (the final journal -> Parquet conversion included), per frame.
        "cpu_s_per_million": (run["cpu_seconds"] - cpu_w) / frames * 1e6,
        "cpu_s_per_million_receiving": (sampler.cpu_at(t_last) - cpu_w) / frames * 1e6,
        # Where the collector's CPU went while receiving, per thread, µs a frame.
        "thread_us_per_frame": {k: v / frames * 1e6
                                for k, v in sampler.thread_split(t_w, t_last).items()},
        "cpu_s_per_million_whole_run": run["cpu_seconds"] / rate["all_frames"] * 1e6,
        "peak_rss_mb": run["peak_rss_mb"], "peak_process_rss_mb": run["peak_process_rss_mb"],
        "rss_while_receiving_mb": max(sampler.rss_between(t_w, t_last), default=0) / 2**20,
        "wall_seconds": run["end"] - run["start"],
    }
    rows = all_rows or 1
    out["bytes_per_row"] = (_dir_bytes(data / "book") + _dir_bytes(data / "trades")) / rows
    if sample is not None and sample.exists():
        text = sample.read_bytes()
        lines = text.count(b"\n") + 1
        zstd = len(pa.compress(text, codec="zstd", asbytes=True))
        rows_per_frame = all_rows / rate["all_frames"]
        out["json_bytes_per_row"] = len(text) / lines / rows_per_frame
        out["jsonl_zstd_bytes_per_row"] = zstd / lines / rows_per_frame
    con.close()
    return out


def measure_cryptofeed(ws: str, rest: str, mode: str, seconds: float) -> dict:
    """The peer in its own environment, pinned like the recorder; peak RSS sampled."""
    from measure import TreeSampler

    cmd = [str(peer_cryptofeed.venv_python()), str(ROOT / "bench" / "peer_cryptofeed.py"),
           "run", "--ws", ws, "--rest", rest, "--pairs", ",".join(PAIRS), "--mode", mode,
           "--warmup", str(WARMUP), "--seconds", str(seconds),
           "--deadline", str(seconds + 8)]
    proc = subprocess.Popen(cmd, cwd=OUT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, preexec_fn=pinned(RECORDER_CORE))
    sampler = TreeSampler(proc.pid).start()
    stdout, _ = proc.communicate(timeout=seconds + 60)
    sampler.stop()
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = max(sampler.peak_tree / 2**20, result["ru_maxrss_mb"])
    n = result["counted_frames"]
    result["cpu_s_per_million"] = result["cpu_seconds"] / n * 1e6 if n else None
    return result


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
            "trade_id": pa.array(np.arange(per_day) + day * per_day).cast(pa.string()),
            "ord_type": pa.array(["limit"] * per_day),
            "misc": pa.nulls(per_day, pa.string()),
            "sequence": pa.nulls(per_day, pa.int64()),
            "source": pa.array(["ws"] * per_day),
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


def _step(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what} ...", flush=True)


def _mean_of(runs: list[dict]) -> dict:
    """Two runs of one client, before and after the recorder's: their mean (the machine is
    shared, and its load drifts)."""
    keys = ("msgs_per_s", "mb_per_s", "cpu_s_per_million")
    out = {k: sum(r[k] for r in runs) / len(runs) for k in keys}
    out["runs"] = runs
    return out


def run_kraken(results: dict, args: argparse.Namespace) -> None:
    sample = OUT / "sample.jsonl"
    with SimulatorProcess(["--pairs", ",".join(PAIRS), "--speed", "max", "--seed", "1"],
                          capture_stderr=True) as sim:
        _pin(sim)
        for api in ("v2", "v1"):
            url = sim.urls[f"ws_{api}"]
            cfg = _config(OUT / f"e2e-{api}.toml", url, api=api)
            requests = public_feed(load_config(cfg), url).prepare().requests
            sfx = "" if api == "v2" else "_v1"
            if api == "v2":
                _step("Kraken v2: raw socket drain")
                results["raw"] = _client("raw", url, args.raw_seconds, requests)
            _step(f"Kraken {api}: bare websocket-client loop")
            bare = [_client("bare", url, args.client_seconds, requests,
                            sample if api == "v2" else None)]
            _step(f"Kraken {api}: recorder run end to end, {args.e2e_seconds:.0f} s")
            results["e2e" + sfx] = measure_e2e(f"e2e-{api}", "kraken", cfg, args.e2e_seconds,
                                               sample if api == "v2" else None)
            if api == "v1" and "cryptofeed" not in args.skip:
                _step(f"cryptofeed {peer_cryptofeed.VERSION} on v1, trimmed once per message")
                results["cryptofeed_trimmed"] = measure_cryptofeed(
                    url, sim.urls["rest"], "trimmed", args.client_seconds + 2)
            _step(f"Kraken {api}: bare websocket-client loop again")
            bare.append(_client("bare", url, args.client_seconds, requests))
            results["bare" + sfx] = _mean_of(bare)
            if api == "v2" and "naive" not in args.skip:
                _step("Kraken v2: naive client (print every frame)")
                results["naive"] = _client("naive", url, args.client_seconds, requests)
        if "cryptofeed" not in args.skip:
            _step(f"cryptofeed {peer_cryptofeed.VERSION} on v1, as shipped")
            results["cryptofeed_shipped"] = measure_cryptofeed(
                sim.urls["ws_v1"], sim.urls["rest"], "shipped", args.client_seconds + 2)


def _pin(sim: SimulatorProcess) -> None:
    pin(sim.proc.pid if sim.proc else None, SIMULATOR_CORE)


def run_kucoin(results: dict, args: argparse.Namespace, levels: int | None) -> None:
    key = "kucoin" if levels is None else "kucoin_deep"
    env = None if levels is None else {**os.environ,
                                       "RECORDER_SIM_KUCOIN_BOOK_LEVELS": str(levels)}
    with SimulatorProcess(["--pairs", ",".join(KUCOIN_PAIRS), "--speed", "max", "--seed", "1"],
                          exchange="kucoin", capture_stderr=True, env=env) as sim:
        _pin(sim)
        rest = sim.urls["rest"]
        requests = _kucoin_requests()
        what = "KuCoin" if levels is None else f"KuCoin, {levels:,} levels a side"
        if levels is None:
            _step(f"{what}: raw socket drain")
            results[f"{key}_raw"] = _client("raw", rest, args.raw_seconds, requests)
        _step(f"{what}: bare websocket-client loop")
        bare = [_client("bare", rest, args.client_seconds, requests)]
        _step(f"{what}: recorder run end to end, {args.e2e_seconds:.0f} s")
        results[f"{key}_e2e"] = measure_e2e(key, "kucoin", _kucoin_config(OUT / f"{key}.toml",
                                            rest), args.e2e_seconds, env=KUCOIN_ENV)
        _step(f"{what}: bare websocket-client loop again")
        bare.append(_client("bare", rest, args.client_seconds, requests))
        results[f"{key}_bare"] = _mean_of(bare)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client-seconds", type=float, default=4.0,
                    help="seconds each receive client counts after its warm-up")
    ap.add_argument("--raw-seconds", type=float, default=2.0)
    ap.add_argument("--e2e-seconds", type=float, default=9.0, help="each `recorder run`")
    ap.add_argument("--duckdb-rows", type=int, default=10_000_000)
    ap.add_argument("--latency-seconds", type=float, default=12)
    ap.add_argument("--scale-seconds", type=float, default=25.0,
                    help="seconds each scale run measures once every book is synced")
    ap.add_argument("--skip", nargs="*", default=[],
                    help="naive, cryptofeed, kucoin, deep, latency, duckdb, simulator, "
                    "rebuild, scale")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: dict = {"machine": {
        "cpus": os.cpu_count(), "python": sys.version.split()[0],
        "recorder_core": RECORDER_CORE, "simulator_core": SIMULATOR_CORE,
        "load_average_at_start": os.getloadavg()}, "warmup_frames": WARMUP}
    if "cryptofeed" not in args.skip:
        _step(f"cryptofeed {peer_cryptofeed.VERSION}: virtual environment")
        results["cryptofeed_setup"] = peer_cryptofeed.setup()
    run_kraken(results, args)
    if "kucoin" not in args.skip:
        run_kucoin(results, args, None)
        if "deep" not in args.skip:
            run_kucoin(results, args, DEEP_LEVELS)
    if "latency" not in args.skip:
        _step(f"latency at {LATENCY_RATE:,} msg/s, {args.latency_seconds:.0f} s")
        results["latency"] = measure_latency(args.latency_seconds)
    results["verification"] = measure_verification()
    if "simulator" not in args.skip:
        _step("simulators --speed max, raw-socket drain")
        results["simulator"] = _script("sim_rate.py", "--seconds", "2", "--json")
        if "kucoin" not in args.skip:
            results["simulator"].update(_script("sim_rate.py", "--exchange", "kucoin",
                                                "--seconds", "2", "--json"))
    if "rebuild" not in args.skip:
        _step("book rebuild at the end of 5M book rows, with and without checkpoints")
        results["rebuild"] = _script("rebuild_bench.py", "--rows", "5000000")
    if "duckdb" not in args.skip:
        _step(f"DuckDB over {args.duckdb_rows:,} trades")
        results["duckdb"] = measure_duckdb(args.duckdb_rows)
    if "scale" not in args.skip:
        results["scale"] = scale.run_all(args.scale_seconds, _step,
                                         kucoin="kucoin" not in args.skip)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["bench_seconds"] = time.perf_counter() - t0
    results.update(summary(results))
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    _print(results)
    return 0


def summary(r: dict) -> dict:
    """The top-level keys (the issue's names)."""
    bare, e2e = r["bare"], r["e2e"]
    out = {
        "raw_msgs_per_s": r["raw"]["msgs_per_s"],
        "e2e_msgs_per_s": e2e["msgs_per_s"], "bare_msgs_per_s": bare["msgs_per_s"],
        "ratio": e2e["msgs_per_s"] / bare["msgs_per_s"], "peak_rss_mb": e2e["peak_rss_mb"],
        "bytes_per_row": (r.get("latency") or {}).get("bytes_per_row")
        or e2e["bytes_per_row"],
        "e2e_v1_msgs_per_s": r["e2e_v1"]["msgs_per_s"],
        "bare_v1_msgs_per_s": r["bare_v1"]["msgs_per_s"],
    }
    cf = r.get("cryptofeed_trimmed")
    if cf:
        v1 = r["e2e_v1"]
        out.update({
            "cryptofeed_msgs_per_s": cf["msgs_per_s"],
            "cryptofeed_shipped_msgs_per_s": r["cryptofeed_shipped"]["msgs_per_s"],
            "vs_cryptofeed": v1["msgs_per_s"] / cf["msgs_per_s"],
            "cpu_vs_cryptofeed": v1["cpu_s_per_million"] / cf["cpu_s_per_million"],
            "rss_vs_cryptofeed": v1["peak_rss_mb"] / cf["peak_rss_mb"],
        })
    if "kucoin_e2e" in r:
        out.update({
            "kucoin_e2e_msgs_per_s": r["kucoin_e2e"]["msgs_per_s"],
            "kucoin_bare_msgs_per_s": r["kucoin_bare"]["msgs_per_s"],
            "kucoin_ratio": r["kucoin_e2e"]["msgs_per_s"] / r["kucoin_bare"]["msgs_per_s"],
        })
    if "kucoin_deep_e2e" in r:
        deep = r["kucoin_deep_e2e"]
        out.update({
            "kucoin_deep_e2e_msgs_per_s": deep["msgs_per_s"],
            "kucoin_deep_bare_msgs_per_s": r["kucoin_deep_bare"]["msgs_per_s"],
            "kucoin_deep_ratio": deep["msgs_per_s"] / r["kucoin_deep_bare"]["msgs_per_s"],
            # Keeps pace: every row verified, no gap, and the deep book's ratio to its own
            # bare loop against the small book's.
            "kucoin_deep_keeps_pace": (deep["unverified_book_rows"] == 0
                                       and not deep["events"].get("sequence_gap")),
        })
    sc = r.get("scale") or {}
    for ex in ("kraken", "kucoin"):
        if ex in sc:
            s = sc[ex]
            out.update({f"scale_{ex}_msgs_per_s": s["msgs_per_s"],
                        f"scale_{ex}_cpu_pct": s["cpu_pct"],
                        f"scale_{ex}_rss_mb": s["rss_mb"],
                        f"scale_{ex}_synced_s": s["synced_after_s"],
                        f"scale_{ex}_rows_per_s": s["rows_per_s"],
                        f"scale_{ex}_connections": s["connections"]})
    if "connections" in sc:
        out["rss_per_extra_connection_mb"] = sc["connections"]["rss_per_extra_connection_mb"]
        out["pss_per_extra_connection_mb"] = sc["connections"]["pss_per_extra_connection_mb"]
    return out


def _thread_line(line: Callable[..., None], e: dict) -> None:
    split = e.get("thread_us_per_frame") or {}
    if split:
        line("    collector threads a frame: receive / sink writer / other",
             " / ".join(f"{split[k]:.2f}" for k in ("receive", "writer", "other")) + " µs")


def _print(r: dict) -> None:
    rows: list[tuple[str, str, str]] = []

    def line(label: str, value: str, ratio: str = "") -> None:
        rows.append((label, value, ratio))

    def rate(x: dict) -> str:
        return f"{x['msgs_per_s']:,.0f} msg/s"

    bare = r["bare"]["msgs_per_s"]
    line("Kraken v2, --speed max, 4 pairs (ratio: to the bare loop)", "", "")
    line("  raw socket drain (transport limit)", rate(r["raw"]),
         f"{r['raw']['msgs_per_s'] / bare:.2f}")
    line("  bare websocket-client loop (ceiling)", rate(r["bare"]), "1.00")
    if "naive" in r:
        line("  naive client, print every frame", rate(r["naive"]),
             f"{r['naive']['msgs_per_s'] / bare:.2f}")
    e = r["e2e"]
    line("  recorder run end to end", rate(e), f"{r['ratio']:.2f}")
    line("    rows", f"{e['rows_per_s']:,.0f} rows/s")
    line("    CPU per million messages (to the end of the run)",
         f"{e['cpu_s_per_million']:.2f} s",
         f"{e['cpu_s_per_million'] / r['bare']['cpu_s_per_million']:.2f}")
    line("    CPU per million messages (while receiving)",
         f"{e['cpu_s_per_million_receiving']:.2f} s",
         f"{e['cpu_s_per_million_receiving'] / r['bare']['cpu_s_per_million']:.2f}")
    _thread_line(line, e)
    line("    peak RSS, supervisor + collector", f"{e['peak_rss_mb']:.0f} MB")
    line("    peak RSS, largest process", f"{e['peak_process_rss_mb']:.0f} MB")
    line("    peak RSS while receiving (tree)", f"{e['rss_while_receiving_mb']:.0f} MB")
    line("    checksums verified / unverified rows",
         f"{e['checksums_verified']:,} / {e['unverified_book_rows']:,}")
    line("    bytes per row on disk (cycled max-speed stream)", f"{e['bytes_per_row']:.1f} B")
    if r.get("bytes_per_row"):
        line("    bytes per row on disk (realtime random walk)", f"{r['bytes_per_row']:.1f} B")
    if e.get("json_bytes_per_row"):
        line("    raw JSON / zstd JSONL per row (cycled)",
             f"{e['json_bytes_per_row']:.1f} / {e['jsonl_zstd_bytes_per_row']:.1f} B")
    v = r.get("verification")
    if v:
        line("    book checksum verification per update", f"{v['verify_us']:.2f} µs",
             f"{v['verify_us'] / e['cpu_s_per_million']:.2f}")
    b1 = r["bare_v1"]["msgs_per_s"]
    line("Kraken v1, same simulator (ratio: to the v1 bare loop)", "", "")
    line("  bare websocket-client loop", rate(r["bare_v1"]), "1.00")
    e1 = r["e2e_v1"]
    line("  recorder run end to end", rate(e1), f"{e1['msgs_per_s'] / b1:.2f}")
    line("    CPU per million / peak RSS (tree)",
         f"{e1['cpu_s_per_million']:.2f} s / {e1['peak_rss_mb']:.0f} MB")
    _thread_line(line, e1)
    for mode in ("shipped", "trimmed"):
        cf = r.get(f"cryptofeed_{mode}")
        if not cf:
            continue
        tag = "" if cf["steady"] else " (no steady state: all frames)"
        line(f"  cryptofeed {peer_cryptofeed.VERSION}, {mode}{tag}", rate(cf),
             f"{cf['msgs_per_s'] / b1:.2f}")
        cpu = f"{cf['cpu_s_per_million']:.2f} s" if cf["steady"] else "-"
        line("    CPU per million / peak RSS", f"{cpu} / {cf['peak_rss_mb']:.0f} MB")
        line("    checksum failures / reconnects / unverified updates",
             f"{cf['failures']} / {cf['opens'] - 1} / {cf['unchecked_updates']:,}")
    if "vs_cryptofeed" in r:
        line("  recorder / cryptofeed (trimmed): rate, CPU per msg, peak RSS",
             f"{r['vs_cryptofeed']:.2f} / {r['cpu_vs_cryptofeed']:.2f} / "
             f"{r['rss_vs_cryptofeed']:.2f}")
    for key, title in (("kucoin", "KuCoin level2 + match, 2 symbols, ~350 levels a side"),
                       ("kucoin_deep", f"KuCoin, {DEEP_LEVELS:,} levels a side")):
        if f"{key}_e2e" not in r:
            continue
        kb = r[f"{key}_bare"]["msgs_per_s"]
        line(title, "", "")
        if f"{key}_raw" in r:
            line("  raw socket drain", rate(r[f"{key}_raw"]),
                 f"{r[f'{key}_raw']['msgs_per_s'] / kb:.2f}")
        line("  bare websocket-client loop", rate(r[f"{key}_bare"]), "1.00")
        ke = r[f"{key}_e2e"]
        line("  recorder run end to end", rate(ke), f"{ke['msgs_per_s'] / kb:.2f}")
        line("    CPU per million / peak RSS (tree)",
             f"{ke['cpu_s_per_million']:.2f} s / {ke['peak_rss_mb']:.0f} MB")
        gaps = ke["events"].get("sequence_gap", 0)
        line("    unverified rows / sequence gaps / synced after",
             f"{ke['unverified_book_rows']:,} / {gaps} / {ke['synced_after_s']:.2f} s")
    if "latency" in r:
        lat = r["latency"]
        for what in ("journaled", "queryable"):
            p50, p99 = lat[f"{what}_p50_s"], lat[f"{what}_p99_s"]
            if p50 is not None:
                line(f"latency send -> {what} p50 / p99", f"{p50:.2f} / {p99:.2f} s")
        if lat.get("json_bytes_per_row"):
            line("  raw JSON / zstd JSONL per row (realtime)",
                 f"{lat['json_bytes_per_row']:.1f} / {lat['jsonl_zstd_bytes_per_row']:.1f} B")
    if "duckdb" in r:
        d = r["duckdb"]
        line(f"DuckDB VWAP/symbol/minute, {d['trades']:,} trades",
             f"{d['vwap_per_symbol_minute_s']:.2f} s")
        line("DuckDB one symbol, one hour", f"{d['one_symbol_one_hour_s'] * 1000:.1f} ms")
    rb = r.get("rebuild")
    if rb:
        for how in ("without_checkpoints", "with_checkpoints"):
            line(f"book_at after {rb['rows']:,} book rows, {how.replace('_', ' ')}",
                 f"{rb[how]['seconds']:.2f} s, {rb[how]['peak_rss_mb']:.0f} MB")
    for version, sim in sorted((r.get("simulator") or {}).items()):
        line(f"simulator --speed max ({version}, raw drain, own run)",
             f"{sim['msg_per_s']:,.0f} msg/s")
    for ex in ("kraken", "kucoin"):
        s = (r.get("scale") or {}).get(ex)
        if not s:
            continue
        line(f"scale: {s['pairs']:,} {ex} pairs, {s['connections']} connection(s), real time",
             "", "")
        line("  messages / rows", f"{s['msgs_per_s']:,.0f} msg/s / {s['rows_per_s']:,.0f} rows/s")
        line("  book checkpoint rows (whole run)", f"{s['checkpoint_rows_total']:,}")
        line("  CPU of one core (whole tree)", f"{s['cpu_pct']:.1f} %")
        line("  RSS of the tree (summed) / PSS", f"{s['rss_mb']:.0f} MB / {s['pss_mb']:.0f} MB")
        line("  every book synced after", f"{s['synced_after_s']:.1f} s")
        line("  unverified rows after sync / gaps",
             f"{s['unverified_after_sync']:,} / {s['gaps']}")
    c = (r.get("scale") or {}).get("connections")
    if c:
        line("memory per additional connection (RSS / PSS)",
             f"{c['rss_per_extra_connection_mb']:.0f} / {c['pss_per_extra_connection_mb']:.0f} MB")
    width = max(len(a) for a, _, _ in rows)
    print()
    print(f"{'measure':<{width}}  {'value':>24}  {'ratio':>6}")
    for a, b, c_ in rows:
        print(f"{a:<{width}}  {b:>24}  {c_:>6}")
    print(f"\n{r['bench_seconds']:.0f} s in all; load average at start "
          f"{r['machine']['load_average_at_start'][0]:.2f}, at end "
          f"{r['machine']['load_average_at_end'][0]:.2f}; results: bench/results.json")


if __name__ == "__main__":
    raise SystemExit(main())
