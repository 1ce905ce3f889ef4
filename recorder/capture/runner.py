"""One collector process: the sink, the exchange's feed and the collector, wired together
(what ``recorder collect`` runs per role; see recorder/capture/supervisor.py)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from recorder.capture import jobs
from recorder.core.secrets import CredentialError

log = logging.getLogger("recorder")

# Rows waiting for the sink's writer thread (as Arrow batches, about 100 B a book row):
# enough to ride out a slow fsync, small enough to keep a collector's RSS well under 200 MB.
MAX_QUEUED_ROWS = 32_768
# Publishing a file holds one row group in memory; 50k rows keeps that spike near 10 MB while
# DuckDB still prunes and scans at full speed.
ROW_GROUP_ROWS = 50_000
TEMPFAIL_EXIT = 75  # sysexits EX_TEMPFAIL: the data directory is full/unwritable for now


class StartupError(Exception):
    """The collector cannot start: one line for the user, and the exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def collect(cfg: Any, role: str, data: Path | None, duration: float | None,
            url: str | None, early_stop: threading.Event | None = None) -> int:
    """Record one role of ``cfg`` until stopped; raise StartupError if it cannot start."""
    collector, where = build(cfg, role, data, duration, url)
    collector.install_signal_handlers()
    if early_stop is not None and early_stop.is_set():
        collector.stop()
    log.info("recording %s %s (%s %s) into %s", cfg.path, role, cfg.exchange, cfg.api, where)
    collector.run()
    if collector.failure:  # e.g. the key revoked mid-run: exit 2, the supervisor reports it
        raise StartupError(f"{cfg.path}: {collector.failure}")
    log.info("stopped: %d frames, %d book updates verified, %d resyncs",
             collector.frames, collector.books.verified, collector.resyncs)
    return 0


def collect_many(cfg: Any, roles: list[str], data: Path | None, duration: float | None,
                 url: str | None, early_stop: threading.Event | None = None) -> int:
    """Record several public roles of ``cfg`` in this process: one Collector each, with its
    own sink, heartbeat and metrics, each in a thread of its own (the receive loops block in
    ``recv`` and release the GIL; at real rates CPU is far from the limit). SIGTERM stops
    them all, each finishing its files. A collector that ends with an exception or gives up
    (``failure``) stops the others: the process exits 1 (the supervisor restarts every
    role) or 2 (a permanent failure of the config)."""
    import signal

    if len(roles) == 1:
        return collect(cfg, roles[0], data, duration, url, early_stop)
    collectors: list[tuple[str, Any]] = []
    try:
        for role in roles:
            collector, where = build(cfg, role, data, duration, url)
            collectors.append((role, collector))
    except BaseException:
        for _role, c in collectors:  # their sinks' threads would keep the process alive
            c.sink.close(timeout=4.0)
        raise
    stopped = threading.Event()

    def stop_all(*_: object) -> None:
        stopped.set()
        for _role, c in collectors:
            c.stop()

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    if early_stop is not None and early_stop.is_set():
        stop_all()
    crashed: list[tuple[str, BaseException]] = []

    def run_one(role: str, collector: Any) -> None:
        try:
            collector.run()
        except BaseException as e:  # noqa: BLE001 - reported below, the process exits 1
            log.exception("%s %s: the collector crashed", cfg.path, role)
            crashed.append((role, e))
        if crashed or collector.failure:
            stop_all()

    threads = [threading.Thread(target=run_one, args=(role, c), name=f"{cfg.name}-{role}")
               for role, c in collectors]
    log.info("recording %s %s in one process (%s %s) into %s", cfg.path, ", ".join(roles),
             cfg.exchange, cfg.api, where)
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(0.2)  # short joins: the main thread keeps taking signals
    for role, c in collectors:
        log.info("%s stopped: %d frames, %d book updates verified, %d resyncs", role,
                 c.frames, c.books.verified, c.resyncs)
    if crashed:
        role, e = crashed[0]
        log.error("%s: %s crashed (%s: %s); every role of this process stopped", cfg.path,
                  role, type(e).__name__, e)
        return 1
    failures = [f"{role}: {c.failure}" for role, c in collectors if c.failure]
    if failures:
        raise StartupError(f"{cfg.path}: {'; '.join(failures)}")
    return 0


def build(cfg: Any, role: str, data: Path | None, duration: float | None,
          url: str | None) -> tuple[Any, str]:
    """The sink, the exchange's feed and the collector of one role, wired together; and
    where it records (for the log)."""
    from recorder.capture.collector import Collector
    from sinks.layout import host_name
    from sinks.parquet_sink import ParquetSink, SinkError, SinkUnavailable, is_transient

    root, store = data_location(cfg, data)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if is_transient(e):  # e.g. no room for the directory entry: space may come back
            raise StartupError(f"cannot create the data directory {root} for now: "
                               f"{e.strerror} (disk full?); the supervisor retries",
                               TEMPFAIL_EXIT) from None
        raise StartupError(f"cannot create the data directory {root}: {e.strerror}") from None
    if not os.access(root, os.W_OK):
        raise StartupError(f"the data directory {root} is not writable")
    uploads = None
    if store is not None:  # s3://...: root is the local spool (docs/storage.md)
        from recorder.core.location import write_marker

        uploads = open_store(store)
        write_marker(root, store)
    spec = cfg.spec
    try:
        if role != "private" and spec.public_uses_credentials and _has_credentials(cfg):
            check_credentials(cfg)
        if role == "private":
            if spec.private_feed is None:
                raise StartupError(f"{spec.name} has no private channels")
            feed = spec.private_feed(cfg, root)
        else:
            feed = spec.public_feed(cfg, url, jobs.subscriptions(cfg, role))
    except CredentialError as e:
        raise StartupError(str(e)) from None
    except ValueError as e:
        raise StartupError(f"{cfg.path}: {e}") from None
    try:
        sink = ParquetSink(root, cfg.exchange, rotate_seconds=cfg.rotate_seconds,
                           max_file_bytes=cfg.max_file_mb * 1024 * 1024,
                           journal_interval=cfg.journal_interval,
                           max_queued_rows=MAX_QUEUED_ROWS, row_group_rows=ROW_GROUP_ROWS,
                           source=f"{cfg.name}-{role}-{host_name()}-{os.getpid()}")
    except SinkUnavailable as e:  # a full disk at start-up: the supervisor retries (75)
        raise StartupError(f"{e}; the supervisor retries", TEMPFAIL_EXIT) from None
    except SinkError as e:  # e.g. a read-only or unusable data directory: one line, exit 2
        raise StartupError(str(e)) from None
    if uploads is not None:
        sink = _uploading(sink, cfg, root, *uploads)
    heartbeat = root / ".status" / f"{cfg.name}-{role}.collector.json"
    # --metrics-port: counted for the supervisor's endpoint (recorder/capture/metrics.py;
    # nothing changes, nothing is imported, without it).
    counted = None
    if os.environ.get("RECORDER_METRICS_DIR"):
        from recorder.capture import metrics
        from recorder.capture.supervisor import job_key

        sink, counted = metrics.instrument(sink, feed, job_key(cfg, role), cfg.exchange, role)
    mirror = None
    if role != "private" and getattr(cfg, "redundancy", 1) > 1 and feed.trade_symbols:
        # A second connection for the trades only (recorder/capture/redundancy.py).
        trades = [s for s in jobs.subscriptions(cfg, role) if s.channel == "trade"]
        mirror = spec.public_feed(cfg, url, trades)
    collector = Collector(cfg, sink, feed, duration=duration, heartbeat_path=heartbeat,
                          mirror_feed=mirror)
    if collector.backfills:
        from recorder.capture.backfill_seed import last_rows

        # A gap since the last recorded rows (a crash, a restart) is repaired too.
        for bf in collector.backfills.values():
            bf.restore(last_rows(root, cfg.exchange, bf.stream, bf.lanes))
    if counted is not None:
        metrics.attach(counted, collector)
    return collector, (f"{store} (spool {root})" if store else str(root))


def data_location(cfg: Any, data: Path | None) -> tuple[Path, Any]:
    """The local directory a collector writes and the object store it uploads to (None for
    a plain directory): ``--data`` (a directory, a spool, or ``s3://...``) or the config."""
    from recorder.core.location import parse_store_url, resolve

    if data is None:
        return cfg.output_path, parse_store_url(cfg.output_url)
    try:
        return resolve(data, cfg.spool)
    except ValueError as e:
        raise StartupError(f"--data: {e}") from None


def open_store(store: Any) -> tuple[Any, str | None]:
    """(the store's client, why it cannot be reached now or None). Wrong credentials, a
    missing bucket, a refusal: StartupError (one line, exit 2). An unreachable store is not
    an error: recording starts into the spool, and the caller records why."""
    from sinks.layout import host_name
    from sinks.object_store import S3Store, StoreError

    try:
        client = S3Store(store, host=host_name())
        S3Store(store, host=host_name(), connect_timeout=3.0, attempts=1).check()
    except StoreError as e:
        if e.permanent:
            raise StartupError(str(e)) from None
        log.warning("%s; recording into the spool until it answers", e)
        return client, str(e)
    return client, None


def _uploading(sink: Any, cfg: Any, root: Path, client: Any, unreachable: str | None) -> Any:
    from sinks.uploader import Uploader, UploadingSink

    if unreachable:
        sink.reporter.problem("store_unreachable", {"store": client.url, "error": unreachable,
                                                    "spool": str(root)})
    uploader = Uploader(root, client, sink.reporter, source=sink.source,
                        max_spool_bytes=cfg.spool_max_mb * 1024 * 1024)
    return UploadingSink(sink, uploader, upload_wait=cfg.upload_wait)


def _has_credentials(cfg: Any) -> bool:
    return bool(cfg.secrets_file or cfg.api_key_env)


def check_credentials(cfg: Any) -> None:
    """Refuse bad credentials before any collector starts (CredentialError)."""
    check = cfg.spec.check_credentials
    if check is not None:
        check(cfg)
