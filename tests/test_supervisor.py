"""The supervisor behind `recorder run`: restarts with backoff, permanent failures, signal
forwarding, state files. Most tests use tiny stand-in children (``python -c``) so they take
a second; two use real collectors against an unreachable endpoint (no simulator needed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recorder.capture.supervisor import Supervisor, describe_exit, read_states
from recorder.core.config import load_config
from tests.e2e import ROOT, db

DEAD_URL = "ws://127.0.0.1:9/v2"  # the discard port: nothing listens, connects fail fast


def _cfg(tmp: Path, name: str = "job", output: Path | None = None, url: str = DEAD_URL):
    path = tmp / f"{name}.toml"
    out = f'[output]\npath = "{output}"\n' if output else ""
    path.write_text(f'[exchange]\nname = "kraken"\napi = "v2"\nurl = "{url}"\n{out}'
                    '[connection]\nbackoff_initial = 0.05\nbackoff_max = 0.2\n'
                    '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD"]\n')
    return load_config(path)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _supervisor(tmp: Path, commands, n: int = 1, **options) -> Supervisor:
    """A Supervisor whose children run ``commands(index, attempt)``."""
    jobs = [(_cfg(tmp, f"job{i}"), "public") for i in range(n)]
    attempts: dict[int, int] = {}

    def command(cfg, role, duration):
        i = int(cfg.name[3:])
        attempts[i] = attempts.get(i, 0) + 1
        return commands(i, attempts[i])

    options.setdefault("backoff_initial", 0.05)
    options.setdefault("backoff_max", 0.2)
    options.setdefault("startup_grace", 0.3)
    sup = Supervisor(jobs, tmp / "data", None, None, command=command, **options)
    sup.attempts = attempts  # type: ignore[attr-defined]
    return sup


def _signal_later(seconds: float, sig: int = signal.SIGTERM) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), sig))
    timer.start()
    return timer


def test_describe_exit():
    assert describe_exit(-9) == "killed by SIGKILL (signal 9)"
    assert describe_exit(1) == "exit code 1"


def test_crashed_collector_is_restarted_with_backoff_and_recorded(tmp_path):
    # Runs 0.5 s (past the start-up grace), then crashes; after 3 crashes it runs until
    # told to stop.
    def commands(i, attempt):
        if attempt <= 3:
            return _py("import time, sys; time.sleep(0.5); sys.exit(3)")
        return _py("import time; time.sleep(30)")

    sup = _supervisor(tmp_path, commands)
    timer = _signal_later(4.0)
    t0 = time.monotonic()
    code = sup.run()
    timer.cancel()
    assert code == 0
    assert time.monotonic() - t0 < 6
    child = sup.children[0]
    assert child.restarts == 3 and sup.attempts[0] == 4
    assert child.last_exit == "killed by SIGTERM (signal 15)"  # ours: a clean stop
    state = read_states(tmp_path / "data")[0]
    assert state["state"] == "stopped" and state["restarts"] == 3
    events = db(tmp_path / "data").execute(
        "SELECT detail FROM events WHERE kind = 'collector_restarted' ORDER BY ts_recv"
    ).fetchall()
    assert len(events) == 3
    d = json.loads(events[0][0])
    assert d["exit_code"] == 3 and d["collector"] == "job0-public" and d["restarts"] == 1


def test_exit_code_2_is_permanent_and_stops_the_others(tmp_path):
    def commands(i, attempt):
        if i == 1:
            return _py("import sys, time; time.sleep(0.2); "
                       "print('error: bad credentials', file=sys.stderr); sys.exit(2)")
        return _py("import time; time.sleep(30)")

    sup = _supervisor(tmp_path, commands, n=2, startup_grace=3.0)  # fails at start-up
    t0 = time.monotonic()
    assert sup.run() == 2
    assert time.monotonic() - t0 < 5
    assert sup.attempts == {0: 1, 1: 1}, "exit code 2 is never retried"
    states = {s["collector"]: s for s in read_states(tmp_path / "data")}
    assert states["job1-public"]["state"] == "failed"
    assert "exit code 2" in states["job1-public"]["reason"]
    assert states["job0-public"]["state"] == "stopped"
    kinds = [r[0] for r in db(tmp_path / "data").execute("SELECT kind FROM events").fetchall()]
    assert kinds == ["collector_failed"]


def test_exit_code_2_mid_run_stops_only_that_collector(tmp_path):
    # A key revoked after the job has been recording: the private collector exits 2 for
    # good, the public one keeps recording until the job is stopped, and the job exits 2.
    def commands(i, attempt):
        if i == 1:
            return _py("import sys, time; time.sleep(1.0); "
                       "print('error: credentials refused 3 times', file=sys.stderr); "
                       "sys.exit(2)")
        return _py("import time; time.sleep(30)")

    sup = _supervisor(tmp_path, commands, n=2, startup_grace=0.3)
    timer = _signal_later(3.0)
    t0 = time.monotonic()
    code = sup.run()
    timer.cancel()
    assert code == 2 and time.monotonic() - t0 >= 2.9, "job0 ran on until the signal"
    assert sup.attempts == {0: 1, 1: 1}, "exit code 2 is never retried"
    states = {s["collector"]: s for s in read_states(tmp_path / "data")}
    assert states["job1-public"]["state"] == "failed"
    assert states["job0-public"]["state"] == "stopped"
    kinds = [r[0] for r in db(tmp_path / "data").execute("SELECT kind FROM events").fetchall()]
    assert kinds == ["collector_failed"]


def test_exit_75_is_retried_until_space_returns_and_the_outage_is_one_event(tmp_path):
    # Recording, then a crash; the disk is full, so the next 4 collectors exit 75 at once
    # (more than max_startup_failures: 75 is not a start-up failure); then space is back.
    def commands(i, attempt):
        if attempt == 1:
            return _py("import time, sys; time.sleep(0.5); sys.exit(1)")
        if attempt <= 5:
            return _py("import sys; print('error: the data directory is full (disk full)', "
                       "file=sys.stderr); sys.exit(75)")
        return _py("import time; time.sleep(30)")

    sup = _supervisor(tmp_path, commands, max_startup_failures=2)
    timer = _signal_later(4.0)
    t0 = time.time()
    code = sup.run()
    timer.cancel()
    assert code == 0 and sup.attempts[0] == 6
    rows = db(tmp_path / "data").execute(
        "SELECT epoch(ts_recv), symbol, channel, detail FROM events "
        "WHERE kind = 'collector_restarted'").fetchall()
    assert len(rows) == 1, "one outage, one gap"
    ts, symbol, channel, raw = rows[0]
    d = json.loads(raw)
    # The gap starts at the crash of the recording collector, not at the last refusal.
    assert t0 + 0.4 < ts < t0 + 1.5 and d["exit_code"] == 1
    assert d["failed_starts"] == 4 and "disk full" in d["failed_start_reason"]
    assert d["down_s"] >= 4 * 0.05 and d["restarts"] == 5
    assert (symbol, channel) == (None, None)  # the whole connection, like `disconnected`
    assert d["channels"] == ["trade"] and d["symbols"] == ["BTC/USD"]
    assert read_states(tmp_path / "data")[0]["state"] == "stopped"


def test_a_full_disk_at_the_first_start_waits_instead_of_failing(tmp_path):
    def commands(i, attempt):
        if attempt <= 3:
            return _py("import sys; sys.exit(75)")
        return _py("import time; time.sleep(30)")

    sup = _supervisor(tmp_path, commands, max_startup_failures=2)
    seen = []

    def watch():  # the state file says why it waits
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not seen:
            for st in read_states(tmp_path / "data"):
                if st["state"] == "backoff":
                    seen.append(st)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    timer = _signal_later(2.5)
    assert sup.run() == 0
    timer.cancel()
    watcher.join()
    assert sup.attempts[0] == 4 and sup.children[0].state == "stopped"
    assert seen and "disk full" in seen[0]["reason"]
    # Nothing was recorded before: no gap to list.
    assert not (tmp_path / "data" / "events").exists()


def test_a_collector_that_cannot_start_fails_instead_of_looping(tmp_path):
    sup = _supervisor(tmp_path, lambda i, a: _py("import sys; sys.exit(1)"),
                      max_startup_failures=3)
    t0 = time.monotonic()
    assert sup.run() == 2
    assert time.monotonic() - t0 < 5
    assert sup.attempts[0] == 3
    state = read_states(tmp_path / "data")[0]
    assert state["state"] == "failed" and "failed 3 times in a row" in state["reason"]


def test_sigterm_is_forwarded_and_a_hung_child_is_killed(tmp_path):
    marker = tmp_path / "got-term"
    graceful = _py("import signal, sys, time, pathlib\n"
                   "def stop(*_):\n"
                   f"    pathlib.Path({str(marker)!r}).write_text('x'); sys.exit(0)\n"
                   "signal.signal(signal.SIGTERM, stop)\n"
                   "time.sleep(30)")
    hung = _py("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
               "time.sleep(30)")
    sup = _supervisor(tmp_path, lambda i, a: graceful if i == 0 else hung, n=2,
                      stop_timeout=1.0)
    timer = _signal_later(1.0, signal.SIGINT)
    t0 = time.monotonic()
    code = sup.run()
    timer.cancel()
    assert marker.exists(), "the collector got SIGTERM"
    assert code == 1, "a collector had to be killed"
    assert time.monotonic() - t0 < 4
    assert sup.children[0].last_exit == "exit code 0"
    assert sup.children[1].last_exit == "killed by SIGKILL (signal 9)"


def test_duration_is_shared_by_restarts(tmp_path):
    seen: list[float | None] = []

    def command(cfg, role, duration):
        seen.append(duration)
        return _py("import time, sys; time.sleep(0.4); sys.exit(1)")

    jobs = [(_cfg(tmp_path, "job0"), "public")]
    sup = Supervisor(jobs, tmp_path / "data", 1.5, None, command=command,
                     backoff_initial=0.05, backoff_max=0.1, startup_grace=0.2,
                     record_events=False)
    t0 = time.monotonic()
    assert sup.run() == 0
    assert time.monotonic() - t0 < 3
    assert len(seen) >= 2 and seen[0] > seen[-1] > 0  # the rest of the duration, not all
    assert read_states(tmp_path / "data")[0]["state"] == "stopped"


# -- real collectors -------------------------------------------------------------------------


def test_unwritable_data_directory_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    good = _cfg(tmp_path, "good", output=tmp_path / "good")
    bad = _cfg(tmp_path, "bad", output=blocker / "data")
    proc = subprocess.run([sys.executable, "-m", "recorder.capture.supervisor", str(good.path),
                           str(bad.path)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "cannot create the data directory" in errors[0], proc.stderr
    assert "bad/public: the collector cannot run" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The good job was stopped cleanly: whatever it recorded is finished Parquet, no journal
    # segment or temporary file is left (on a loaded machine it may not have recorded
    # anything yet when the bad one failed: the check holds for none too).
    files = [p for p in (tmp_path / "good").rglob("*") if p.is_file()
             and ".status" not in p.parts]
    assert all(p.suffix == ".parquet" for p in files), files
    for f in files:
        pq.read_table(f)
    # The same through `recorder run` with one config (supervised too: one job).
    proc = subprocess.run([sys.executable, "-m", "recorder", "run", str(bad.path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "data directory" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_collectors_do_not_outlive_a_killed_supervisor(tmp_path):
    cfg = _cfg(tmp_path, "orphan")
    data = tmp_path / "data"
    sup = subprocess.Popen([sys.executable, "-m", "recorder.capture.supervisor", str(cfg.path),
                            "--data", str(data)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, cwd=ROOT)
    pid = None
    try:
        deadline = time.monotonic() + 15
        while pid is None and time.monotonic() < deadline:
            states = read_states(data)
            pid = states[0].get("pid") if states else None
            time.sleep(0.05)
        assert pid
        time.sleep(1.5)  # past its start-up, recording (connect_failed events)
        sup.kill()
        sup.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        assert not _alive(pid), "the collector outlived its supervisor"
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
    # It stopped cleanly on the SIGTERM: finished files only, events say so.
    leftovers = [p for p in data.rglob("*") if p.is_file() and p.suffix != ".parquet"
                 and ".status" not in p.parts]
    assert not leftovers
    kinds = {r[0] for r in db(data).execute("SELECT DISTINCT kind FROM events").fetchall()}
    assert {"connect_failed", "stopped"} & kinds


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_supervised_real_collector_stops_cleanly(tmp_path, sig):
    cfg = _cfg(tmp_path, "clean")
    data = tmp_path / "data"
    sup = subprocess.Popen([sys.executable, "-m", "recorder.capture.supervisor", str(cfg.path),
                            "--data", str(data)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 15
        while not (read_states(data) and read_states(data)[0].get("pid")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
        t0 = time.monotonic()
        sup.send_signal(sig)
        _, err = sup.communicate(timeout=15)
        took = time.monotonic() - t0
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    assert sup.returncode == 0, err
    assert took < 5
    assert read_states(data)[0]["state"] == "stopped"


def test_an_outage_the_job_outlives_is_still_one_gap_row(tmp_path):
    """A collector crashes and the job is stopped during the backoff before its restart:
    the hole still becomes a collector_restarted row, down until the job ended."""
    def commands(i, attempt):
        return _py("import sys, time; time.sleep(0.5); sys.exit(1)")

    sup = _supervisor(tmp_path, commands, backoff_initial=5.0, backoff_max=5.0)
    timer = _signal_later(1.5)
    t0 = time.time()
    code = sup.run()
    timer.cancel()
    assert code == 0 and sup.attempts == {0: 1}
    rows = db(tmp_path / "data").execute(
        "SELECT kind, epoch(ts_recv), detail FROM events").fetchall()
    assert [r[0] for r in rows] == ["collector_restarted"]
    detail = json.loads(rows[0][2])
    assert detail["ended"] == "the job stopped first" and detail["exit"] == "exit code 1"
    assert 0.5 <= detail["down_s"] <= 2.5 and t0 + 0.4 <= rows[0][1] <= t0 + 2.0
