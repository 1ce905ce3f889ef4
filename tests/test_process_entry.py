"""`recorder run` as the processes it leaves running: it hands its process over to the
supervisor's own entry point once everything is checked (same pid), and neither the
supervisor nor a collector keeps what they never use in memory (typer's pydantic, numpy;
pyarrow in the supervisor, also after it stored a collector's restart). The metrics token
never appears on a command line."""

from __future__ import annotations

import secrets
from pathlib import Path

import psutil

from recorder.simulator.testing import SimulatorProcess
from tests.e2e import count_rows, start_recorder, stop, wait_until, write_config

SUBS = '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD"]\n'
# Shared libraries of packages kept out (typer itself is pure Python: pydantic_core shows it).
KEPT_OUT = ("pydantic_core", "numpy")


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_run_hands_over_to_a_lean_supervisor_and_lean_collectors(tmp_path: Path) -> None:
    token = "entry-" + secrets.token_hex(8)
    with SimulatorProcess(["--pairs", "BTC/USD", "--seed", "1"]) as sim:
        cfg = write_config(tmp_path, "c.toml", "v2", sim.urls["ws_v2"], SUBS)
        proc = start_recorder(cfg, tmp_path / "data", "--metrics-port", "0",
                              "--metrics-token", token)
        try:
            supervisor = psutil.Process(proc.pid)
            wait_until(lambda: "recorder.capture.supervisor" in " ".join(supervisor.cmdline())
                       and supervisor.children(), 30, "the supervisor and its collector")
            collector = supervisor.children()[0]
            # The collector is running its sink (pyarrow loaded): it has imported all it will.
            wait_until(lambda: "libarrow" in _maps(collector.pid), 30, "a collector with Arrow")
            for p in (supervisor, collector):
                maps = _maps(p.pid)
                assert [m for m in KEPT_OUT if m in maps] == [], p.cmdline()
                assert token not in " ".join(p.cmdline())
            assert "pyarrow" not in _maps(supervisor.pid)
            assert "recorder collect" in " ".join(collector.cmdline())
            # A collector dies: the supervisor restarts it and stores the outage as an
            # events row, through a child of its own, so it still never loads pyarrow.
            collector.kill()
            wait_until(lambda: count_rows(
                tmp_path / "data", "events WHERE kind = 'collector_restarted'") == 1,
                60, "the restart's events row")
            assert "pyarrow" not in _maps(supervisor.pid)
            assert [m for m in KEPT_OUT if m in _maps(supervisor.pid)] == []
        finally:
            stop(proc)
    assert proc.returncode == 0
