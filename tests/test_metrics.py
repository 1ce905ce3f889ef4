"""Metrics without processes: what a collector counts and publishes, how the supervisor sums
live and dead processes (no reset, no double count), the exposition, the token rule."""

from __future__ import annotations

import http.client
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from recorder.capture import metrics
from recorder.capture.metrics import CollectorMetrics, MeteredSink, exchange_time_us
from recorder.capture.metrics_server import Aggregator, MetricsServer, make_registry
from recorder.capture.status_page import fragment, page
from recorder.core.events import event
from recorder.core.schema import TABLES
from tests.metrics_helpers import (
    FakeChild,
    _publish,
    _snapshot,
    exposition_of_a_busy_job,
)


def _scrape(agg: Aggregator) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(make_registry(agg)).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))




def test_counts_survive_a_restart_without_double_counting(tmp_path):
    child = FakeChild("k-public", tmp_path, pid=100)
    agg = Aggregator(tmp_path, lambda: [child])
    _publish(tmp_path, _snapshot("k-public", 100, messages=1000, trades=400))
    first = _scrape(agg)
    assert _value(first, "recorder_messages_total") == 1000
    assert _value(first, "recorder_rows_total", table="trades") == 400
    # Scraped again: the same (a live process's file is read, not added up).
    assert _value(_scrape(agg), "recorder_messages_total") == 1000
    # kill -9: the supervisor reaps pid 100 and starts pid 200, which counts from 0.
    _publish(tmp_path, _snapshot("k-public", 100, messages=1100, trades=450))  # its last
    child.pid = None
    assert _value(_scrape(agg), "recorder_messages_total") == 1100  # folded, file gone
    assert not (tmp_path / metrics.file_name("k-public", 100)).exists()
    child.pid = 200
    agg.supervisor_event("k-public", "collector_restarted", {"down_s": 1.2})
    agg.row_stored("k-public", "events")
    _publish(tmp_path, _snapshot("k-public", 200, messages=30, trades=10))
    for _ in range(3):
        after = _scrape(agg)
        assert _value(after, "recorder_messages_total") == 1130
        assert _value(after, "recorder_rows_total", table="trades") == 460
        assert _value(after, "recorder_rows_total", table="events") == 2 + 2 + 1
        assert _value(after, "recorder_gaps_total") == 1  # the restart is a gap
        assert _value(after, "recorder_events_total", kind="collector_restarted") == 1
        assert _value(after, "recorder_receive_lag_seconds_count", table="trades") == 34
    assert _value(after, "recorder_collector_up") == 1


def test_exposition_has_the_contract_names_and_bounded_labels(tmp_path):
    text = exposition_of_a_busy_job(tmp_path)
    for name in ("recorder_rows_total{", "recorder_messages_total{",
                 "recorder_reconnects_total{", "recorder_gaps_total{",
                 "recorder_receive_lag_seconds_bucket{", "recorder_integrity_failures_total{",
                 "recorder_token_age_seconds{", "recorder_clock_offset_seconds{",
                 "recorder_journal_pending_rows{", "recorder_disk_free_bytes{",
                 "recorder_process_resident_memory_bytes{", "recorder_last_message_age_seconds{",
                 "recorder_last_data_age_seconds{", "recorder_resyncs_total{",
                 "recorder_token_fetches_total{", "recorder_received_bytes_total{"):
        assert name in text, name
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    labels = {k for s in samples if s.name.startswith("recorder_") for k in s.labels}
    # Nothing that grows with reconnects or restarts (pid, connection id, url).
    assert labels <= {"exchange", "collector", "table", "kind", "state", "le", "path"}
    rows = [s for s in samples if s.name == "recorder_rows_total"]
    assert {s.labels["table"] for s in rows} == {"trades", "events"}
    assert all(s.labels["exchange"] == "kraken" for s in rows)
    # Storing to an object store: the upload lag and the spool, as the collector published.
    upload = {s.name: s.value for s in samples
              if s.name in ("recorder_upload_lag_seconds", "recorder_spool_bytes")}
    assert upload == {"recorder_upload_lag_seconds": 42.5, "recorder_spool_bytes": 1_048_576}


def test_collector_side_counts_at_flush_and_publishes(tmp_path):
    class Sink:
        def __init__(self):
            self.written = []

        def write(self, table, rows):
            self.written.append((table, len(rows)))

        def tick(self):
            pass

        def stats(self):
            n = sum(k for _, k in self.written)
            return {"rows_journaled": {"trades": n}, "pending_rows": 0, "queued_rows": 0,
                    "blocked_seconds": 0.0, "problems": {}}

        def close(self, timeout=None):
            return True

    feed = SimpleNamespace(prepare=lambda: SimpleNamespace(raw_records=[("POST x", "{}")]))
    sink, m = metrics.instrument(Sink(), feed, "ku-public", "kucoin", "public",
                                 directory=tmp_path)
    assert isinstance(sink, MeteredSink)
    feed.prepare()
    assert m.token_fetches == 1 and m.token_at is not None
    cols = [c.name for c in TABLES["trades"]]
    now = int(time.time() * 1e6)

    def trade(ts_ex):
        values = dict.fromkeys(cols)
        values.update(exchange="kucoin", symbol="BTC/USDT", ts_exchange=ts_ex, ts_recv=now,
                      price="1", qty="1", side="buy", trade_id="1")
        return tuple(values[c] for c in cols)

    sink.write("trades", [trade(now - 5_000)] * 10 + [trade("2026-01-01T00:00:00.000001Z")])
    sink.write("events", [event("kucoin", now, "connected"), event("kucoin", now, "connected"),
                          event("kucoin", now, "disconnected")])
    collector = SimpleNamespace(frames=12, ws=object(), conn=None, resyncs=0, rotations=0,
                                conn_id=2, url="ws://x", books=SimpleNamespace(verified=0))
    metrics.attach(m, collector)
    snap = json.loads((tmp_path / metrics.file_name("ku-public", os.getpid())).read_text())
    assert snap["counters"]["messages"] == 12 and snap["counters"]["reconnects"] == 1
    assert snap["counters"]["gaps"] == 1 and snap["rows_handed"] == {"trades": 11, "events": 3}
    assert sum(snap["lag"]["trades"]["buckets"]) >= 3  # a few samples a flush, not every row
    assert snap["gauges"]["connected"] is True
    assert 0.004 < snap["gauges"]["clock_offset_s"] < 0.006
    assert [e[1] for e in snap["recent_events"]] == ["connected", "connected", "disconnected"]
    assert sink.close() is True
    assert json.loads((tmp_path / metrics.file_name("ku-public", os.getpid())).read_text())[
        "final"] is True


def test_nothing_changes_without_the_supervisor_asking(monkeypatch):
    monkeypatch.delenv(metrics.METRICS_DIR_ENV, raising=False)
    sink, feed = object(), SimpleNamespace(prepare=lambda: None)
    prepare = feed.prepare
    assert metrics.instrument(sink, feed, "k-public", "kraken", "public") == (sink, None)
    assert feed.prepare is prepare


@pytest.mark.parametrize("value, expected", [
    (1_700_000_000_123_456, 1_700_000_000_123_456),
    ("2023-11-14T22:13:20.123456Z", 1_700_000_000_123_456),
    ("2023-11-14T22:13:20.123456789Z", 1_700_000_000_123_456),
    ("1700000000.123456", 1_700_000_000_123_456),
    (None, None), ("garbage", None),
])
def test_exchange_times(value, expected):
    got = exchange_time_us(value)
    assert got == expected if expected is None else abs(got - expected) <= 1


def test_collector_metrics_bytes_keep_closed_connections(tmp_path):
    m = CollectorMetrics("k-public", "kraken", "public", None)
    r1 = SimpleNamespace(bytes_received=100)
    c = SimpleNamespace(conn=SimpleNamespace(reader=r1), _rotation=None)
    assert m._bytes(c) == 100
    r1.bytes_received = 150
    c.conn = SimpleNamespace(reader=SimpleNamespace(bytes_received=20))
    assert m._bytes(c) == 120  # the old reader's last published 100 is kept


def _get(port: int, path: str, source: str = "127.0.0.1", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                      source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_server_routes_and_the_token_rule(tmp_path):
    child = FakeChild("k-public", tmp_path, pid=4242)
    _publish(tmp_path, _snapshot("k-public", 4242, 10, 5, gaps=1))
    server = MetricsServer(Aggregator(tmp_path, lambda: [child]), "127.0.0.1", 0, "s3cret")
    port = server.start()
    try:
        status, headers, body = _get(port, "/metrics")  # 127.0.0.1: no token needed
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert b'recorder_gaps_total{collector="k-public",exchange="kraken"} 1.0' in body
        status, _, body = _get(port, "/")
        assert status == 200 and b"k-public" in body and b"<script>" in body
        status, _, body = _get(port, "/api/status")
        view = json.loads(body)
        assert view["collectors"][0]["collector"] == "k-public"
        assert _get(port, "/nope")[0] == 404
        # Any other address (127.0.0.2 here) needs the token.
        assert _get(port, "/metrics", "127.0.0.2")[0] == 401
        assert _get(port, "/", "127.0.0.2", {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(port, "/metrics", "127.0.0.2", {"Authorization": "Bearer s3cret"})[0] == 200
        status, headers, _ = _get(port, "/?token=s3cret", "127.0.0.2")
        assert status == 200 and "HttpOnly" in headers["Set-Cookie"]
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        assert _get(port, "/fragment", "127.0.0.2", {"Cookie": cookie})[0] == 200
    finally:
        server.stop()


def test_page_marks_a_collector_with_a_recent_gap(tmp_path):
    child = FakeChild("k-public", tmp_path, pid=4242)
    _publish(tmp_path, _snapshot("k-public", 4242, 10, 5, gaps=1))
    view = Aggregator(tmp_path, lambda: [child]).view()
    html = fragment(view)
    assert 'data-collector="k-public" data-gaps="1"' in html and 'class="gap"' in html
    assert '<td class="kind-gap">disconnected</td>' in html
    assert "Coverage, last hour" in page(view)


def test_the_runner_asks_for_metrics_by_the_same_name():
    # recorder/capture/runner.py checks the variable by name, so that a job without
    # --metrics-port does not even import the metrics modules.
    runner = (Path(__file__).resolve().parents[1] / "recorder/capture/runner.py").read_text()
    assert f'os.environ.get("{metrics.METRICS_DIR_ENV}")' in runner


def test_upload_lag_is_the_oldest_waiting_file():
    from recorder.capture.metrics import _upload_lag

    assert _upload_lag(None, 100.0) is None  # a local data directory: not exported
    assert _upload_lag({"oldest_waiting_at": None}, 100.0) == 0.0
    assert _upload_lag({"oldest_waiting_at": 60.0}, 100.0) == 40.0
