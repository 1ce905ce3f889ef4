"""Where the recorder's time goes: py-spy over `recorder run` in one of the bench's scenarios.

    python bench/profile_scenarios.py SCENARIO [--seconds 8] [--py-spy PATH] [--top 25]

SCENARIO: kraken (v2, --speed max, 4 pairs), kucoin (level2 + match, --speed max), deep
(the same with 5,000 levels a side), scale-kucoin (1,000 pairs at real rates, 10 collectors).

py-spy is not a dependency of the project: install it anywhere (``pip install py-spy``) and
pass its path (default: ``py-spy`` on PATH). It samples every thread of the supervisor and its
collectors (``--subprocesses``, 250 Hz, idle threads left out: pausing the processes for each
sample, else a thread blocked in recv counts as running) into bench/out/profile-*.txt
(collapsed stacks); the summary printed is the share of samples per function, by self time
and by inclusive time, and per thread kind, leaving out samples that wait (see WAITS: on this
machine py-spy counts some blocked threads as running).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402
import scale  # noqa: E402
from measure import OUT, RECORDER_CORE, SIMULATOR_CORE, pin, pinned  # noqa: E402

from recorder.simulator.testing import SimulatorProcess  # noqa: E402


def _frame_name(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name


# Leaf functions that wait rather than work. py-spy is told to leave idle threads out, but on
# this machine it still reports threads blocked in these (and threads with no Python frame).
WAITS = ("Condition.wait (threading.py)", "_worker (thread.py)", "Event.wait (threading.py)",
         "Thread._wait_for_tstate_lock (threading.py)", "Queue.get (queue.py)",
         "RowQueue.get (row_queue.py)", "sleep", "select (selectors.py)")
# At real rates a read returns about one frame: FrameReader.read is then the wait in recv.
REAL_TIME_WAITS = ("FrameReader.read (wsclient.py)", "SocketIO.readinto (socket.py)")


def summarise(path: Path, top: int, real_time: bool = False) -> str:
    self_time: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    total = dropped = 0
    waits = WAITS + (REAL_TIME_WAITS if real_time else ())
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        # Leading "process PID:cmdline" and "thread (TID): name" entries name the sample.
        proc = thread = "?"
        while frames and frames[0].startswith(("process ", "thread (")):
            head = frames.pop(0)
            if head.startswith("process "):
                proc = "collector" if " collect " in head else "supervisor"
            else:
                thread = head.partition(": ")[2] or "?"
        names = [_frame_name(f) for f in frames]
        if not names or names[-1] in waits:
            dropped += n
            total -= n
            continue
        threads[f"{proc} {thread}"] += n
        if names:
            self_time[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
    lines = [f"{total} samples at work ({dropped} waiting left out)"]
    lines.append("threads: " + ", ".join(f"{k} {v / total:.0%}" for k, v in threads.most_common(8)))
    wrappers = ("(core.py)", "(main.py)", "(app.py)", "(<frozen runpy>)", "(__main__.py)",
                "(threading.py)", "(runner.py)")
    for title, counter in (("self", self_time), ("inclusive", inclusive)):
        lines.append(f"-- {title}")
        ranked = [(k, v) for k, v in counter.most_common()
                  if title == "self" or not k.endswith(wrappers)]
        for name, n in ranked[:top]:
            lines.append(f"{n / total:6.1%}  {name}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", choices=("kraken", "kraken-v1", "kucoin", "deep",
                                        "scale-kucoin"))
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--py-spy", default="py-spy")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--nonblocking", action="store_true",
                    help="sample without pausing the processes (less overhead; py-spy then "
                    "counts threads waiting in recv as running)")
    args = ap.parse_args()
    spy = shutil.which(args.py_spy) or args.py_spy
    OUT.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.scenario.startswith("kraken"):
        sim = SimulatorProcess(["--pairs", ",".join(bench.PAIRS), "--speed", "max",
                                "--seed", "1"], capture_stderr=True)
    elif args.scenario == "scale-kucoin":
        _names, pairs = scale.kucoin_pairs()
        sim = SimulatorProcess(["--pairs", pairs, "--rate", str(scale.KUCOIN_STEPS),
                                "--seed", "7"], exchange="kucoin", capture_stderr=True,
                               start_timeout=120)
    else:
        levels = {"RECORDER_SIM_KUCOIN_BOOK_LEVELS": str(bench.DEEP_LEVELS)}
        sim = SimulatorProcess(["--pairs", ",".join(bench.KUCOIN_PAIRS), "--speed", "max",
                                "--seed", "1"], exchange="kucoin", capture_stderr=True,
                               env={**env, **levels} if args.scenario == "deep" else None)
    with sim:
        pin(sim.proc.pid if sim.proc else None, SIMULATOR_CORE)
        if args.scenario.startswith("kraken"):
            api = "v1" if args.scenario == "kraken-v1" else "v2"
            cfg = bench._config(OUT / "profile.toml", sim.urls[f"ws_{api}"], api=api)
        elif args.scenario == "scale-kucoin":
            cfg = scale.kucoin_config(OUT / "profile.toml", sim.urls["rest"], _names)
            env.update(scale.CREDENTIALS)
        else:
            cfg = bench._kucoin_config(OUT / "profile.toml", sim.urls["rest"])
            env.update(bench.KUCOIN_ENV)
        data = OUT / "profile"
        shutil.rmtree(data, ignore_errors=True)
        warm = 20.0 if args.scenario == "scale-kucoin" else 2.0
        proc = subprocess.Popen(
            [sys.executable, "-m", "recorder", "run", str(cfg), "--data", str(data),
             "--duration", str(warm + args.seconds + 1), "--log-level", "warning"],
            cwd=ROOT, env=env, preexec_fn=pinned(RECORDER_CORE))
        time.sleep(warm)  # start-up and book sync are not what this looks at
        out = OUT / f"profile-{args.scenario}.txt"
        subprocess.run([spy, "record", "--pid", str(proc.pid), "--subprocesses", "--rate",
                        "250", "--duration", str(int(args.seconds)), "--format", "raw",
                        "--output", str(out), "--threads",
                        *(["--nonblocking"] if args.nonblocking else [])],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.wait()
    print(summarise(out, args.top, real_time=args.scenario == "scale-kucoin"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
