"""Helpers for end-to-end tests: the recorder as a real process against the simulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from recorder.analysis.query import connect

ROOT = Path(__file__).resolve().parents[1]


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
