"""`recorder status`: state files + the last hour of data (finished files and journals)."""

from __future__ import annotations

import json
import os
import signal
import time

import typer
from typer.testing import CliRunner

from recorder.analysis.status import collect_status, collector_of, render, status
from recorder.simulator.testing import SimulatorProcess
from tests.e2e import _config, _state, supervised, wait_until

app = typer.Typer()
app.command()(status)
app.command("noop", hidden=True)(lambda: None)  # keep `status` a subcommand
runner = CliRunner()


def test_collector_names():
    assert collector_of("pub-public-4242") == "pub-public"
    assert collector_of("my-job-2-private-17") == "my-job-2-private"
    assert collector_of("supervisor-12-1795325078") == "supervisor"


def test_no_data(tmp_path):
    result = runner.invoke(app, ["status", "--data", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "no data directory" in result.output
    result = runner.invoke(app, ["status", "--data", str(tmp_path)])
    assert result.exit_code == 0
    assert "nothing recorded" in result.output
    assert collect_status(tmp_path)["collectors"] == {}


def test_status_of_a_live_and_a_stopped_collector(tmp_path):
    data = tmp_path / "data"
    with SimulatorProcess(["--seed", "2", "--rate", "500"], capture_stderr=True) as sim:
        cfg = _config(tmp_path, sim.urls["ws_v2"], name="st")
        with supervised(tmp_path, cfg, data=data) as sup:
            # "running" once the collector outlived the supervisor's start-up grace period.
            wait_until(lambda: _state(data, "st-public").get("state") == "running", 20,
                       "the collector")
            time.sleep(2.5)
            def counted(key: str) -> bool:  # reaches the journal within about a second
                c = collect_status(data)["collectors"].get("st-public") or {}
                return (c.get(key) or 0) >= 1

            def seen(key: str, what: str) -> None:
                try:
                    wait_until(lambda: counted(key), 15, what)
                except AssertionError as e:
                    c = collect_status(data)["collectors"].get("st-public") or {}
                    raise AssertionError(f"{e}; status: {c.get('events')}, "
                                         f"simulator: {sim.control.stats()}") from None

            # One fault at a time, so the drop cannot overtake the corrupted update.
            sim.control.corrupt_book("BTC/USD", endpoint="ws_v2")
            seen("integrity_failures", "the checksum mismatch")
            sim.control.drop(endpoint="ws_v2")
            seen("gaps", "the gap")
            time.sleep(1.0)  # the reconnected collector records again
            # Live: nothing is finalized yet (1 h files); the journal has it all.
            live = collect_status(data)
            text = runner.invoke(app, ["status", "--data", str(data)]).output
            js = json.loads(runner.invoke(app, ["status", "--data", str(data),
                                                "--format", "json"]).output)
            pid = _state(data, "st-public")["pid"]
            sup.send_signal(signal.SIGTERM)
            assert sup.wait(20) == 0
    c = live["collectors"]["st-public"]
    assert c["state"]["state"] == "running" and c["state"]["pid"] == pid
    assert c["last_message_age_s"] is not None and c["last_message_age_s"] < 3
    assert set(c["tables"]) == {"trades", "book"}
    assert c["tables"]["trades"]["symbols"] == ["BTC/USD", "ETH/USD"]
    assert c["tables"]["book"]["rows_per_s_1min"] > 10
    assert c["gaps"] == 1 and c["events"]["disconnected"] == 1
    assert c["integrity_failures"] == 1
    assert "st-public: running, pid" in text and "integrity fails 1 (checksum_mismatch 1)" in text
    assert "gaps           1 (disconnected 1)" in text
    beat = c["collector"]  # the collector's own heartbeat file
    assert beat["frames"] > 0 and beat["age_s"] < 10 and beat["conn_id"] >= 2
    # The forced drop may still be in its reconnect backoff when status looks.
    shown = ("connected to ws://127.0.0.1:" if beat["connected"] else "not connected")
    assert f"  collector      {shown}" in text
    assert js["collectors"]["st-public"]["gaps"] == 1
    # After the stop: the same rows from the finished files; state "stopped", no pid.
    after = collect_status(data)["collectors"]["st-public"]
    assert after["state"]["state"] == "stopped" and after["state"]["pid"] is None
    assert after["tables"]["trades"]["rows"] >= c["tables"]["trades"]["rows"]
    assert after["integrity_failures"] == 1 and after["gaps"] == 1
    # Old data falls out of the window.
    later = collect_status(data, now=time.time() + 7200)["collectors"]["st-public"]
    assert later["tables"] == {} and later["gaps"] == 0
    assert "no market data" in render(collect_status(data, now=time.time() + 7200))
    assert not os.path.exists(data / ".status" / "st-public.json.tmp")
