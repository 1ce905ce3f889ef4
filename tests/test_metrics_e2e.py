"""`--metrics-port` against the simulator, real processes: the counters agree with the rows in
the dataset (within the last second), a forced disconnect moves recorder_gaps_total and fires
the gap alert (a corrupted book the integrity alert), and a kill -9 of a collector neither
resets nor doubles what the supervisor serves. The rules of docs/alerts.yml are evaluated on
the scraped samples by tests/promql.py (which agrees with promtool: test_alert_rules.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from recorder.simulator.testing import SimulatorProcess
from tests.e2e import ROOT, _config, _state, db, supervised, wait_until
from tests.metrics_helpers import (
    metrics_port,
    recorder_run,
    rule,
)
from tests.promql import Store, alerts

# Rows reach the journal within ~0.1 s (hand-over) + one journal interval; the counters are
# published every 0.25 s: with this interval, what was received a second ago is counted.
FAST_JOURNAL = "[output]\njournal_interval = 0.25\n"


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "5", "--rate", "500"], capture_stderr=True) as s:
        yield s




def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items()
               if n == name and set(labels.items()) <= set(ls))


class Scraper:
    """Scrapes into a Store (for the rules) and keeps every scrape (for monotonicity)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.store = Store()
        self.history: list[tuple[float, dict]] = []

    def __call__(self) -> dict:
        at = time.time()
        text = scrape(self.port)
        self.store.add_scrape(at, text)
        found = samples(text)
        self.history.append((at, found))
        return found

    @property
    def last_at(self) -> float:
        return self.history[-1][0]

    def until(self, predicate, timeout: float, what: str) -> dict:
        def check() -> dict | None:
            found = self()
            return found if predicate(found) else None

        return wait_until(check, timeout, what, interval=0.25)

    def firing(self, name: str) -> list[dict]:
        return alerts(rule(name), self.store, self.last_at, step=0.25)




def _dataset_rows(data: Path, table: str, until_us: int | None = None) -> int:
    where = f" WHERE epoch_us(ts_recv) <= {until_us}" if until_us is not None else ""
    return db(data).execute(f"SELECT count(*) FROM {table}{where}").fetchone()[0]


def test_counters_agree_with_the_rows_in_the_dataset(sim, tmp_path):
    data = tmp_path / "data"
    cfg = _config(tmp_path, sim.urls["ws_v2"], name="agree")
    cfg.write_text(cfg.read_text() + FAST_JOURNAL)
    with recorder_run(tmp_path, cfg, data) as (proc, port):
        scraper = Scraper(port)
        scraper.until(lambda s: value(s, "recorder_rows_total", table="trades") > 300, 30,
                      "counted trades")
        checks = 0
        for _ in range(4):
            t1 = time.time()
            counted = scraper()
            for table in ("trades", "book", "events"):
                c = value(counted, "recorder_rows_total", exchange="kraken",
                          collector="agree-public", table=table)
                stored_before = _dataset_rows(data, table, int((t1 - 1.0) * 1e6))
                stored_now = _dataset_rows(data, table)
                # Everything received more than a second ago is counted; nothing is counted
                # that the dataset does not hold.
                assert stored_before <= c <= stored_now, (table, stored_before, c, stored_now)
                checks += 1
            time.sleep(0.7)
        assert checks == 12
        found = scraper()
        assert value(found, "recorder_messages_total", collector="agree-public") > 0
        assert value(found, "recorder_received_bytes_total") > 10_000
        assert value(found, "recorder_collector_up", collector="agree-public") == 1
        assert value(found, "recorder_connected", collector="agree-public") == 1
        assert value(found, "recorder_receive_lag_seconds_count", table="trades") > 10
        assert value(found, "recorder_gaps_total") == 0
        assert 0 < value(found, "recorder_disk_free_bytes") <= value(found,
                                                                     "recorder_disk_size_bytes")
        assert value(found, "recorder_process_resident_memory_bytes",
                     collector="supervisor") > 0
        assert value(found, "recorder_last_message_age_seconds") < 5
        assert scraper.firing("RecorderNoData") == [] and scraper.firing("RecorderGap") == []
    assert proc.returncode == 0, proc.log_path.read_text()[-3000:]
    # Served until the collectors stopped, not after.
    with pytest.raises(OSError):
        scrape(port)


def test_a_forced_disconnect_is_a_gap_and_fires_the_gap_alert(sim, tmp_path):
    data = tmp_path / "data"
    cfg = _config(tmp_path, sim.urls["ws_v2"], name="gap")
    with supervised(tmp_path, cfg, data=data, args=("--metrics-port", "0")) as sup:
        scraper = Scraper(metrics_port(sup.log_path))
        scraper.until(lambda s: value(s, "recorder_rows_total", table="book") > 100, 30,
                      "book rows")
        assert scraper.firing("RecorderGap") == []
        assert scraper.firing("RecorderIntegrityFailures") == []
        sim.control.corrupt_book("BTC/USD", endpoint="ws_v2")
        scraper.until(lambda s: value(s, "recorder_integrity_failures_total") == 1, 20,
                      "the checksum mismatch counted")
        assert scraper.firing("RecorderIntegrityFailures") == [{
            "alertname": "RecorderIntegrityFailures", "severity": "warning",
            "exchange": "kraken", "collector": "gap-public", "kind": "checksum_mismatch"}]
        assert scraper.firing("RecorderGap") == []
        sim.control.drop(endpoint="ws_v2")
        scraper.until(lambda s: value(s, "recorder_gaps_total", collector="gap-public") == 1,
                      20, "recorder_gaps_total to move")
        assert scraper.firing("RecorderGap") == [{
            "alertname": "RecorderGap", "severity": "warning", "exchange": "kraken",
            "collector": "gap-public"}]
        found = scraper.until(
            lambda s: value(s, "recorder_reconnects_total", collector="gap-public") == 1
            and value(s, "recorder_connected", collector="gap-public") == 1, 20,
            "the reconnect")
        assert value(found, "recorder_events_total", kind="disconnected") == 1
        assert value(found, "recorder_resyncs_total") >= 1
        assert scraper.firing("RecorderNoData") == []
    # The gap the metric counted is the one in the dataset.
    kinds = [r[0] for r in db(data).execute("SELECT kind FROM events").fetchall()]
    assert kinds.count("disconnected") == 1 and kinds.count("checksum_mismatch") == 1


def _monotonic(history: list[tuple[float, dict]], name: str, **labels: str) -> list[float]:
    values = [value(found, name, **labels) for _, found in history]
    drops = [(a, b) for a, b in zip(values, values[1:], strict=False) if b < a]
    assert not drops, f"{name} {labels} went down: {drops}"
    return values


def test_a_killed_collector_neither_resets_nor_doubles_the_totals(sim, tmp_path):
    data = tmp_path / "data"
    cfg = _config(tmp_path, sim.urls["ws_v2"], name="k9m")
    cfg.write_text(cfg.read_text() + FAST_JOURNAL)
    with supervised(tmp_path, cfg, data=data, args=("--metrics-port", "0")) as sup:
        scraper = Scraper(metrics_port(sup.log_path))
        first = wait_until(lambda: _state(data, "k9m-public").get("pid"), 20, "a collector")
        scraper.until(lambda s: value(s, "recorder_rows_total", table="trades") > 300, 30,
                      "counted trades")
        before = scraper()
        t_kill = time.time()
        os.kill(first, signal.SIGKILL)
        second = wait_until(lambda: (s := _state(data, "k9m-public")).get("restarts") == 1
                            and s.get("pid") not in (None, first) and s["pid"], 20,
                            "the restarted collector")
        trades_before = value(before, "recorder_rows_total", table="trades")
        scraper.until(lambda s: value(s, "recorder_rows_total", table="trades")
                      > trades_before + 300 and value(s, "recorder_gaps_total") == 1, 30,
                      "the new collector's trades")
        for _ in range(6):  # a few more scrapes: nothing is folded twice
            scraper()
            time.sleep(0.2)
        t_end = time.time()
        after = scraper()
        assert second != first
    # No reset: every counter only ever went up, across the kill and the restart.
    for name, labels in (("recorder_messages_total", {}), ("recorder_received_bytes_total", {}),
                         ("recorder_rows_total", {"table": "trades"}),
                         ("recorder_rows_total", {"table": "book"}),
                         ("recorder_rows_total", {"table": "events"}),
                         ("recorder_receive_lag_seconds_count", {"table": "book"})):
        _monotonic(scraper.history, name, **labels)
    # No double count: never more than the dataset holds, and all of it but the last second
    # and what the killed process journaled after its last publish (<= 0.25 s before the
    # kill; allow the journal's loss bound, one interval and a hand-over).
    for table in ("trades", "book"):
        counted = value(after, "recorder_rows_total", table=table)
        total = _dataset_rows(data, table, int(scraper.last_at * 1e6))
        old = _dataset_rows(data, table, int((t_end - 1.0) * 1e6))
        unpublished = _dataset_rows(data, table, int(t_kill * 1e6)) - _dataset_rows(
            data, table, int((t_kill - 0.6) * 1e6))
        assert old - unpublished <= counted <= total, (table, old, unpublished, counted, total)
    assert value(after, "recorder_gaps_total") == 1  # the restart, from the supervisor
    assert value(after, "recorder_events_total", kind="collector_restarted") == 1
    assert value(after, "recorder_collector_restarts_total") == 1
    assert scraper.firing("RecorderGap") == [{"alertname": "RecorderGap",
                                              "severity": "warning", "exchange": "kraken",
                                              "collector": "k9m-public"}]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_key_fires_the_key_alert(tmp_path):
    """A key revoked mid-run (tests/test_private_e2e.py's REST front answers as Kraken does
    for a deleted key): the refusals are counted, RecorderKeyRefused and
    RecorderCollectorFailed fire for the private collector, the public one stays up."""
    from tests.private_helpers import SECRET, RevokingRest, _config, _finish, _sim, _start

    data = tmp_path / "data"
    with _sim() as sim:
        rest = RevokingRest(sim.urls["rest"])
        try:
            cfg = _config(tmp_path, sim, "v2", public=True)
            cfg.write_text(cfg.read_text().replace(sim.urls["rest"], rest.url))
            port = _free_port()
            proc = _start(cfg, data, SECRET, "--metrics-port", str(port))
            try:
                scraper = Scraper(port)
                private = {"collector": "private-v2-private"}
                wait_until(lambda: _state(data, "private-v2-private").get("state")
                           == "running" and _state(data, "private-v2-public").get("state")
                           == "running", 30, "both collectors running")
                found = scraper.until(lambda s: value(s, "recorder_token_fetches_total",
                                                      **private) >= 1, 20, "a token fetch")
                assert 0 <= value(found, "recorder_token_age_seconds", **private) < 30
                assert value(found, "recorder_credentials_refused_total", **private) == 0
                assert scraper.firing("RecorderKeyRefused") == []
                rest.revoked = True
                sim.control.invalidate_tokens(kick=True)  # the reconnect needs a new token
                scraper.until(lambda s: value(s, "recorder_credentials_refused_total",
                                              **private) == 3, 30, "three refusals counted")
                found = scraper.until(lambda s: value(s, "recorder_collector_state",
                                                      state="failed", **private) == 1, 20,
                                      "the failed state")
                assert value(found, "recorder_collector_up", **private) == 0
                assert value(found, "recorder_collector_up",
                             collector="private-v2-public") == 1
                assert scraper.firing("RecorderKeyRefused") == [{
                    "alertname": "RecorderKeyRefused", "severity": "page",
                    "exchange": "kraken", "collector": "private-v2-private"}]
                assert scraper.firing("RecorderCollectorFailed") == [{
                    "alertname": "RecorderCollectorFailed", "severity": "page",
                    "exchange": "kraken", "collector": "private-v2-private",
                    "state": "failed"}]
            finally:
                _finish(proc, expect=2)
        finally:
            rest.close()


def test_kucoin_bullets_and_a_sequence_gap(tmp_path):
    """The second exchange through the same endpoint: bullets counted as token fetches, a
    skipped level2 message is a sequence_gap integrity failure that fires the alert."""
    from tests.kucoin_helpers import kucoin_config

    data = tmp_path / "data"
    with SimulatorProcess(["--seed", "4", "--rate", "200"], exchange="kucoin",
                          capture_stderr=True) as ku:
        cfg = kucoin_config(tmp_path, ku.urls["rest"], name="ku.toml")
        with supervised(tmp_path, cfg, data=data, args=("--metrics-port", "0")) as sup:
            scraper = Scraper(metrics_port(sup.log_path))
            ku_public = {"exchange": "kucoin", "collector": "ku-public"}
            found = scraper.until(lambda s: value(s, "recorder_rows_total", table="book",
                                                  **ku_public) > 100, 40, "kucoin book rows")
            assert value(found, "recorder_token_fetches_total", **ku_public) >= 1
            assert value(found, "recorder_token_age_seconds", **ku_public) >= 0
            assert value(found, "recorder_integrity_failures_total", kind="sequence_gap",
                         **ku_public) == 0
            ku.control.skip_level2("BTC-USDT")
            scraper.until(lambda s: value(s, "recorder_integrity_failures_total",
                                          kind="sequence_gap", **ku_public) >= 1, 30,
                          "the sequence gap counted")
            assert {"alertname": "RecorderIntegrityFailures", "severity": "warning",
                    "exchange": "kucoin", "collector": "ku-public",
                    "kind": "sequence_gap"} in scraper.firing("RecorderIntegrityFailures")


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = _config(tmp_path, "ws://127.0.0.1:9/v2", name="busy")
        out = subprocess.run([sys.executable, "-m", "recorder", "run", str(cfg), "--data",
                              str(tmp_path / "data"), "--metrics-port", str(port)],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1 port {port}: Address already in use" in \
        out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "data" / ".status").exists(), "no collector was started"
