"""What the metrics tests share: a busy job's exposition, the alert rules, a recorder run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import yaml
from prometheus_client import generate_latest

from recorder.capture import metrics
from recorder.capture.metrics_server import Aggregator, make_registry
from tests.e2e import ROOT, _stop_supervisor, wait_until


def exposition_of_a_busy_job(tmp_path: Path | None = None) -> str:
    """The /metrics text of a job with a running and a restarted collector."""
    import tempfile

    directory = Path(tmp_path or tempfile.mkdtemp())
    child = FakeChild("k-public", directory, pid=4242)
    snap = _snapshot("k-public", 4242, 100, 50, gaps=1)
    snap["integrity"] = {"checksum_mismatch": 1}
    snap["counters"]["credentials_refused"] = 0
    snap["gauges"]["token_at"] = time.time() - 5
    snap["gauges"]["clock_offset_s"] = 0.002
    snap["gauges"]["upload_lag_s"] = 42.5  # storing to an object store
    snap["gauges"]["spool_bytes"] = 1_048_576
    _publish(directory, snap)
    agg = Aggregator(directory, lambda: [child])
    return generate_latest(make_registry(agg)).decode()


def rule(name: str) -> dict:
    return next(r for r in rules() if r["alert"] == name)


@contextmanager
def recorder_run(tmp: Path, cfg: Path, data: Path, *more: str):
    """The real command line: `recorder run CFG --metrics-port 0`; yields (proc, port)."""
    log_path = tmp / f"run-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "recorder", "run", str(cfg), "--data",
                                 str(data), "--metrics-port", "0", *more], stdout=log_file,
                                stderr=subprocess.STDOUT, cwd=ROOT)
        proc.log_path = log_path  # type: ignore[attr-defined]
        try:
            yield proc, metrics_port(log_path)
        finally:
            _stop_supervisor(proc, data, timeout=20)


@dataclass
class FakeChild:
    key: str
    root: Path
    exchange: str = "kraken"
    role: str = "public"
    state: str = "running"
    pid: int | None = None
    restarts: int = 0
    started_at: float = field(default_factory=time.time)
    last_exit: str | None = None

    @property
    def proc(self):
        return object() if self.pid else None

    @property
    def config(self):
        return SimpleNamespace(exchange=self.exchange, name=self.key.rsplit("-", 1)[0],
                               path=Path(f"{self.key}.toml"))


def _snapshot(key: str, pid: int, messages: int, trades: int, gaps: int = 0,
              exchange: str = "kraken", last: float | None = None) -> dict:
    return {"v": 1, "key": key, "pid": pid, "exchange": exchange, "role": "public",
            "started_at": time.time() - 10, "published_at": time.time(),
            "counters": {"messages": messages, "gaps": gaps, "reconnects": gaps},
            "rows": {"trades": trades, "events": 2 + gaps}, "integrity": {},
            "events": {"connected": 1 + gaps, "disconnected": gaps},
            "sink_problems": {}, "lag": {"trades": {"buckets": [1] * 17, "sum": 0.5}},
            "gauges": {"connected": True, "conn_id": 1, "last_message_at": last or time.time(),
                       "last_data_at": last or time.time(), "journal_pending_rows": 3},
            "recent_events": [[int(time.time() * 1e6), "disconnected", None, None, "{}"]]
            * gaps}


def _publish(directory: Path, snap: dict) -> None:
    (directory / metrics.file_name(snap["key"], snap["pid"])).write_text(json.dumps(snap))


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def metrics_port(log_path: Path, timeout: float = 20) -> int:
    def found():
        m = SERVING.search(log_path.read_text())
        return int(m.group(1)) if m else None

    return wait_until(found, timeout, "the metrics endpoint's log line")


RULES = ROOT / "docs" / "alerts.yml"


SERVING = re.compile(r"serving metrics on http://127\.0\.0\.1:(\d+)/metrics")
