"""Watching the data live: `recorder tail TABLE` follows journaled rows (across rotations, no
row missed), `recorder watch CONFIG` prints normalized rows without recording anything, and
`recorder status --watch` refreshes until Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from recorder.simulator.testing import SimulatorProcess
from tests.e2e import ROOT, _config, _state, supervised, wait_until


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "3", "--rate", "400"], capture_stderr=True) as s:
        yield s


class Lines:
    """A command's stdout, read line by line on a thread."""

    def __init__(self, cmd: list[str], cwd: Path = ROOT) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=cwd)
        self.lines: list[str] = []
        self.err: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines),
                         daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err),
                         daemon=True).start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait(self, predicate, timeout: float, what: str):
        return wait_until(lambda: predicate(self.lines), timeout, what)

    def interrupt(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _recorder(*args: str) -> list[str]:
    return [sys.executable, "-m", "recorder", *args]


def _table(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    header = re.split(r"\s{2,}", lines[0].strip())
    return header, [re.split(r"\s{2,}", ln.strip()) for ln in lines[1:]]


def test_tail_follows_journaled_rows_across_rotations(sim, tmp_path):
    data = tmp_path / "data"
    cfg = _config(tmp_path, sim.urls["ws_v2"], name="tl")
    # 2 s files: several segments are finalized (and deleted) while tail follows them.
    cfg.write_text(cfg.read_text() + '[output]\nrotate = "2s"\njournal_interval = 0.25\n')
    with supervised(tmp_path, cfg, data=data):
        wait_until(lambda: _state(data, "tl-public").get("state") == "running", 30,
                   "the collector")
        tail = Lines(_recorder("tail", "trades", "--data", str(data), "--symbol", "eth-usd",
                               "-n", "3"))
        try:
            tail.wait(lambda ls: len(ls) > 400, 40, "400 followed trades")
            rotated = wait_until(lambda: len(list(data.glob("trades/*/*/*.parquet"))) >= 3,
                                 30, "finished trade files")
        finally:
            code = tail.interrupt()
    assert rotated and code == 0, "\n".join(tail.err)
    header, rows = _table(tail.lines)
    assert header[:4] == ["exchange", "symbol", "ts_exchange", "ts_recv"]
    assert "conn_id" not in header and "trade_id" in header
    assert {r[1] for r in rows} == {"ETH/USD"}
    # The simulator numbers each pair's trades: no id is missing or repeated, rotations
    # (a segment deleted between two polls) included.
    at = header.index("trade_id")
    ids = [int(r[at]) for r in rows]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "a hole or a repeat in the tail"
    assert not any("Traceback" in ln for ln in tail.err)


def test_tail_no_follow_and_mistakes(tmp_path):
    out = subprocess.run(_recorder("tail", "nope", "--data", str(tmp_path)),
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "no table 'nope'" in out.stderr
    out = subprocess.run(_recorder("tail", "trades", "--data", str(tmp_path / "missing")),
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "no data directory" in out.stderr
    out = subprocess.run(_recorder("tail", "trades", "--data", str(tmp_path), "--no-follow"),
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 0 and out.stdout == ""


def test_watch_prints_rows_and_records_nothing(sim, tmp_path):
    cfg = _config(tmp_path, sim.urls["ws_v2"], name="wt")
    before = set(tmp_path.rglob("*"))
    out = subprocess.run(_recorder("watch", str(cfg), "--duration", "2", "--table", "trades",
                                   "--symbol", "BTC/USD"), capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    trades = [ln for ln in lines if re.match(r"\d\d:\d\d:\d\d\.\d{6} trades ", ln)]
    assert len(trades) > 10
    assert all(" BTC/USD " in ln and "price=" in ln and "qty=" in ln for ln in trades)
    assert any(" events " in ln and "kind=connected" in ln for ln in lines)
    assert not [ln for ln in lines if " book " in ln]
    assert set(tmp_path.rglob("*")) == before, "watch wrote files"


def test_watch_into_a_closed_pipe_ends_quietly(sim, tmp_path):
    cfg = _config(tmp_path, sim.urls["ws_v2"], name="wp")
    shell = (f"{sys.executable} -m recorder watch {cfg} --duration 20 | head -3")
    t0 = time.monotonic()
    out = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert time.monotonic() - t0 < 15, "watch kept running after its reader left"
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 3 and "Traceback" not in out.stderr


def test_status_watch_refreshes_until_ctrl_c(sim, tmp_path):
    data = tmp_path / "data"
    cfg = _config(tmp_path, sim.urls["ws_v2"], name="sw")
    with supervised(tmp_path, cfg, data=data):
        wait_until(lambda: _state(data, "sw-public").get("state") == "running", 30,
                   "the collector")
        watch = Lines(_recorder("status", "--watch", "--interval", "0.5", "--data", str(data)))
        try:
            watch.wait(lambda ls: sum("collector(s)" in ln for ln in ls) >= 3, 60,
                       "three refreshes")
        finally:
            code = watch.interrupt()
    assert code == 0, "\n".join(watch.err)
    text = "\n".join(watch.lines)
    assert "sw-public: running" in text and "Ctrl-C to stop" in text
