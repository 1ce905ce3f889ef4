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

from recorder.simulator.registry import (
    DEMO_API_KEY,
    DEMO_API_SECRET,
    SIM_KEY_ENV,
    SIM_PASSPHRASE_ENV,
    SIM_SECRET_ENV,
)

__all__ = ["DEMO_API_KEY", "DEMO_API_SECRET", "KucoinControl", "SimControl", "SimulatorError",
           "SimulatorProcess"]


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
             persistent: bool = False, code: int | None = None,
             only: str | None = None) -> dict:
        """Drop connections: abort (TCP reset), close (close frame) or eof (FIN only);
        ``only`` = "oldest" | "newest": just that one of the open connections."""
        return self.fault(kind="drop", mode=mode, endpoint=endpoint, code=code,
                          after_messages=after_messages, after_seconds=after_seconds,
                          persistent=persistent or None, only=only)

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


class KucoinControl(SimControl):
    """The /_sim/ control API of ``recorder simulate --exchange kucoin``.

    Per-connection faults take ``after_messages=N`` or ``after_seconds=S`` (default: now),
    ``private=True/False`` (only connections made with a private / public token) and
    ``persistent=True`` (later connections too). See docs/simulator-kucoin.md.
    """

    def drop(self, mode: str = "abort", code: int | None = None,  # type: ignore[override]
             **when: Any) -> dict:
        """abort (TCP reset), close (close frame ``code``), eof (FIN without a close frame)."""
        return self.fault(kind="drop", mode=mode, code=code, **when)

    def stall(self, seconds: float, **when: Any) -> dict:  # type: ignore[override]
        """Send nothing (pongs included) for ``seconds``; what was held follows."""
        return self.fault(kind="stall", seconds=seconds, **when)

    def malformed(self, **when: Any) -> dict:  # type: ignore[override]
        return self.fault(kind="malformed", **when)

    def skip_level2(self, symbol: str, **when: Any) -> dict:
        """Leave out the next level2 message of ``symbol``: a sequence gap."""
        return self.fault(kind="skip_level2", symbol=symbol, **when)

    def limit_error(self, **when: Any) -> dict:
        """509 "exceed max permits per second", then close 1000 "Bye"."""
        return self.fault(kind="limit_error", **when)

    def slow_welcome(self, seconds: float, count: int = 1) -> dict:
        """The next ``count`` connections (-1: all) get their welcome ``seconds`` late."""
        return self.fault(kind="slow_welcome", seconds=seconds, count=count)

    def rest_error(self, code: str = "429000", count: int = 1, path: str | None = None) -> dict:
        """The next ``count`` REST requests (to ``path`` only, if given) fail with ``code``."""
        return self.fault(kind="rest_error", code=code, count=count, path=path)

    def max_connection_age(self, seconds: float) -> dict:
        """KuCoin's daily cut after ``seconds`` (open connections too); 0 = never."""
        return self.fault(kind="max_connection_age", seconds=seconds)

    def invalidate_tokens(self) -> dict:  # type: ignore[override]
        """Every token not used yet is refused from now on."""
        return self.fault(kind="invalidate_tokens")

    def key(self, **settings: Any) -> dict:
        """ip_whitelist=[...] (400006), access_denied=True (400007), version=1|2|3."""
        return self.fault(kind="key", **settings)

    def limits(self, **limits: int) -> dict:
        """uplink=N (client messages per 10 s), per_request=N, per_session=N (topics)."""
        return self.fault(kind="limits", **limits)


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
                 api_key: str | None = None, api_secret: str | None = None,
                 exchange: str | None = None, api_passphrase: str | None = None) -> None:
        # exchange="kucoin": ``recorder simulate --exchange kucoin`` (urls: rest, ws), whose
        # ``control`` is a KucoinControl.
        self.exchange = exchange
        self.args = ([] if exchange is None else ["--exchange", exchange]) + [str(a) for a in args]
        self._credentials = {SIM_KEY_ENV: api_key, SIM_SECRET_ENV: api_secret,
                             SIM_PASSPHRASE_ENV: api_passphrase}
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
        control = KucoinControl if self.exchange == "kucoin" else SimControl
        self.control = control(self.urls["rest"])
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
