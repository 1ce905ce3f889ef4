"""Test helpers: run the simulator as a real subprocess and switch its faults.

    with SimulatorProcess(["--seed", "1"]) as sim:
        ws = websocket.create_connection(sim.urls["ws_v2"])
        sim.control.drop(endpoint="ws_v2", after_messages=100)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from recorder.cli.simulate import SIM_KEY_ENV, SIM_SECRET_ENV
from recorder.simulator.kraken.tokens import DEMO_API_KEY, DEMO_API_SECRET

__all__ = ["DEMO_API_KEY", "DEMO_API_SECRET", "SimControl", "SimulatorError", "SimulatorProcess"]


class SimulatorError(RuntimeError):
    pass


class SimControl:
    """Client of the simulator's /_sim/ control API (faults and stats)."""

    def __init__(self, rest_url: str, timeout: float = 10.0) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.timeout = timeout

    def _call(self, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.rest_url + path, data=data, method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise SimulatorError(f"{path}: HTTP {exc.code}: {detail}") from None

    def fault(self, **spec: Any) -> dict:
        """POST one raw fault object; see docs/simulator.md for the kinds."""
        return self._call("/_sim/fault", {k: v for k, v in spec.items() if v is not None})

    def stats(self) -> dict:
        return self._call("/_sim/stats")

    def drop(self, mode: str = "abort", endpoint: str | None = None,
             after_messages: int | None = None, after_seconds: float | None = None,
             persistent: bool = False, code: int | None = None) -> dict:
        """Drop connections: abort (TCP reset), close (close frame) or eof (FIN only)."""
        return self.fault(kind="drop", mode=mode, endpoint=endpoint, code=code,
                          after_messages=after_messages, after_seconds=after_seconds,
                          persistent=persistent or None)

    def stall(self, seconds: float, endpoint: str | None = None,
              after_messages: int | None = None, after_seconds: float | None = None,
              persistent: bool = False) -> dict:
        """Send nothing, heartbeats included, for ``seconds``; held data follows afterwards."""
        return self.fault(kind="stall", seconds=seconds, endpoint=endpoint,
                          after_messages=after_messages, after_seconds=after_seconds,
                          persistent=persistent or None)

    def malformed(self, endpoint: str | None = None, after_messages: int | None = None) -> dict:
        return self.fault(kind="malformed", endpoint=endpoint, after_messages=after_messages)

    def corrupt_book(self, symbol: str, endpoint: str | None = None,
                     after_messages: int | None = None) -> dict:
        """The next book update of ``symbol`` carries one wrong level in the top 10."""
        return self.fault(kind="corrupt_book", symbol=symbol, endpoint=endpoint,
                          after_messages=after_messages)

    def set_status(self, status: str) -> dict:
        """online | maintenance | cancel_only | post_only (pushed to every connection)."""
        return self.fault(kind="status", status=status)

    def invalidate_tokens(self, kick: bool = False) -> dict:
        return self.fault(kind="invalidate_tokens", kick=kick)

    def reject_subscribes(self, count: int) -> dict:
        """The next ``count`` subscribe requests get "Exceeded msg rate"."""
        return self.fault(kind="reject_subscribes", count=count)

    def clear(self) -> dict:
        return self.fault(kind="clear")


class SimulatorProcess:
    """Start ``python -m recorder.simulator --port 0 ARGS`` and stop it on exit.

    ``urls`` is the simulator's first stdout line; its stderr goes to ``stderr`` (a file
    object, default: this process's stderr) or is kept if ``capture_stderr`` is true.
    ``api_key`` / ``api_secret`` reach the simulator through its environment variables, never
    its command line (which every local user can read).
    """

    def __init__(self, args: Sequence[str] = (), start_timeout: float = 20.0,
                 stop_timeout: float = 5.0, stderr: IO | None = None,
                 capture_stderr: bool = False, env: dict[str, str] | None = None,
                 api_key: str | None = None, api_secret: str | None = None) -> None:
        self.args = [str(a) for a in args]
        self._credentials = {SIM_KEY_ENV: api_key, SIM_SECRET_ENV: api_secret}
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._stderr = stderr
        self._capture = capture_stderr
        self._env = env
        self.proc: subprocess.Popen | None = None
        self.urls: dict[str, str] = {}
        self.control: SimControl
        self.stderr_lines: list[str] = []

    def start(self) -> SimulatorProcess:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ if self._env is None else self._env)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update({k: v for k, v in self._credentials.items() if v is not None})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recorder.simulator", "--port", "0", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE if self._capture else self._stderr,
            text=True, env=env,
        )
        if self._capture:
            threading.Thread(target=self._drain_stderr, daemon=True).start()
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(self.start_timeout)
        if not line or not line[0].strip():
            code = self.proc.poll()
            self.stop()
            raise SimulatorError(
                f"simulator did not start (exit code {code}): {''.join(self.stderr_lines)[-2000:]}"
            )
        self.urls = json.loads(line[0])
        self.control = SimControl(self.urls["rest"])
        return self

    def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for ln in self.proc.stderr:
            self.stderr_lines.append(ln)

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate, timeout: float = 10.0, interval: float = 0.05) -> dict:
        """Poll /_sim/stats until ``predicate(stats)`` is true; returns the stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.control.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise SimulatorError(f"timed out waiting; last stats: {stats}")
            time.sleep(interval)
