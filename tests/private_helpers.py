"""What the private-channel end-to-end tests share: a REST that revokes a key, configs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from recorder.simulator.testing import SimulatorProcess
from tests.sentinel import SENTINEL_KEY, SENTINEL_SECRET

KEY, SECRET = SENTINEL_KEY, SENTINEL_SECRET


def _sim(*more: str, fill_rate: str = "0.05") -> SimulatorProcess:
    return SimulatorProcess(["--seed", "5", "--rate", "100", "--fill-rate", fill_rate, *more],
                            capture_stderr=True, api_key=KEY, api_secret=SECRET)


def _config(tmp: Path, sim: SimulatorProcess, api: str, public: bool = False,
            backoff: tuple[float, float] = (0.2, 1)) -> Path:
    path = tmp / f"private-{api}.toml"
    text = (f'[exchange]\nname = "kraken"\napi = "{api}"\nurl = "{sim.urls["ws_" + api]}"\n'
            f'auth_url = "{sim.urls["ws_auth_" + api]}"\nrest_url = "{sim.urls["rest"]}"\n'
            f'[connection]\nbackoff_initial = {backoff[0]}\nbackoff_max = {backoff[1]}\n'
            '[credentials]\napi_key_env = "TRADER_KEY"\napi_secret_env = "TRADER_SECRET"\n'
            '[[subscribe]]\nchannel = "fills"\n')
    if public:
        text += '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD", "ETH/USD"]\n'
    path.write_text(text)
    return path


def _start(cfg: Path, data: Path, secret: str = SECRET, *more: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recorder", "run", str(cfg), "--data",
                             str(data), *more], cwd=ROOT, env=_env(secret),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, expect: int = 0) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    # The exit code only: stderr may be long; the session plugin checks it for the secret.
    assert proc.returncode == expect, f"exit {proc.returncode}; stderr tail: {err[-3000:]}"
    return out, err


class RevokingRest:
    """A REST front of the simulator's: forwards token requests until ``revoked``, then
    answers as Kraken does for a deleted key (EAPI:Invalid key)."""

    def __init__(self, target: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.revoked = False
        self.refused = 0
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if front.revoked:
                    front.refused += 1
                    status, data = 200, b'{"error":["EAPI:Invalid key"]}'
                else:
                    req = urllib.request.Request(target + self.path, data=body, method="POST",
                                                 headers=dict(self.headers.items()))
                    with urllib.request.urlopen(req, timeout=5) as resp:
                        status, data = resp.status, resp.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


ROOT = Path(__file__).resolve().parents[1]


def _env(secret: str = SECRET) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRAKEN_", "TRADER_"))}
    env.update(TRADER_KEY=KEY, TRADER_SECRET=secret)
    return env
