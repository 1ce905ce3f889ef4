"""Helpers for end-to-end tests: the recorder as a real process against the simulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb

from recorder.analysis.query import connect

ROOT = Path(__file__).resolve().parents[1]

PAIRS = '["BTC/USD", "ETH/USD"]'
SUBS = (f'[[subscribe]]\nchannel = "trade"\nsymbols = {PAIRS}\n\n'
        f'[[subscribe]]\nchannel = "book"\nsymbols = {PAIRS}\ndepth = 10\n')
FAST = "[connection]\nstale_after = {stale}\nbackoff_initial = 0.05\nbackoff_max = 0.2\n"


def write_config(tmp: Path, name: str, api: str, url: str, subscriptions: str,
                 extra: str = "") -> Path:
    path = tmp / name
    path.write_text(f'[exchange]\nname = "kraken"\napi = "{api}"\nurl = "{url}"\n'
                    f'{extra}\n{subscriptions}')
    return path


def _paths(config: Path | list[Path]) -> list[str]:
    return [str(c) for c in (config if isinstance(config, list) else [config])]


def run_recorder(config: Path | list[Path], data: Path, seconds: float, *more: str,
                 timeout: float = 60) -> subprocess.CompletedProcess:
    """``recorder run`` of one config or several recorded together."""
    cmd = [sys.executable, "-m", "recorder", "run", *_paths(config), "--data", str(data),
           "--duration", str(seconds), *more]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def start_recorder(config: Path | list[Path], data: Path, *more: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "recorder", "run", *_paths(config), "--data", str(data),
           *more]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> float:
    """Send ``sig`` and wait; return the seconds it took to exit. Kills on timeout."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return time.monotonic() - t0


def db(data: Path) -> duckdb.DuckDBPyConnection:
    return connect(data)


def all_files(data: Path) -> list[Path]:
    """The recorded files (not the supervisor's state files in ``.status``)."""
    return [p for p in data.rglob("*") if p.is_file() and ".status" not in p.parts]


def _config(tmp: Path, url: str, name: str = "rel", stale: float = 3.0,
            subs: str = SUBS) -> Path:
    return write_config(tmp, f"{name}.toml", "v2", url, subs, FAST.format(stale=stale))


@contextmanager
def supervised(tmp: Path, *configs: Path, data: Path, args: tuple[str, ...] = ()):
    """`python -m recorder.capture.supervisor` (= `recorder run`, always supervised) as a process;
    its stderr (and the collectors') goes to a file, never to a pipe nobody reads."""
    log_path = tmp / f"supervisor-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log_file:
        cmd = [sys.executable, "-m", "recorder.capture.supervisor", *map(str, configs),
               "--data", str(data), "--backoff-initial", "0.2", "--backoff-max", "0.5", *args]
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT)
        proc.log_path = log_path  # type: ignore[attr-defined]
        try:
            yield proc
        finally:
            _stop_supervisor(proc, data, timeout=20)


def _stop_supervisor(proc: subprocess.Popen, data: Path, timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # A collector must never outlive its supervisor (PR_SET_PDEATHSIG), but make sure in
    # the test: kill whatever pid the state files still name as running.
    for state in _states(data):
        pid = state.get("pid")
        if pid and state.get("state") not in ("stopped", "finished", "failed"):
            _kill_if_alive(pid)


def _states(data: Path) -> list[dict]:
    folder = data / ".status"
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(p.read_text()))
        except ValueError:
            pass
    return out


def _state(data: Path, key: str) -> dict:
    try:
        return json.loads((data / ".status" / f"{key}.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)






def _kill_if_alive(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass




def count_rows(data: Path, what: str) -> int:
    """``SELECT count(*) FROM <what>`` over the dataset (journaled rows included); 0 while
    nothing is recorded yet."""
    try:
        return connect(data).execute(f"SELECT count(*) FROM {what}").fetchone()[0]
    except Exception:  # noqa: BLE001 - no table yet
        return 0
