"""The supervisor's endpoint: Prometheus metrics of every collector, and the live status page.

``recorder run ... --metrics-port N`` starts it in the supervisor process (before the
collectors, stopped after the last one ended). It serves, on 127.0.0.1 unless
``--metrics-host`` says otherwise:

- ``/metrics``: Prometheus text, built by the official client library (``prometheus_client``)
  from a custom collector, so every scrape reads the current files and nothing is cached;
- ``/``: the status page (recorder/capture/status_page.py), ``/fragment`` its live part,
  ``/api/status`` the same as JSON, ``/coverage.svg`` the coverage chart of the last hour;
- ``/healthz``: ``ok``.

Aggregation over processes (see recorder/capture/metrics.py for the collector side): each
collector process replaces ``<dir>/<collector>.<pid>.json`` with its cumulative counters.
On every read the supervisor sums, per collector (``<config>-<role>``): the files of its
live processes, plus the totals folded from its dead processes. A file whose process the
supervisor has reaped is added to those totals once and deleted; so a restart (kill -9
included) neither resets a counter nor counts a process twice, and the directory holds one
file per live collector however often they restart. At most the counts of the last publish
interval (0.25 s) before a kill -9 are never published: the same order as the data a kill -9
loses (one journal interval). The supervisor adds its own events (``collector_restarted``,
``collector_failed``) to the collector they describe.

With ``--metrics-token`` (or ``RECORDER_METRICS_TOKEN``), every request from an address
other than 127.0.0.1 / ::1 must carry the token: ``Authorization: Bearer TOKEN`` (what
Prometheus sends with ``authorization: {credentials: TOKEN}``), or ``?token=TOKEN`` once in
a browser, which sets a cookie for the page's own requests.
"""

from __future__ import annotations

import hmac
import html
import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from recorder.capture.metrics import FILE_SUFFIX, LAG_BUCKETS, read_file
from recorder.core.schema import INTEGRITY_EVENT_KINDS

log = logging.getLogger("recorder.metrics")

TOKEN_ENV = "RECORDER_METRICS_TOKEN"
LOCAL_CLIENTS = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
_COOKIE = "recorder_token"
RATE_WINDOW_SECONDS = 10.0
COVERAGE_TTL_SECONDS = 60.0
COVERAGE_WINDOW_SECONDS = 3600.0
RECENT_EVENTS = 50
STATES = ("starting", "running", "backoff", "stopping", "stopped", "finished", "failed")
_SUM_KEYS = ("counters", "rows", "rows_handed", "integrity", "events", "sink_problems")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _empty() -> dict:
    return {"counters": {}, "rows": {}, "rows_handed": {}, "integrity": {}, "events": {},
            "sink_problems": {}, "lag": {}, "last_message_at": None, "last_data_at": None}


def _add(total: dict, snap: dict) -> None:
    """Add one process's cumulative counts into ``total`` (in place)."""
    for key in _SUM_KEYS:
        into = total[key]
        for name, value in (snap.get(key) or {}).items():
            into[name] = into.get(name, 0) + value
    for table, h in (snap.get("lag") or {}).items():
        mine = total["lag"].setdefault(table, {"buckets": [0] * (len(LAG_BUCKETS) + 1),
                                               "sum": 0.0})
        for i, n in enumerate(h.get("buckets", [])[:len(mine["buckets"])]):
            mine["buckets"][i] += n
        mine["sum"] += h.get("sum", 0.0)
    gauges = snap.get("gauges") or {}
    for name in ("last_message_at", "last_data_at"):
        value = gauges.get(name, snap.get(name))
        if value is not None and (total[name] is None or value > total[name]):
            total[name] = value


def rss_bytes(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def disk_usage(path: Path) -> tuple[int, int] | None:
    """(free bytes for an unprivileged writer, size) of the filesystem holding ``path``."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


class Aggregator:
    """Sums the collectors' files (live and folded) and the supervisor's own counts.

    ``children`` returns the supervisor's jobs: objects with ``key``, ``role``,
    ``config`` (``.exchange``, ``.name``, ``.path``), ``root``, ``state``, ``proc`` (None
    when no process runs), ``pid``, ``restarts``, ``started_at``, ``last_exit``.
    """

    def __init__(self, directory: Path, children: Callable[[], Sequence[Any]],
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.children = children
        self.clock = clock
        self.started_at = clock()
        self._lock = threading.RLock()
        self._base: dict[str, dict] = {}  # per collector: totals of dead processes + ours
        self._live: dict[str, list[dict]] = {}
        self._folded: set[str] = set()
        self._recent: deque[dict] = deque(maxlen=RECENT_EVENTS)
        self._seen_events: dict[str, int] = {}  # file -> recent events already merged
        self._history: dict[str, deque] = {}
        self._last_gap_at: dict[str, float] = {}

    # -- the supervisor's own events ------------------------------------------------------

    def supervisor_event(self, key: str, kind: str, detail: dict | None = None,
                         ts: float | None = None) -> None:
        """An events row the supervisor writes about collector ``key``."""
        with self._lock:
            base = self._base.setdefault(key, _empty())
            base["events"][kind] = base["events"].get(kind, 0) + 1
            if kind == "collector_restarted":
                c = base["counters"]
                c["gaps"] = c.get("gaps", 0) + 1
                self._last_gap_at[key] = ts or self.clock()
            text = json.dumps(detail, separators=(",", ":"))[:300] if detail else None
            self._recent.append({"ts": ts or self.clock(), "collector": key, "kind": kind,
                                 "symbol": None, "channel": None, "detail": text})

    def row_stored(self, key: str, table: str) -> None:
        """A row the supervisor stored itself (its events), counted in rows_total."""
        with self._lock:
            rows = self._base.setdefault(key, _empty())["rows"]
            rows[table] = rows.get(table, 0) + 1

    # -- reading the collectors' files ----------------------------------------------------

    def refresh(self) -> None:
        """Read every file; fold those of processes that are gone."""
        children = list(self.children())
        running = {c.key: c.pid for c in children if getattr(c, "proc", None) is not None}
        live: dict[str, list[dict]] = {}
        with self._lock:
            try:
                names = sorted(os.listdir(self.directory))
            except OSError:
                names = []
            for name in names:
                if name.startswith(".") or not name.endswith(FILE_SUFFIX) or \
                        name in self._folded:
                    continue
                snap = read_file(self.directory / name)
                if snap is None or "key" not in snap:
                    continue
                key, pid = snap["key"], snap.get("pid")
                self._merge_events(name, snap)
                if running.get(key) == pid:
                    live.setdefault(key, []).append(snap)
                    continue
                # Reaped by the supervisor (or never ours to run again): fold it, once.
                _add(self._base.setdefault(key, _empty()), snap)
                self._folded.add(name)
                self._seen_events.pop(name, None)
                try:
                    os.unlink(self.directory / name)
                    self._folded.discard(name)
                except OSError:
                    pass
            self._live = live
            now = time.monotonic()
            for key in {c.key for c in children}:
                total = self._totals(key)
                hist = self._history.setdefault(key, deque())
                if not hist or now - hist[-1][0] >= 0.5:
                    hist.append((now, total["counters"].get("messages", 0),
                                 _data_rows(total["rows"])))
                while len(hist) > 2 and now - hist[1][0] > RATE_WINDOW_SECONDS:
                    hist.popleft()

    def _merge_events(self, name: str, snap: dict) -> None:
        events = snap.get("recent_events") or []
        seen = self._seen_events.get(name, 0)
        started = snap.get("started_at", 0)
        # The list is the process's last N: new ones are those after what was merged.
        count = sum(snap.get("events", {}).values())
        fresh = events[max(0, len(events) - (count - seen)):] if count > seen else []
        self._seen_events[name] = count
        for ts_us, kind, symbol, channel, detail in fresh:
            ts = ts_us / 1e6 if isinstance(ts_us, int) else started
            self._recent.append({"ts": ts, "collector": snap["key"], "kind": kind,
                                 "symbol": symbol, "channel": channel, "detail": detail})
            if kind == "disconnected":
                self._last_gap_at[snap["key"]] = max(ts, self._last_gap_at.get(snap["key"], 0))

    def _totals(self, key: str) -> dict:
        total = _empty()
        base = self._base.get(key)
        if base is not None:
            _add(total, base)
        for snap in self._live.get(key, []):
            _add(total, snap)
        return total

    # -- the view both the metrics and the page are made of -------------------------------

    def view(self) -> dict:
        self.refresh()
        now = self.clock()
        out = []
        with self._lock:
            children = list(self.children())
            keys = {c.key for c in children}
            for child in children:
                key = child.key
                total = self._totals(key)
                snaps = self._live.get(key, [])
                gauges = snaps[-1].get("gauges", {}) if snaps else {}
                hist = self._history.get(key) or deque()
                msg_rate = rows_rate = None
                if len(hist) >= 2 and hist[-1][0] - hist[0][0] > 0.2:
                    dt = hist[-1][0] - hist[0][0]
                    msg_rate = (hist[-1][1] - hist[0][1]) / dt
                    rows_rate = (hist[-1][2] - hist[0][2]) / dt
                since = child.started_at or self.started_at
                last_msg = total["last_message_at"]
                last_data = total["last_data_at"]
                token_at = gauges.get("token_at")
                proc = getattr(child, "proc", None)
                out.append({
                    "collector": key, "exchange": child.config.exchange,
                    "config": child.config.name, "role": child.role, "root": str(child.root),
                    "state": child.state, "pid": child.pid if proc is not None else None,
                    "restarts": child.restarts, "last_exit": child.last_exit,
                    "up_s": round(now - child.started_at, 1)
                    if proc is not None and child.started_at else None,
                    "connected": bool(gauges.get("connected")) if proc is not None else False,
                    "conn_id": gauges.get("conn_id"), "url": gauges.get("url"),
                    "totals": total,
                    "messages_per_s": msg_rate, "rows_per_s": rows_rate,
                    "last_message_at": last_msg,
                    "last_message_age_s": now - (last_msg or since),
                    "last_data_at": last_data,
                    "last_data_age_s": now - (last_data or since),
                    "last_gap_at": self._last_gap_at.get(key),
                    "token_age_s": now - token_at if token_at and proc is not None else None,
                    "clock_offset_s": gauges.get("clock_offset_s") if proc else None,
                    "journal_pending_rows": gauges.get("journal_pending_rows", 0)
                    if proc else 0,
                    "journal_lag_s": gauges.get("journal_lag_s", 0.0) if proc else 0.0,
                    "queued_rows": gauges.get("queued_rows", 0) if proc else 0,
                    "upload_lag_s": gauges.get("upload_lag_s") if proc else None,
                    "spool_bytes": gauges.get("spool_bytes") if proc else None,
                    # A process recording several roles: its RSS once, on its first role.
                    "rss_bytes": rss_bytes(child.pid) if proc is not None and getattr(
                        child, "owns_process", True) else None,
                })
            # Collectors not (or no longer) among the jobs: their totals still count.
            for key in sorted(set(self._base) - keys):
                out.append({"collector": key, "exchange": None, "totals": self._totals(key),
                            "orphan": True})
            recent = sorted(self._recent, key=lambda e: e["ts"], reverse=True)
        roots = sorted({str(c.root) for c in children})
        disks = []
        for root in roots:
            usage = disk_usage(Path(root))
            if usage:
                disks.append({"path": root, "free_bytes": usage[0], "size_bytes": usage[1]})
        return {"now": now, "started_at": self.started_at, "pid": os.getpid(),
                "rss_bytes": rss_bytes(os.getpid()), "collectors": out, "disks": disks,
                "events": recent}


def _data_rows(rows: dict) -> int:
    return sum(n for t, n in rows.items() if t not in ("events", "raw", "book_checkpoints"))


# -- Prometheus exposition -------------------------------------------------------------------


class RecorderCollector:
    """A prometheus_client collector: every scrape builds the families from ``view()``."""

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    def collect(self):  # noqa: ANN201 - a generator of metric families
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        view = self.aggregator.view()
        ec = ["exchange", "collector"]

        def counter(name: str, doc: str, labels: list[str] = ec) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=labels)

        def gauge(name: str, doc: str, labels: list[str] = ec) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        rows = counter("recorder_rows", "Rows written (journaled: durable in the dataset), "
                       "per table; the supervisor's own events rows included.",
                       ["exchange", "collector", "table"])
        simple = {
            "messages": counter("recorder_messages", "WebSocket messages (frames) received, "
                                "heartbeats and acknowledgements included."),
            "bytes": counter("recorder_received_bytes", "WebSocket bytes received (frames "
                             "with their headers)."),
            "reconnects": counter("recorder_reconnects", "Connections opened after an "
                                  "earlier one of the same process ended."),
            "gaps": counter("recorder_gaps", "Gaps in the data: disconnected and "
                            "collector_restarted events."),
            "resyncs": counter("recorder_resyncs", "Book resyncs started (one symbol each)."),
            "rotations": counter("recorder_rotations", "Connections replaced for their age "
                                 "(make-before-break)."),
            "token_fetches": counter("recorder_token_fetches", "WebSocket tokens (Kraken "
                                     "private) or bullets (KuCoin) fetched for a connection."),
            "token_fetch_failures": counter("recorder_token_fetch_failures", "Failed "
                                            "connection preparations (token or bullet REST "
                                            "calls), credentials refusals excluded."),
            "credentials_refused": counter("recorder_credentials_refused", "Times the "
                                           "exchange refused the configured API key."),
            "sink_blocked_seconds": counter("recorder_sink_blocked_seconds", "Seconds the "
                                            "receive loop waited for the sink (back-pressure)."),
        }
        integrity = counter("recorder_integrity_failures", "Books found wrong by the "
                            "exchange's integrity rule (checksum_mismatch, sequence_gap).",
                            ["exchange", "collector", "kind"])
        events = counter("recorder_events", "Rows of the events table, by kind.",
                         ["exchange", "collector", "kind"])
        problems = counter("recorder_sink_problems", "Problems the sink reported (its own "
                           "events rows), by kind.", ["exchange", "collector", "kind"])
        lag = HistogramMetricFamily("recorder_receive_lag_seconds", "ts_recv - ts_exchange "
                                    "of sampled rows (a few per table and 100 ms flush).",
                                    labels=["exchange", "collector", "table"])
        up = gauge("recorder_collector_up", "1 while a collector process runs.")
        state = gauge("recorder_collector_state", "The supervisor's state of each "
                      "collector (1 for the current one).", ["exchange", "collector", "state"])
        restarts = counter("recorder_collector_restarts", "Collector processes restarted "
                           "by the supervisor (since it started).")
        connected = gauge("recorder_connected", "1 while the collector has a live "
                          "WebSocket connection.")
        last_msg = gauge("recorder_last_message_timestamp_seconds", "When the last "
                         "WebSocket message arrived (any frame).")
        msg_age = gauge("recorder_last_message_age_seconds", "Seconds since the last "
                        "WebSocket message (since the collector started if none yet).")
        last_data = gauge("recorder_last_data_timestamp_seconds", "ts_recv of the last "
                          "market-data row (not events).")
        data_age = gauge("recorder_last_data_age_seconds", "Seconds since the last "
                         "market-data row (since the collector started if none yet).")
        token_age = gauge("recorder_token_age_seconds", "Age of the token or bullet the "
                          "current connection was opened with.")
        offset = gauge("recorder_clock_offset_seconds", "Smallest ts_recv - ts_exchange over "
                       "the last minute: the local clock's offset from the exchange's plus "
                       "the fastest delivery (negative: the local clock is behind).")
        pending = gauge("recorder_journal_pending_rows", "Rows handed to the sink and not "
                        "journaled yet.")
        jlag = gauge("recorder_journal_lag_seconds", "Seconds the journal has made no "
                     "progress while rows wait (0 when none wait).")
        queued = gauge("recorder_sink_queued_rows", "Rows waiting for the sink's writer "
                       "thread.")
        upload_lag = gauge("recorder_upload_lag_seconds", "Storing to an object store: "
                           "seconds the oldest finished file has waited in the local spool "
                           "(0: none waits).")
        spool = gauge("recorder_spool_bytes", "Storing to an object store: bytes of finished "
                      "files waiting in the local spool.")
        rss = GaugeMetricFamily("recorder_process_resident_memory_bytes", "RSS of each "
                                "process of the job (the supervisor: collector=\"supervisor\").",
                                labels=["collector"])
        disk_free = GaugeMetricFamily("recorder_disk_free_bytes", "Free bytes (for an "
                                      "unprivileged writer) of the data directory's "
                                      "filesystem.", labels=["path"])
        disk_size = GaugeMetricFamily("recorder_disk_size_bytes", "Size of the data "
                                      "directory's filesystem.", labels=["path"])

        for c in view["collectors"]:
            exchange = c.get("exchange") or "unknown"
            labels = [exchange, c["collector"]]
            t = c["totals"]
            for table, n in sorted(t["rows"].items()):
                rows.add_metric([*labels, table], n)
            for name, fam in simple.items():
                fam.add_metric(labels, t["counters"].get(name, 0))
            # Every kind from 0 on: an alert on increase() needs the series before its
            # first failure (a series born at 1 shows no increase).
            for kind in INTEGRITY_EVENT_KINDS:
                integrity.add_metric([*labels, kind], t["integrity"].get(kind, 0))
            for kind, n in sorted(t["events"].items()):
                events.add_metric([*labels, kind], n)
            for kind, n in sorted(t["sink_problems"].items()):
                problems.add_metric([*labels, kind], n)
            for table, h in sorted(t["lag"].items()):
                cumulative, buckets = 0, []
                for bound, n in zip((*LAG_BUCKETS, float("inf")), h["buckets"], strict=False):
                    cumulative += n
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound),
                                    cumulative))
                lag.add_metric([*labels, table], buckets, sum_value=h["sum"])
            if c.get("orphan"):
                continue
            up.add_metric(labels, 1 if c["pid"] else 0)
            for s in STATES:
                state.add_metric([*labels, s], 1 if c["state"] == s else 0)
            restarts.add_metric(labels, c["restarts"])
            connected.add_metric(labels, 1 if c["connected"] else 0)
            if c["last_message_at"]:
                last_msg.add_metric(labels, c["last_message_at"])
            msg_age.add_metric(labels, max(0.0, c["last_message_age_s"]))
            if c["last_data_at"]:
                last_data.add_metric(labels, c["last_data_at"])
            data_age.add_metric(labels, max(0.0, c["last_data_age_s"]))
            if c["token_age_s"] is not None:
                token_age.add_metric(labels, c["token_age_s"])
            if c["clock_offset_s"] is not None:
                offset.add_metric(labels, c["clock_offset_s"])
            pending.add_metric(labels, c["journal_pending_rows"])
            jlag.add_metric(labels, c["journal_lag_s"])
            queued.add_metric(labels, c["queued_rows"])
            if c.get("upload_lag_s") is not None:
                upload_lag.add_metric(labels, c["upload_lag_s"])
            if c.get("spool_bytes") is not None:
                spool.add_metric(labels, c["spool_bytes"])
            if c["rss_bytes"] is not None:
                rss.add_metric([c["collector"]], c["rss_bytes"])
        if view["rss_bytes"] is not None:
            rss.add_metric(["supervisor"], view["rss_bytes"])
        for d in view["disks"]:
            disk_free.add_metric([d["path"]], d["free_bytes"])
            disk_size.add_metric([d["path"]], d["size_bytes"])
        yield from (rows, *simple.values(), integrity, events, problems, lag, up, state,
                    restarts, connected, last_msg, msg_age, last_data, data_age, token_age,
                    offset, pending, jlag, queued, upload_lag, spool, rss, disk_free,
                    disk_size)


def make_registry(aggregator: Aggregator):  # noqa: ANN201 - a CollectorRegistry
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecorderCollector(aggregator))
    ProcessCollector(registry=registry)  # the supervisor's own process_* metrics
    PlatformCollector(registry=registry)
    return registry


# -- the coverage chart ----------------------------------------------------------------------


class CoverageCache:
    """The coverage chart of each data directory, made by a short-lived child process
    (``python -m recorder.analysis.live``: DuckDB and Arrow stay out of the supervisor,
    whose RSS they would triple), at most once per ``ttl`` seconds and one at a time."""

    def __init__(self, ttl: float = COVERAGE_TTL_SECONDS,
                 window: float = COVERAGE_WINDOW_SECONDS) -> None:
        self.ttl = ttl
        self.window = window
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, str]] = {}

    def svg(self, root: str) -> str:
        with self._lock:
            hit = self._cache.get(root)
            if hit and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            svg = self._make(root)
            self._cache[root] = (time.monotonic(), svg)
            return svg

    def _make(self, root: str) -> str:
        cmd = [sys.executable, "-m", "recorder.analysis.live", "coverage", root,
               "--window", str(self.window)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                                  preexec_fn=_lower_priority)
        except (OSError, subprocess.TimeoutExpired) as e:
            return _text_svg(f"coverage chart unavailable: {e}")
        if done.returncode != 0:
            return _text_svg("coverage chart unavailable: "
                             + (done.stderr.strip().splitlines() or ["?"])[-1])
        return done.stdout


def _lower_priority() -> None:  # pragma: no cover - runs between fork and exec
    try:
        os.nice(10)
    except OSError:
        pass


def _text_svg(text: str) -> str:
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="900" height="30" '
            'font-family="sans-serif" font-size="12"><text x="4" y="18">'
            f'{html.escape(text)}</text></svg>')


# -- the HTTP server -------------------------------------------------------------------------


class MetricsServer:
    """``/metrics``, the status page and its JSON, on one port (a daemon thread)."""

    def __init__(self, aggregator: Aggregator, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, title: str = "market-recorder",
                 coverage: CoverageCache | None = None) -> None:
        self.aggregator = aggregator
        self.host = host
        self.requested_port = port
        self.token = token or None
        self.title = title
        self.coverage = coverage if coverage is not None else CoverageCache()
        self.registry = make_registry(aggregator)
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def start(self) -> int:
        """Bind (OSError if the port is taken) and serve; return the port."""
        server = self

        class Handler(_Handler):
            owner = server

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class Server(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            allow_reuse_address = True

        self._httpd = Server((self.host, self.requested_port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # -- what is served ---------------------------------------------------------------------

    def metrics_text(self, accept: str | None) -> tuple[bytes, str]:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def allowed(self, client: str, headers: Any, query: dict) -> tuple[bool, bool]:
        """(allowed, set the cookie)."""
        if self.token is None or client in LOCAL_CLIENTS:
            return True, False
        auth = headers.get("Authorization") or ""
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), self.token):
            return True, False
        for part in (headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == _COOKIE and hmac.compare_digest(value, self.token):
                return True, False
        given = (query.get("token") or [""])[0]
        if given and hmac.compare_digest(given, self.token):
            return True, True
        return False, False


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: MetricsServer
    server_version = "market-recorder"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("%s %s", self.client_address[0], format % args)

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        from recorder.capture import status_page

        owner = self.owner
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        ok, set_cookie = owner.allowed(self.client_address[0], self.headers, query)
        if not ok:
            self._send(401, b"a token is required (Authorization: Bearer TOKEN, or "
                       b"?token=TOKEN)\n", "text/plain; charset=utf-8",
                       {"WWW-Authenticate": 'Bearer realm="market-recorder"'})
            return
        extra = {}
        if set_cookie:
            extra["Set-Cookie"] = (f"{_COOKIE}={owner.token}; HttpOnly; SameSite=Strict; "
                                   "Path=/")
        path = parts.path
        try:
            if path == "/metrics":
                body, ctype = owner.metrics_text(self.headers.get("Accept"))
                self._send(200, body, ctype, extra)
            elif path in ("/", "/index.html"):
                view = owner.aggregator.view()
                page = status_page.page(view, owner.title)
                self._send(200, page.encode(), "text/html; charset=utf-8", extra)
            elif path == "/fragment":
                view = owner.aggregator.view()
                body = status_page.fragment(view).encode()
                self._send(200, body, "text/html; charset=utf-8", extra)
            elif path == "/api/status":
                view = owner.aggregator.view()
                body = json.dumps(status_page.as_json(view), indent=1).encode()
                self._send(200, body, "application/json", extra)
            elif path == "/coverage.svg":
                roots = sorted({str(c.root) for c in owner.aggregator.children()})
                index = int((query.get("i") or ["0"])[0])
                svg = (owner.coverage.svg(roots[index]) if 0 <= index < len(roots)
                       else _text_svg("no such data directory"))
                self._send(200, svg.encode(), "image/svg+xml", extra)
            elif path == "/healthz":
                self._send(200, b"ok\n", "text/plain; charset=utf-8", extra)
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8", extra)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # noqa: BLE001 - a page must never take the supervisor down
            log.exception("metrics endpoint: %s failed", path)
            try:
                self._send(500, b"internal error (see the supervisor's log)\n",
                           "text/plain; charset=utf-8", {})
            except OSError:
                pass

    def _send(self, code: int, body: bytes, ctype: str, headers: dict) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


# -- what the supervisor starts --------------------------------------------------------------


class JobMetrics:
    """The supervisor's side, in one object: the directory the collectors publish into,
    the aggregator and the server."""

    def __init__(self, children: Callable[[], Sequence[Any]], *, port: int,
                 host: str = "127.0.0.1", token: str | None = None) -> None:
        import tempfile

        self.directory = Path(tempfile.mkdtemp(prefix="recorder-metrics-"))
        self.aggregator = Aggregator(self.directory, children)
        token = token or os.environ.get(TOKEN_ENV) or None
        self.server = MetricsServer(self.aggregator, host, port, token)

    def start(self) -> int:
        port = self.server.start()
        log.info("serving metrics on %s (status page %s)", self.server.url("/metrics"),
                 self.server.url("/"))
        if self.server.host not in ("127.0.0.1", "localhost", "::1") and \
                self.server.token is None:
            log.warning("the metrics endpoint listens on %s without a token: anyone who "
                        "can reach it sees the status page (set --metrics-token or %s)",
                        self.server.host, TOKEN_ENV)
        return port

    def env(self) -> dict[str, str]:
        from recorder.capture.metrics import METRICS_DIR_ENV

        return {**os.environ, METRICS_DIR_ENV: str(self.directory)}

    def stop(self) -> None:
        import shutil

        self.server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
