"""Soak: the recorder against the simulator for N minutes; is RSS flat? (not part of CI)

    .venv/bin/python bench/soak.py                    # 10 minutes, 5,000 msg/s, 1-min files
    .venv/bin/python bench/soak.py --minutes 2 --speed max

Starts the simulator and `python -m recorder.capture.supervisor` (what `recorder run` does) with
trade + book-10 + spread on two pairs, files rotating every minute (so publishing runs
throughout), and samples the collector's and the supervisor's RSS every few seconds from
/proc. "Flat" means: the median RSS of the last quarter is within --tolerance (default 10 %)
of the median of the second quarter (the first quarter is warm-up). At the end it prints the
samples, rows recorded per table, and checks every file is readable.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recorder.analysis.query import connect  # noqa: E402
from recorder.simulator.testing import SimulatorProcess  # noqa: E402

SUBS = """
[[subscribe]]
channel = "trade"
symbols = ["BTC/USD", "ETH/USD"]

[[subscribe]]
channel = "book"
symbols = ["BTC/USD", "ETH/USD"]
depth = 10

[[subscribe]]
channel = "spread"
symbols = ["BTC/USD", "ETH/USD"]
"""


def rss_mb(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=5000.0, help="simulator msg/s")
    p.add_argument("--speed", default="1", help="simulator --speed (e.g. max)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--rotate", default="1m")
    p.add_argument("--tolerance", type=float, default=0.10)
    p.add_argument("--keep", action="store_true", help="keep the data directory")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    data = work / "data"
    samples: list[tuple[float, float | None, float | None]] = []
    with SimulatorProcess(["--seed", "1", "--rate", str(args.rate), "--speed", args.speed],
                          capture_stderr=True) as sim:
        api = "v2"
        cfg = work / "soak.toml"
        cfg.write_text(f'[exchange]\nname = "kraken"\napi = "{api}"\n'
                       f'url = "{sim.urls["ws_" + api]}"\n'
                       f'[output]\nrotate = "{args.rotate}"\n{SUBS}')
        log = open(work / "recorder.log", "w")
        sup = subprocess.Popen([sys.executable, "-m", "recorder.capture.supervisor", str(cfg),
                                "--data", str(data)], stdout=log, stderr=subprocess.STDOUT,
                               cwd=ROOT)
        state_file = data / ".status" / "soak-public.json"
        try:
            t0 = time.monotonic()
            end = t0 + args.minutes * 60
            print(f"soak: {args.minutes} min, simulator rate {args.rate} x {args.speed}, "
                  f"files every {args.rotate}, data in {data}", flush=True)
            print(f"{'t (s)':>7} {'collector MB':>13} {'supervisor MB':>14} {'sim msgs':>10}",
                  flush=True)
            while time.monotonic() < end:
                time.sleep(args.interval)
                try:
                    pid = json.loads(state_file.read_text()).get("pid")
                except (OSError, ValueError):
                    pid = None
                t = time.monotonic() - t0
                c, s = rss_mb(pid), rss_mb(sup.pid)
                samples.append((t, c, s))
                sent = sim.control.stats()["messages_total"]
                print(f"{t:7.0f} {c or 0:13.1f} {s or 0:14.1f} {sent:10,}", flush=True)
        finally:
            sup.send_signal(signal.SIGTERM)
            code = sup.wait(30)
            log.close()
    con = connect(data)
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
              for t in ("trades", "book", "spread", "events")}
    kinds = dict(con.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    import pyarrow.parquet as pq

    files = list(data.rglob("*.parquet"))
    for f in files:
        pq.read_table(f)
    leftovers = [f for f in data.rglob("*") if f.is_file() and f.suffix != ".parquet"
                 and ".status" not in f.parts]
    coll = [c for _, c, _ in samples if c]
    n = len(coll)
    q2 = statistics.median(coll[n // 4: n // 2]) if n >= 4 else None
    q4 = statistics.median(coll[3 * n // 4:]) if n >= 4 else None
    flat = q2 is not None and q4 is not None and q4 <= q2 * (1 + args.tolerance)
    elapsed = samples[-1][0] if samples else 0
    summary = {
        "minutes": round(elapsed / 60, 2), "exit_code": code, "rows": counts,
        "rows_per_s": round(sum(counts[t] for t in ("trades", "book", "spread")) / elapsed, 1)
        if elapsed else None,
        "files": len(files), "leftover_files": len(leftovers),
        "events": kinds,
        "collector_rss_mb": {"min": round(min(coll), 1) if coll else None,
                             "max": round(max(coll), 1) if coll else None,
                             "median_q2": round(q2, 1) if q2 else None,
                             "median_q4": round(q4, 1) if q4 else None},
        "supervisor_rss_mb_max": round(max(s for _, _, s in samples if s), 1) if samples else None,
        "flat": flat,
    }
    print(json.dumps(summary, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if flat and code == 0 and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
