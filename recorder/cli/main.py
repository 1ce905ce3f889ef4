"""The ``recorder`` command line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import typer

from recorder.cli.usage import fail
from recorder.core.config import Config, ConfigError, load_config

# No locals in tracebacks: a credential must never reach a terminal or a log.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  pretty_exceptions_show_locals=False,
                  help="Record Kraken market data to Parquet and query it with DuckDB.")

log = logging.getLogger("recorder")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def _load_all(paths: list[Path]) -> list[Config]:
    configs = []
    for p in paths:
        try:
            configs.append(load_config(p))
        except ConfigError as e:
            fail(str(e))
    return configs


ROLES = ("public", "private")
_early_stop = threading.Event()
# Rows waiting for the sink's writer thread (~400 B each as Python tuples): enough to ride
# out a slow fsync, small enough to keep a collector's RSS well under 200 MB.
_MAX_QUEUED_ROWS = 32_768
# Publishing a file holds one row group in memory; 50k rows keeps that spike near 10 MB while
# DuckDB still prunes and scans at full speed.
_ROW_GROUP_ROWS = 50_000


def _jobs(cfg: Config) -> list[tuple[Config, str]]:
    """One connection per role that the config subscribes on."""
    jobs = []
    if cfg.public_subscriptions:
        jobs.append((cfg, "public"))
    if cfg.private_subscriptions:
        jobs.append((cfg, "private"))
    return jobs


@app.command()
def run(
    configs: list[Path] = typer.Argument(..., help="Config files (TOML)."),
    data: Path | None = typer.Option(None, "--data", help="Data directory (default: the "
                                     "config's [output] path)."),
    duration: float | None = typer.Option(None, "--duration", min=0.1,
                                          help="Stop after this many seconds."),
    url: str | None = typer.Option(None, "--url", help="Override the public WebSocket URL "
                                   "(single config only)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
) -> None:
    """Record until SIGINT/SIGTERM (finishing every file) or until --duration has passed."""
    _setup_logging(log_level)
    loaded = _load_all(configs)
    if url and len(loaded) > 1:
        fail("--url overrides the endpoint of a single config; "
             f"{len(loaded)} configs were given")
    if url and not url.startswith(("ws://", "wss://")):
        fail(f"--url {url!r} is not a WebSocket URL (ws:// or wss://)")
    jobs = [job for cfg in loaded for job in _jobs(cfg)]
    if len(jobs) > 1:
        # Refuse bad credentials before any collector starts, not in one child of several.
        from recorder.exchanges.kraken.private import CredentialError, check_credentials

        for cfg, role in jobs:
            if role == "private":
                try:
                    check_credentials(cfg)
                except CredentialError as e:
                    fail(f"{cfg.path}: {e}")
    # Always supervised, one job too: a crashed collector is restarted (and the restart
    # recorded as a gap), a collector that cannot start fails the job with exit code 2.
    from recorder.capture.supervisor import run_many

    raise typer.Exit(run_many(jobs, data, duration, url, log_level))


@app.command(hidden=True)
def collect(
    config: Path = typer.Argument(...),
    role: str = typer.Option("public", "--role"),
    data: Path | None = typer.Option(None, "--data"),
    duration: float | None = typer.Option(None, "--duration"),
    url: str | None = typer.Option(None, "--url"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """One collector process (what `run` starts per connection)."""
    from recorder.core.lean_imports import keep_out

    keep_out()
    # A SIGTERM during start-up (journal recovery can take seconds) must not kill the
    # process half-way: remember it, and stop as soon as the collector exists.
    _early_stop.clear()
    signal.signal(signal.SIGTERM, lambda *_: _early_stop.set())
    signal.signal(signal.SIGINT, lambda *_: _early_stop.set())
    _setup_logging(log_level)
    if role not in ROLES:
        fail(f"--role {role!r}; allowed: {', '.join(ROLES)}")
    cfg = _load_all([config])[0]
    raise typer.Exit(_collect(cfg, role, data, duration, url))


def _collect(cfg: Config, role: str, data: Path | None, duration: float | None,
             url: str | None) -> int:
    from recorder.capture.collector import Collector, make_public_adapter
    from recorder.capture.supervisor import TEMPFAIL_EXIT
    from sinks.parquet_sink import ParquetSink, SinkError, SinkUnavailable, is_transient

    root = data or cfg.output_path
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if is_transient(e):  # e.g. no room for the directory entry: space may come back
            fail(f"cannot create the data directory {root} for now: {e.strerror} (disk "
                 "full?); the supervisor retries", TEMPFAIL_EXIT)
        fail(f"cannot create the data directory {root}: {e.strerror}")
    if not os.access(root, os.W_OK):
        fail(f"the data directory {root} is not writable")
    if role == "private":
        from recorder.exchanges.kraken.private import CredentialError, make_private_adapter

        try:
            adapter = make_private_adapter(cfg, root)
        except CredentialError as e:
            fail(str(e))
    else:
        adapter = make_public_adapter(cfg, url)
    try:
        sink = ParquetSink(root, "kraken", rotate_seconds=cfg.rotate_seconds,
                           max_file_bytes=cfg.max_file_mb * 1024 * 1024,
                           journal_interval=cfg.journal_interval,
                           max_queued_rows=_MAX_QUEUED_ROWS, row_group_rows=_ROW_GROUP_ROWS,
                           source=f"{cfg.name}-{role}-{os.getpid()}")
    except SinkUnavailable as e:  # a full disk at start-up: the supervisor retries (75)
        fail(f"{e}; the supervisor retries", TEMPFAIL_EXIT)
    except SinkError as e:  # e.g. a read-only or unusable data directory: one line, exit 2
        fail(str(e))
    heartbeat = root / ".status" / f"{cfg.name}-{role}.collector.json"
    collector = Collector(cfg, sink, adapter, duration=duration, heartbeat_path=heartbeat)
    collector.install_signal_handlers()
    if _early_stop.is_set():
        collector.stop()
    log.info("recording %s %s (%s %s) into %s", cfg.path, role, cfg.exchange, cfg.api, root)
    collector.run()
    if collector.failure:  # e.g. the key revoked mid-run: exit 2, the supervisor reports it
        fail(f"{cfg.path}: {collector.failure}")
    log.info("stopped: %d frames, %d book checksums verified, %d resyncs",
             collector.frames, collector.books.verified, collector.resyncs)
    return 0


@app.command()
def renormalize(
    data: Path = typer.Option(Path("data"), "--data", help="Recording with a raw table."),
    out: Path = typer.Option(..., "--out", help="New data directory for the re-parsed tables."),
    book_checkpoint: str = typer.Option("1m", "--book-checkpoint", help="How often each "
                                        "verified book is saved whole to book_checkpoints "
                                        "(recorded time), as [output] book_checkpoint; 0: "
                                        "none."),
) -> None:
    """Parse the frames of the raw table again (after a parser fix) into a new directory."""
    from recorder.capture.renormalize import renormalize as run_renormalize
    from recorder.core.config import parse_duration
    from sinks.parquet_sink import ParquetSink

    try:
        checkpoint_s = 0 if book_checkpoint.strip() == "0" else parse_duration(book_checkpoint)
    except ValueError:
        fail(f"--book-checkpoint {book_checkpoint!r} is not a duration; use e.g. 30s, 1m, 1h, "
             "or 0 for none")

    _setup_logging("info")
    if not any((data / "raw").rglob("*.parquet")):
        fail(f"no raw frames under {data}/raw: record with [output] raw = true first")
    if out.resolve() == data.resolve():
        fail("--out must be a different directory than --data")
    sink = ParquetSink(out, "kraken", source=f"renormalize-{os.getpid()}")

    def progress(n: int) -> None:
        typer.echo(f"\r{n:,} frames", err=True, nl=False)

    try:
        counts = run_renormalize(data, sink.write, progress,
                                 checkpoint_us=checkpoint_s * 1_000_000)
    finally:
        sink.close()
    typer.echo("", err=True)
    for table, n in sorted(counts.items()):
        typer.echo(f"{table}: {n:,} rows")


def _register_optional_commands() -> None:
    from recorder.analysis.status import status
    from recorder.cli.pairs import pairs
    from recorder.cli.query import book, catalog, export, query, report
    from recorder.cli.simulate import simulate
    from recorder.cli.token import token

    app.command("query")(query)
    app.command("catalog")(catalog)
    app.command("export")(export)
    app.command("book")(book)
    app.command("report")(report)
    app.command("simulate", help="Run a local Kraken-compatible exchange.")(simulate)
    app.command("token", help="Fetch a WebSocket token with the configured key.")(token)
    app.command("pairs")(pairs)
    app.command("status", help="What each collector records: state, last message, rates, "
                "gaps and checksum failures over the last hour.")(status)


_register_optional_commands()


def run_app(typer_app: typer.Typer, prog_name: str | None = None) -> None:
    """Run a typer app; a usage mistake (unknown option, bad value) is one line and exit 2."""
    try:
        from click.exceptions import Abort, UsageError
    except ImportError:  # newer typer releases vendor click
        from typer._click.exceptions import UsageError
        from typer.exceptions import Abort

    try:
        code = typer_app(standalone_mode=False, prog_name=prog_name)
    except UsageError as e:
        where = e.ctx.command_path if e.ctx else (prog_name or "recorder")
        typer.echo(f"error: {where}: {e.format_message()}", err=True)
        sys.exit(2)
    except Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def main() -> None:
    run_app(app, "recorder")
