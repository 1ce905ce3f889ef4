"""Several connections per collector process (issue 18): the public roles of a config share
one process, one thread and one sink per role; every per-role contract stays (state and
heartbeat files, file names and sources, events, metrics, a restart listed per role)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from recorder.capture import jobs
from recorder.core.config import ConfigError, load_config
from recorder.simulator.testing import SimulatorProcess
from sinks.layout import host_name
from tests.e2e import FAST, _state, db, supervised, wait_until, write_config
from tests.metrics_helpers import metrics_port
from tests.test_metrics_e2e import samples, scrape, value

PAIRS = ("BTC/USD", "ETH/USD")
# One topic a connection: trade BTC, trade ETH, book BTC, book ETH on four connections.
SUBS = (f'[[subscribe]]\nchannel = "trade"\nsymbols = {json.dumps(PAIRS)}\n\n'
        f'[[subscribe]]\nchannel = "book"\nsymbols = {json.dumps(PAIRS)}\ndepth = 10\n')
ROLES = ["public", "public-2", "public-3", "public-4"]
WHAT = {"public": ("trades", "BTC/USD"), "public-2": ("trades", "ETH/USD"),
        "public-3": ("book", "BTC/USD"), "public-4": ("book", "ETH/USD")}


def _grouped(tmp: Path, url: str, name: str, extra: str = "") -> Path:
    return write_config(tmp, f"{name}.toml", "v2", url, SUBS,
                        FAST.format(stale=3.0) + "topics_per_connection = 1\n" + extra)


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "13", "--rate", "400"], capture_stderr=True) as s:
        yield s


# -- the plan --------------------------------------------------------------------------------


def test_public_roles_share_a_process_and_private_stays_alone(tmp_path: Path):
    cfg = load_config(_grouped(tmp_path, "ws://127.0.0.1:9/v2", "plan"))
    assert jobs.roles(cfg) == ROLES
    assert [r for _c, r in jobs.processes(jobs.jobs([cfg]))] == [ROLES]
    assert [s.symbols for s in jobs.subscriptions(cfg, "public-3")] == [("BTC/USD",)]
    three = load_config(_grouped(tmp_path, "ws://127.0.0.1:9/v2", "three",
                                 "connections_per_process = 3\n"))
    assert [r for _c, r in jobs.processes(jobs.jobs([three]))] == [ROLES[:3], ROLES[3:]]
    alone = load_config(_grouped(tmp_path, "ws://127.0.0.1:9/v2", "alone",
                                 "connections_per_process = 1\n"))
    assert [r for _c, r in jobs.processes(jobs.jobs([alone]))] == [[r] for r in ROLES]
    # Two configs never share a process; a private role is always a process of its own.
    private = (jobs.jobs([cfg]) + [(cfg, "private")] + jobs.jobs([three]))
    groups = [r for _c, r in jobs.processes(private)]
    assert groups == [ROLES, ["private"], ROLES[:3], ROLES[3:]]


def test_topics_per_connection_is_checked(tmp_path: Path):
    path = tmp_path / "kc.toml"
    path.write_text('[exchange]\nname = "kucoin"\n[connection]\ntopics_per_connection = 301\n'
                    '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC-USDT"]\n')
    with pytest.raises(ConfigError, match="at most 300 topics per connection"):
        load_config(path)
    path.write_text(path.read_text().replace("301", "0"))
    with pytest.raises(ConfigError, match="at least 1"):
        load_config(path)


# -- against the simulator -------------------------------------------------------------------


def _states_running(data: Path, name: str) -> dict[str, dict]:
    states = {r: _state(data, f"{name}-{r}") for r in ROLES}
    if all(s.get("state") == "running" and s.get("pid") for s in states.values()):
        return states
    return {}


def _roles_of_files(data: Path, table: str, name: str) -> set[str]:
    """The roles whose sources wrote ``table``'s finished files."""
    pattern = re.compile(rf"-{re.escape(name)}-(public(?:-\d+)?)-{re.escape(host_name())}-")
    return {m.group(1) for f in (data / table).rglob("*.parquet")
            if (m := pattern.search(f.name))}


def test_several_connections_record_in_one_process_and_stop_cleanly(sim, tmp_path: Path):
    data = tmp_path / "data"
    cfg = _grouped(tmp_path, sim.urls["ws_v2"], "grp")
    with supervised(tmp_path, cfg, data=data, args=("--metrics-port", "0")) as sup:
        states = wait_until(lambda: _states_running(data, "grp"), 20, "four running roles")
        pids = {s["pid"] for s in states.values()}
        assert len(pids) == 1, states  # one collector process for the four connections
        (pid,) = pids
        assert [p.pid for p in psutil.Process(sup.pid).children()] == [pid]
        assert all(s["process_roles"] == ROLES for s in states.values())
        assert len(psutil.Process(pid).threads()) >= 4
        # Every role beats its own heartbeat, connected, from that process.
        beats = wait_until(lambda: all(
            (b := _beat(data, f"grp-{r}")).get("connected") and b.get("frames", 0) > 0
            for r in ROLES) and {r: _beat(data, f"grp-{r}") for r in ROLES}, 20,
            "four connected heartbeats")
        assert {b["pid"] for b in beats.values()} == {pid}
        # Metrics per collector (role), not per process.
        port = metrics_port(sup.log_path)
        found = wait_until(lambda: (f := samples(scrape(port))) and all(
            value(f, "recorder_connected", collector=f"grp-{r}") == 1 for r in ROLES) and f,
            20, "each role connected in the metrics")
        for r in ROLES:
            assert value(found, "recorder_messages_total", collector=f"grp-{r}") > 0, r
        # The process's memory once (under its first role), not four times.
        rss = "recorder_process_resident_memory_bytes"
        assert value(found, rss, collector="grp-public") > 0
        assert not any(n == rss and dict(ls).get("collector") in {f"grp-{r}" for r in ROLES[1:]}
                       for n, ls in found)
        time.sleep(1.5)
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(30) == 0, sup.log_path.read_text()[-3000:]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    for r in ROLES:
        assert _state(data, f"grp-{r}")["state"] == "stopped", r
    # SIGTERM finished every role's files: no journal left, every file readable.
    leftovers = [p for p in data.rglob("*") if p.is_file() and p.suffix != ".parquet"
                 and ".status" not in p.parts]
    assert not leftovers, leftovers
    # Each role wrote its own files (its own source) with its own subscriptions' rows.
    assert _roles_of_files(data, "trades", "grp") == {"public", "public-2"}
    assert _roles_of_files(data, "book", "grp") == {"public-3", "public-4"}
    assert _roles_of_files(data, "events", "grp") == set(ROLES)
    con = db(data)
    for table in ("trades", "book"):
        got = {s for (s,) in con.execute(f"SELECT DISTINCT symbol FROM {table}").fetchall()}
        assert got == set(PAIRS), table
    # Trades complete per symbol (one connection each), books verified.
    for sym, n, distinct, lo, hi in con.execute(
            "SELECT symbol, count(*), count(DISTINCT trade_id), min(trade_id::BIGINT), "
            "max(trade_id::BIGINT) FROM trades GROUP BY symbol").fetchall():
        assert n == distinct == hi - lo + 1, sym
    assert con.execute("SELECT count(*) FROM book WHERE NOT verified").fetchone()[0] == 0
    kinds = dict(con.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    assert kinds.get("connected") == 4, kinds
    assert not {"collector_restarted", "collector_failed", "disconnected"} & set(kinds), kinds


def test_a_crash_restarts_every_role_of_the_process_with_a_gap_each(sim, tmp_path: Path):
    data = tmp_path / "data"
    cfg = _grouped(tmp_path, sim.urls["ws_v2"], "crash")
    with supervised(tmp_path, cfg, data=data) as sup:
        states = wait_until(lambda: _states_running(data, "crash"), 20, "four running roles")
        (first,) = {s["pid"] for s in states.values()}
        wait_until(lambda: all(_beat(data, f"crash-{r}").get("frames", 0) > 0 for r in ROLES),
                   20, "frames on every connection")
        time.sleep(1.5)
        t_kill = time.time()
        os.kill(first, signal.SIGKILL)

        def restarted() -> set:
            got = {r: _state(data, f"crash-{r}") for r in ROLES}
            ok = all(s.get("restarts") == 1 and s.get("state") == "running"
                     and s.get("pid") not in (None, first) for s in got.values())
            return ok and {s["pid"] for s in got.values()}

        pids = wait_until(restarted, 30, "every role restarted")
        assert len(pids) == 1, pids  # again one process for the four
        (second,) = pids
        wait_until(lambda: all(_beat(data, f"crash-{r}").get("pid") == second
                               and _beat(data, f"crash-{r}").get("frames", 0) > 0
                               for r in ROLES), 20, "frames again on every connection")
        time.sleep(1.5)
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(30) == 0, sup.log_path.read_text()[-3000:]
    con = db(data)
    rows = [json.loads(d) for (d,) in con.execute(
        "SELECT detail FROM events WHERE kind = 'collector_restarted'").fetchall()]
    assert sorted(d["role"] for d in rows) == ROLES, rows
    for d in rows:
        assert d["collector"] == f"crash-{d['role']}"
        assert d["previous_pid"] == first and d["pid"] == second and d["exit_code"] == -9
        assert d["process_roles"] == ROLES
        table, symbol = WHAT[d["role"]]
        assert d["symbols"] == [symbol], d
        assert d["channels"] == [{"trades": "trade"}.get(table, table)], d
    kill_us = int(t_kill * 1_000_000)
    # Both sides of the restart recorded on every connection, no trade twice.
    for table in ("trades", "book"):
        for when in ("<", ">"):
            got = {s for (s,) in con.execute(
                f"SELECT DISTINCT symbol FROM {table} WHERE epoch_us(ts_recv) {when} ?",
                [kill_us]).fetchall()}
            assert got == set(PAIRS), (table, when)
    assert con.execute("SELECT count(*) - count(DISTINCT (symbol, trade_id)) FROM trades"
                       ).fetchone()[0] == 0


def _beat(data: Path, key: str) -> dict:
    try:
        return json.loads((data / ".status" / f"{key}.collector.json").read_text())
    except (OSError, ValueError):
        return {}


# -- one process, several collectors: how it ends ---------------------------------------------


class _FakeCollector:
    """What collect_many drives: run() until stopped, or crash / give up when told to."""

    def __init__(self, crash: bool = False, failure: str | None = None) -> None:
        import threading

        self.stopped = threading.Event()
        self.crash, self.failure_to_be = crash, failure
        self.failure: str | None = None
        self.frames = 0
        self.resyncs = 0
        self.books = type("Books", (), {"verified": 0})()
        self.sink = type("Sink", (), {"close": lambda self, timeout=None: True})()

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        if self.crash:
            time.sleep(0.2)
            raise RuntimeError("a bug")
        if self.failure_to_be:
            time.sleep(0.2)
            self.failure = self.failure_to_be
            return
        assert self.stopped.wait(10), "never stopped"


@pytest.fixture
def handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _many(monkeypatch, fakes: dict[str, _FakeCollector]):
    from recorder.capture import runner

    monkeypatch.setattr(runner, "build", lambda cfg, role, *a: (fakes[role], "here"))
    cfg = type("Cfg", (), {"path": "x.toml", "name": "x", "exchange": "kraken",
                           "api": "v2"})()
    return runner.collect_many(cfg, list(fakes), None, None, None)


def test_a_collector_thread_that_crashes_stops_the_others_and_the_process_exits_1(
        monkeypatch, handlers):
    fakes = {"public": _FakeCollector(), "public-2": _FakeCollector(crash=True),
             "public-3": _FakeCollector()}
    assert _many(monkeypatch, fakes) == 1
    assert fakes["public"].stopped.is_set() and fakes["public-3"].stopped.is_set()


def test_a_collector_that_gives_up_stops_the_others_and_the_process_exits_2(
        monkeypatch, handlers):
    from recorder.capture.runner import StartupError

    fakes = {"public": _FakeCollector(failure="credentials refused"),
             "public-2": _FakeCollector()}
    with pytest.raises(StartupError, match="public: credentials refused") as info:
        _many(monkeypatch, fakes)
    assert info.value.code == 2 and fakes["public-2"].stopped.is_set()


def test_sigterm_stops_every_collector_of_the_process(monkeypatch, handlers):
    import threading

    fakes = {"public": _FakeCollector(), "public-2": _FakeCollector()}
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    assert _many(monkeypatch, fakes) == 0
    assert all(f.stopped.is_set() for f in fakes.values())
