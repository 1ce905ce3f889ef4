"""Whole-exchange scale: every pair of an exchange at real rates, as `recorder run` splits it.

    python bench/scale.py [--exchange kraken|kucoin|connections|all] [--seconds 30]

- Kraken: 600 pairs (synthetic SYN1/USD ... SYN600/USD; six of them ten times busier) with
  trade, book depth 10, spread and ohlc 1m, about 5 messages a second per pair (3,000 msg/s).
  Kraken's spec sets no topic limit per connection, so the runtime puts them on one.
- KuCoin: 1,000 USDT pairs (SYN1-USDT ... SYN1000-USDT; ten of them ten times busier) with
  trade, level2 at full depth (synced from the signed full snapshot) and ticker, about 10
  messages a second per pair (10,000 msg/s); 3,000 topics at KuCoin's 300 per connection:
  ten connections (roles public, public-2, ... public-10), one collector process (up to
  ``[connection] connections_per_process``, 10, public connections share a process).
- Connections: the memory one more connection costs. The same six KuCoin pairs recorded as
  one config on one connection, then on six connections (``topics_per_connection = 3``) in
  one collector process (the default), then on six connections in six processes
  (``connections_per_process = 1``, as before issue 18's grouping); the difference of the
  trees' steady memory over five.

The recorder tree is pinned to core 0, the simulator to core 1. Each run lasts until every
book has had time to sync plus ``--seconds``; from the recording: when every book was synced
(from the start of `recorder run`), and over the window that starts 5 s after that: data
frames and rows per second, CPU of the tree as a percentage of one core, RSS of the tree
(summed over its processes, the peak in the window) and PSS (shared pages split between the
processes that map them), unverified book rows and gaps. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from measure import OUT, SIMULATOR_CORE, frame_times, pin, run_recorder  # noqa: E402

from recorder.analysis.query import connect  # noqa: E402
from recorder.capture import jobs  # noqa: E402
from recorder.core.config import load_config  # noqa: E402
from recorder.simulator.kucoin.auth import (  # noqa: E402
    DEMO_API_KEY,
    DEMO_API_PASSPHRASE,
    DEMO_API_SECRET,
)
from recorder.simulator.testing import SimulatorProcess  # noqa: E402

KRAKEN_PAIRS = 600
KUCOIN_PAIRS = 1000
BUSY = {"kraken": 6, "kucoin": 10}  # pairs ten times busier than the others
# Market steps per second: measured to give about 3,000 and 10,000 data frames a second with
# these channels (a step is one book change, or a trade with its book change; spread, ohlc
# and the 2 s KuCoin snapshots add frames of their own).
KRAKEN_STEPS = 1500.0
KUCOIN_STEPS = 6500.0
# events rows that mean data was lost or a book was wrong
GAP_EVENTS = ("sequence_gap", "checksum_mismatch", "disconnected", "buffer_full", "stale",
              "resync_failed", "collector_restarted", "collector_failed")
SETTLE = 5.0  # seconds after every book is synced before the window starts
CHECKPOINT_SECONDS = 60  # [output] book_checkpoint's default
CREDENTIALS = {"BENCH_KC_KEY": DEMO_API_KEY, "BENCH_KC_SECRET": DEMO_API_SECRET,
               "BENCH_KC_PASSPHRASE": DEMO_API_PASSPHRASE}
CREDENTIALS_TOML = ('[credentials]\napi_key_env = "BENCH_KC_KEY"\n'
                    'api_secret_env = "BENCH_KC_SECRET"\n'
                    'api_passphrase_env = "BENCH_KC_PASSPHRASE"\n\n')


def kraken_pairs(n: int = KRAKEN_PAIRS, busy: int = BUSY["kraken"]) -> tuple[list[str], str]:
    """The pair names, and the simulator's --pairs (busy ones weighted *10)."""
    names = [f"SYN{i}/USD" for i in range(1, n + 1)]
    return names, ",".join(f"{p}*10" if i < busy else p for i, p in enumerate(names))


def kucoin_pairs(n: int = KUCOIN_PAIRS, busy: int = BUSY["kucoin"]) -> tuple[list[str], str]:
    names = [f"SYN{i}-USDT" for i in range(1, n + 1)]
    return names, ",".join(f"{p}*10" if i < busy else p for i, p in enumerate(names))


def kraken_config(path: Path, urls: dict, pairs: list[str], name_sfx: str = "") -> Path:
    symbols = json.dumps(pairs)
    path.write_text(
        f'[exchange]\nname = "kraken"\napi = "v2"\nurl = "{urls["ws_v2"]}"\n'
        f'rest_url = "{urls["rest"]}"\n\n'
        + "".join(f'[[subscribe]]\nchannel = "{ch}"\nsymbols = {symbols}\n{extra}\n'
                  for ch, extra in (("trade", ""), ("book", "depth = 10\n"), ("spread", ""),
                                    ("ohlc", "interval = 1\n"))))
    return path


def kucoin_config(path: Path, rest: str, pairs: list[str],
                  channels: tuple[str, ...] = ("trade", "book", "ticker"),
                  connection: str = "") -> Path:
    symbols = json.dumps(pairs)
    path.write_text(
        f'[exchange]\nname = "kucoin"\nrest_url = "{rest}"\n\n' + CREDENTIALS_TOML
        + (f"[connection]\n{connection}\n" if connection else "")
        + "".join(f'[[subscribe]]\nchannel = "{ch}"\nsymbols = {symbols}\n\n'
                  for ch in channels))
    return path


def _collectors(sampler, t0: float, t1: float) -> list[float]:
    """RSS (MB) of each collector process at the last PSS sample in [t0, t1]."""
    snaps = [s for t, s in sampler.snapshots if t0 <= t <= t1] or sampler.snapshots[-1:]
    if not snaps:
        return []
    return sorted(round(rss / 2**20, 1) for name, rss in snaps[-1].values()
                  if " collect " in f" {name} " and rss > 0)


def _analyse(data: Path, exchange: str, run: dict, pairs: int,
             tables: tuple[str, ...]) -> dict:
    """Sync time, window rates, CPU and memory of one scale run."""
    sampler = run["sampler"]
    con = connect(data)
    first_ok = dict(con.execute(
        "SELECT symbol, min(epoch_us(ts_recv)) FROM book WHERE verified GROUP BY symbol"
    ).fetchall())
    synced_at = max(first_ok.values()) / 1e6 if first_ok else run["end"]
    times = frame_times(con, exchange, tables)
    # The window ends 0.5 s before the last frame: the recording, not the shutdown that
    # follows (every journal turned into Parquet files).
    t0 = synced_at + SETTLE
    t1 = (float(times[-1]) if len(times) else run["end"]) - 0.5
    if t1 - t0 < 5.0:  # a sync that took most of the run: measure what is left
        t0 = max(run["start"], t1 - 5.0)
    lo, hi = int(t0 * 1e6), int(t1 * 1e6)
    frames = int(((times * 1e6 >= lo) & (times * 1e6 <= hi)).sum())
    def rows_in(table: str) -> int:
        return con.execute(f"SELECT count(*) FROM {table} WHERE epoch_us(ts_recv) BETWEEN "
                           f"{lo} AND {hi}").fetchone()[0]

    rows = sum(rows_in(t) for t in tables)
    # Every minute each book that changed is written whole (book_checkpoints): at full depth
    # for a whole exchange that is as many rows again as the market data.
    checkpoint_rows = rows_in("book_checkpoints")
    unverified_after = con.execute(
        "SELECT count(*) FROM book b JOIN (SELECT symbol, min(ts_recv) AS t FROM book "
        "WHERE verified GROUP BY symbol) s USING (symbol) "
        "WHERE b.ts_recv > s.t AND b.verified IS NOT true").fetchone()[0]
    events = dict(con.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    gaps = sum(v for k, v in events.items() if k in GAP_EVENTS)
    window = [(t, r) for t, r in zip(sampler.times, sampler.rss, strict=True) if t0 <= t <= t1]
    pss = [p for p in sampler.pss if t0 <= p[0] <= t1] or sampler.pss[-1:]
    collectors = _collectors(sampler, t0, t1)
    out = {
        "pairs": pairs, "synced_symbols": len(first_ok),
        "synced_after_s": synced_at - run["start"],
        "window_s": t1 - t0, "msgs_per_s": frames / (t1 - t0), "rows_per_s": rows / (t1 - t0),
        "checkpoint_rows": checkpoint_rows,
        "checkpoint_rows_total": con.execute("SELECT count(*) FROM book_checkpoints"
                                             ).fetchone()[0],
        "cpu_pct": 100 * (sampler.cpu_at(t1) - sampler.cpu_at(t0)) / (t1 - t0),
        "cpu_pct_whole_run": 100 * run["cpu_seconds"] / (run["end"] - run["start"]),
        "rss_mb": max((r for _, r in window), default=0) / 2**20,
        "peak_rss_mb": run["peak_rss_mb"],
        "pss_mb": statistics.median(p[1] for p in pss) / 2**20 if pss else None,
        "uss_mb": statistics.median(p[2] for p in pss) / 2**20 if pss else None,
        "processes": max(sampler.nprocs, default=0),
        "collector_rss_mb": collectors,
        "unverified_after_sync": unverified_after, "gaps": gaps, "events": events,
        "duration_s": run["end"] - run["start"],
    }
    con.close()
    return out


def run_kraken(seconds: float, step: Callable[[str], None], n: int = KRAKEN_PAIRS,
               steps: float = KRAKEN_STEPS, sync_allowance: float = 8.0) -> dict:
    names, sim_pairs = kraken_pairs(n)
    step(f"scale: {n} Kraken pairs, {steps:g} market steps/s, "
         f"{sync_allowance + SETTLE + seconds + 1:.0f} s")
    with SimulatorProcess(["--pairs", sim_pairs, "--rate", str(steps), "--seed", "7"],
                          start_timeout=120, capture_stderr=True) as sim:
        pin(sim.proc.pid if sim.proc else None, SIMULATOR_CORE)
        cfg = kraken_config(OUT / "scale-kraken.toml", sim.urls, names)
        data = OUT / "scale-kraken"
        shutil.rmtree(data, ignore_errors=True)
        run = run_recorder([cfg], data, sync_allowance + SETTLE + seconds + 1, pss_every=8)
    out = _analyse(data, "kraken", run, n, ("book", "trades", "spread", "ohlc"))
    out.update(connections=1)
    return out


def run_kucoin(seconds: float, step: Callable[[str], None], n: int = KUCOIN_PAIRS,
               steps: float = KUCOIN_STEPS, sync_allowance: float = 25.0,
               per_process: int | None = None) -> dict:
    names, sim_pairs = kucoin_pairs(n)
    step(f"scale: {n} KuCoin pairs, {steps:g} market steps/s, "
         f"{max(sync_allowance + SETTLE + seconds + 1, CHECKPOINT_SECONDS + 6):.0f} s")
    with SimulatorProcess(["--pairs", sim_pairs, "--rate", str(steps), "--seed", "7"],
                          exchange="kucoin", start_timeout=120, capture_stderr=True) as sim:
        pin(sim.proc.pid if sim.proc else None, SIMULATOR_CORE)
        cfg = kucoin_config(OUT / "scale-kucoin.toml", sim.urls["rest"], names, connection=(
            f"connections_per_process = {per_process}" if per_process else ""))
        connections = len(jobs.roles(load_config(cfg)))  # its symbols checked by the simulator
        data = OUT / "scale-kucoin"
        shutil.rmtree(data, ignore_errors=True)
        # Long enough to hold the first book checkpoint (60 s after a collector starts): at
        # full depth it writes every level of every book, a real share of the cost.
        duration = max(sync_allowance + SETTLE + seconds + 1, CHECKPOINT_SECONDS + 6)
        run = run_recorder([cfg], data, duration, pss_every=8, env={**os.environ, **CREDENTIALS})
    out = _analyse(data, "kucoin", run, n, ("book", "trades", "ticker"))
    out.update(connections=connections,
               collector_processes=max(1, out["processes"] - 1))
    return out


def run_connections(step: Callable[[str], None], k: int = 6, seconds: float = 14.0) -> dict:
    """Memory of one connection more: k pairs on one connection, then on k connections in
    one process (the default), then in k processes."""
    names, sim_pairs = kucoin_pairs(k, busy=0)
    step(f"scale: memory per connection, {k} KuCoin pairs on 1 then {k} connections (one "
         f"process, then {k})")
    out: dict = {"pairs": k}
    with SimulatorProcess(["--pairs", sim_pairs, "--rate", str(10 * k), "--seed", "7"],
                          exchange="kucoin", capture_stderr=True) as sim:
        pin(sim.proc.pid if sim.proc else None, SIMULATOR_CORE)
        rest = sim.urls["rest"]
        split = "topics_per_connection = 3\n"  # trade, level2, ticker of one pair
        for label, configs in (
                ("one", [kucoin_config(OUT / "conn-one.toml", rest, names)]),
                ("many", [kucoin_config(OUT / "conn-many.toml", rest, names,
                                        connection=split)]),
                ("processes", [kucoin_config(OUT / "conn-procs.toml", rest, names,
                                             connection=split + "connections_per_process = 1")])):
            data = OUT / f"scale-conn-{label}"
            shutil.rmtree(data, ignore_errors=True)
            run = run_recorder(configs, data, seconds, pss_every=4,
                               env={**os.environ, **CREDENTIALS})
            sampler = run["sampler"]
            # Steady memory: the median of the samples in the second half of the run, before
            # the final Parquet conversion.
            t0, t1 = run["start"] + seconds / 2, run["start"] + seconds - 0.5
            rss = [r for t, r in zip(sampler.times, sampler.rss, strict=True) if t0 <= t <= t1]
            pss = [p for p in sampler.pss if t0 <= p[0] <= t1]
            out[label] = {
                "connections": sum(len(jobs.roles(load_config(c))) for c in configs),
                "processes": max(sampler.nprocs),
                "rss_mb": statistics.median(rss) / 2**20,
                "pss_mb": statistics.median(p[1] for p in pss) / 2**20,
                "uss_mb": statistics.median(p[2] for p in pss) / 2**20,
                "collector_rss_mb": _collectors(sampler, t0, t1),
            }
    extra = k - 1
    for what in ("rss", "pss", "uss"):
        out[f"{what}_per_extra_connection_mb"] = (
            out["many"][f"{what}_mb"] - out["one"][f"{what}_mb"]) / extra
        out[f"{what}_per_extra_process_mb"] = (
            out["processes"][f"{what}_mb"] - out["one"][f"{what}_mb"]) / extra
    return out


def run_all(seconds: float, step: Callable[[str], None], kucoin: bool = True) -> dict:
    out = {"kraken": run_kraken(seconds, step)}
    if kucoin:
        out["kucoin"] = run_kucoin(seconds, step)
        out["connections"] = run_connections(step)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exchange", default="all",
                    choices=("kraken", "kucoin", "connections", "all"))
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--pairs", type=int, help="pairs (default 600 Kraken, 1,000 KuCoin)")
    ap.add_argument("--steps", type=float, help="market steps per second")
    ap.add_argument("--connections-per-process", type=int, help="KuCoin: [connection] "
                    "connections_per_process (default: the config's default, 10; 1: a "
                    "process per connection, as before issue 18's grouping)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    def step(what: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {what} ...", file=sys.stderr, flush=True)

    kw = {k: v for k, v in (("n", args.pairs), ("steps", args.steps)) if v is not None}
    if args.exchange == "kraken":
        out = {"kraken": run_kraken(args.seconds, step, **kw)}
    elif args.exchange == "kucoin":
        out = {"kucoin": run_kucoin(args.seconds, step, per_process=args.connections_per_process,
                                    **kw)}
    elif args.exchange == "connections":
        out = {"connections": run_connections(step)}
    else:
        out = run_all(args.seconds, step)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
