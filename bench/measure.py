"""What bench/run.py and bench/scale.py share: pinning, the process-tree sampler, running
`recorder run`, and counting the data frames a recording holds.

The rate rule, the same for every client and for the recorder: data frames only; the first
WARMUP data frames are excluded; rate = data frames after the warm-up / time from the
WARMUP-th data frame to the last.
"""

from __future__ import annotations

import bisect
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
# "On one core of this 2-core machine": the clients and the recorder share core 0, the
# simulator has core 1 to itself, so the simulator never competes with what is measured.
RECORDER_CORE, SIMULATOR_CORE = 0, 1
# Data frames excluded at the start of every rate: the simulator sends the snapshots, then
# pauses 0.7-1 s to build its --speed max cycle; the client's caches and GC settle.
WARMUP = 20_000


def pin(pid: int | None, core: int) -> None:
    """Pin every thread of a process (and what it starts later) to one core."""
    if pid is None or not hasattr(os, "sched_setaffinity") or core >= (os.cpu_count() or 1):
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {core})
        except OSError:  # the thread ended meanwhile
            pass


def pinned(core: int):  # noqa: ANN201
    """A preexec_fn: the child and everything it starts run on one core."""
    def setup() -> None:
        if hasattr(os, "sched_setaffinity") and core < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {core})
    return setup


@dataclass
class TreeSampler:
    """Samples a process tree every ``interval`` s: summed RSS, the largest process's RSS,
    summed CPU seconds (user + system) of the live processes, the number of processes; and
    every ``pss_every``-th sample the summed PSS (shared pages counted once, split between
    the processes that map them) and USS (pages of one process only)."""

    pid: int
    interval: float = 0.05
    pss_every: int = 0
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    nprocs: list[int] = field(default_factory=list)
    pss: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, pss, uss, n
    peak_tree: int = 0
    peak_process: int = 0
    last_processes: dict[int, tuple[str, int]] = field(default_factory=dict)
    # (t, {pid: (command, rss)}) at each PSS sample
    snapshots: list[tuple[float, dict[int, tuple[str, int]]]] = field(default_factory=list)
    # (t, {(collector pid, thread id): CPU seconds}) for the collector processes' threads
    thread_cpu: list[tuple[float, dict[tuple[int, int], float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _gone_cpu: float = 0.0
    _last_cpu: dict[int, float] = field(default_factory=dict)
    _names: dict[int, str] = field(default_factory=dict)

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _tree(self) -> list[psutil.Process]:
        try:
            root = self._procs.setdefault(self.pid, psutil.Process(self.pid))
            kids = root.children(recursive=True)
        except psutil.Error:
            return []
        out = [root]
        for k in kids:  # keep the Process objects: their cpu_times stay cheap
            out.append(self._procs.setdefault(k.pid, k))
        return out

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            procs = self._tree()
            if not procs:
                break
            sizes, cpu, live = [], 0.0, {}
            for p in procs:
                try:
                    with p.oneshot():
                        rss = p.memory_info().rss
                        c = p.cpu_times()
                    name = self._names.get(p.pid)
                    if name is None:
                        name = " ".join(p.cmdline()[2:5])
                        # A child shows its parent's command line until it has exec'd.
                        if time.time() - p.create_time() > 1.0:
                            self._names[p.pid] = name
                except psutil.Error:
                    continue
                sizes.append(rss)
                c = c.user + c.system
                cpu += c
                live[p.pid] = (name, rss)
                self._last_cpu[p.pid] = c
            # A process that ended keeps its CPU in the total (its last sample).
            for pid in list(self._last_cpu):
                if pid not in live:
                    self._gone_cpu += self._last_cpu.pop(pid)
                    self._procs.pop(pid, None)
            now = time.time()
            self.thread_cpu.append((now, self._collector_threads(procs, live)))
            self.times.append(now)
            self.cpu.append(cpu + self._gone_cpu)
            self.rss.append(sum(sizes))
            self.nprocs.append(len(sizes))
            self.peak_tree = max(self.peak_tree, sum(sizes))
            self.peak_process = max(self.peak_process, max(sizes, default=0))
            self.last_processes = live
            if self.pss_every and n % self.pss_every == 0:
                pss = uss = 0
                for p in procs:
                    try:
                        full = p.memory_full_info()
                    except psutil.Error:
                        continue
                    pss += full.pss
                    uss += full.uss
                self.pss.append((now, pss, uss, len(procs)))
                self.snapshots.append((now, dict(live)))
            n += 1
            self._stop.wait(self.interval)

    @staticmethod
    def _collector_threads(procs: list[psutil.Process],
                           live: dict[int, tuple[str, int]]) -> dict[tuple[int, int], float]:
        out: dict[tuple[int, int], float] = {}
        for p in procs:
            if " collect " not in f" {live.get(p.pid, ('', 0))[0]} ":
                continue
            try:
                for t in p.threads():
                    out[(p.pid, t.id)] = t.user_time + t.system_time
            except psutil.Error:
                continue
        return out

    def thread_split(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds of the collectors' threads between ``t0`` and ``t1`` (the samples
        nearest inside): ``receive`` (each process's main thread: it receives, parses,
        keeps the books and turns rows into Arrow), ``writer`` (each process's busiest
        other thread: the sink's writer, which journals) and ``other``."""
        inside = [(t, d) for t, d in self.thread_cpu if t0 <= t <= t1]
        if len(inside) < 2:
            return {}
        (_, first), (_, last) = inside[0], inside[-1]
        split = {"receive": 0.0, "writer": 0.0, "other": 0.0}
        for pid in {pid for pid, _ in last}:
            deltas = {tid: cpu - first.get((pid, tid), 0.0)
                      for (p, tid), cpu in last.items() if p == pid}
            split["receive"] += deltas.pop(pid, 0.0)
            if deltas:
                busiest = max(deltas, key=deltas.__getitem__)
                split["writer"] += deltas.pop(busiest)
                split["other"] += sum(deltas.values())
        return split

    def cpu_at(self, t: float) -> float:
        """Summed CPU seconds of the tree at wall time ``t`` (linear between samples)."""
        i = bisect.bisect_left(self.times, t)
        if i <= 0:
            return self.cpu[0] if self.cpu else 0.0
        if i >= len(self.times):
            return self.cpu[-1]
        t0, t1 = self.times[i - 1], self.times[i]
        c0, c1 = self.cpu[i - 1], self.cpu[i]
        return c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0)

    def rss_between(self, t0: float, t1: float) -> list[int]:
        return [r for t, r in zip(self.times, self.rss, strict=True) if t0 <= t <= t1]


def run_recorder(configs: list[Path], data: Path, seconds: float,
                 core: int | None = RECORDER_CORE, pss_every: int = 0,
                 env: dict[str, str] | None = None) -> dict:
    """`recorder run CONFIGS --duration SECONDS` as a child (pinned to ``core``): wall start
    and end, CPU seconds of the whole tree (wait4: supervisor + collectors), and the sampler
    (peak RSS of the tree summed at each sample, the largest process, CPU over time)."""
    cmd = [sys.executable, "-m", "recorder", "run", *map(str, configs), "--data", str(data),
           "--duration", str(seconds), "--log-level", "warning"]
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env,
                            preexec_fn=pinned(core) if core is not None else None)
    sampler = TreeSampler(proc.pid, pss_every=pss_every).start()
    _pid, status, usage = os.wait4(proc.pid, 0)
    end = time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"recorder exited with {proc.returncode}")
    # wait4's ru_maxrss covers the largest process of the tree, never the sum: the sampler's
    # tree total is the figure that counts against the target.
    largest = max(usage.ru_maxrss * 1024, sampler.peak_process)
    return {"start": start, "end": end, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": max(sampler.peak_tree, largest) / 2**20,
            "peak_process_rss_mb": largest / 2**20, "sampler": sampler}


# Data frames in a recording, by table: each query gives one ts_recv (µs) per frame.
# - book: one update_id per frame (KuCoin: messages buffered before a sync share the
#   snapshot frame's, so the warm-up must cover the sync);
# - trades: Kraken frames carry one event's trades, which share the exchange time and (being
#   one frame) the read's ts_recv; a KuCoin match frame is one trade;
# - spread, ohlc, ticker: one row per frame.
FRAME_QUERIES = {
    "book": "SELECT min(epoch_us(ts_recv)) FROM book GROUP BY update_id",
    "trades_kraken": "SELECT epoch_us(ts_recv) FROM trades "
                     "GROUP BY symbol, ts_exchange, ts_recv",
    "trades_kucoin": "SELECT epoch_us(ts_recv) FROM trades",
    "spread": "SELECT epoch_us(ts_recv) FROM spread",
    "ohlc": "SELECT epoch_us(ts_recv) FROM ohlc",
    "ticker": "SELECT epoch_us(ts_recv) FROM ticker",
}


def frame_times(con, exchange: str, tables: tuple[str, ...] = ("book", "trades")) -> np.ndarray:
    """ts_recv (s) of every data frame recorded in ``tables``, sorted."""
    parts = []
    for t in tables:
        key = f"trades_{exchange}" if t == "trades" else t
        parts.append(np.array([r[0] for r in con.execute(FRAME_QUERIES[key]).fetchall()],
                              dtype=np.int64))
    times = np.sort(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)
    return times / 1e6


def steady_rate(times: np.ndarray, warmup: int = WARMUP) -> dict:
    """The rate rule on sorted frame times: frames after the first ``warmup`` over the time
    from the warmup-th frame to the last."""
    if len(times) <= warmup + 1:
        raise SystemExit(f"only {len(times)} data frames recorded (warm-up {warmup})")
    t_w, t_last = float(times[warmup - 1]), float(times[-1])
    frames = len(times) - warmup
    return {"frames": frames, "seconds": t_last - t_w, "msgs_per_s": frames / (t_last - t_w),
            "t_warm": t_w, "t_last": t_last, "all_frames": len(times)}
