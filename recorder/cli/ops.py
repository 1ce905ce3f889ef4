"""`recorder tail` and `recorder watch`: looking at the data itself, live."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import typer

from recorder.cli.usage import fail


def tail(
    table: str = typer.Argument(..., help="Table to follow (trades, book, spread, ohlc, "
                                "ticker, fills, events, ...)."),
    symbol: str | None = typer.Option(None, "--symbol", help="Only this symbol (BTC/USD; "
                                      "BTC-USDT works too)."),
    data: Path = typer.Option(Path("data"), "--data", help="Data directory being recorded."),
    exchange: str | None = typer.Option(None, "--exchange", help="Only this exchange."),
    lines: int = typer.Option(10, "--lines", "-n", min=0, help="Journaled rows to show "
                              "first."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Keep printing new rows "
                                "(like tail -f) or stop after the first ones."),
) -> None:
    """Follow the rows of TABLE as they are journaled (about a second after they arrive),
    as an aligned table, until Ctrl-C."""
    from recorder.analysis.tail import follow as follow_rows
    from recorder.core.schema import TABLES

    if table not in TABLES:
        fail(f"no table {table!r}; tables: {', '.join(TABLES)}")
    if not data.is_dir():
        fail(f"no data directory {data} (pass the --data of the running `recorder run`)")
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    def write(line: str) -> None:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # `recorder tail ... | head`
            stopping.set()

    follow_rows(data, table, symbol=symbol, exchange=exchange, lines=lines,
                keep_following=follow, write=write, stop=stopping.is_set)


def watch(
    config: Path = typer.Argument(..., help="Config file (TOML)."),
    symbol: list[str] = typer.Option([], "--symbol", help="Only this symbol (repeatable)."),
    table: list[str] = typer.Option([], "--table", help="Only this table (repeatable): "
                                    "trades, book, spread, ohlc, ticker, fills."),
    url: str | None = typer.Option(None, "--url", help="Override the public WebSocket URL."),
    duration: float | None = typer.Option(None, "--duration", min=0.1,
                                          help="Stop after this many seconds."),
    events: bool = typer.Option(True, "--events/--no-events", help="Also print events "
                                "(connected, gaps, resyncs)."),
    private: bool = typer.Option(False, "--private", help="Also connect the private "
                                 "channels (fills) with the configured key."),
    log_level: str = typer.Option("warning", "--log-level", help="debug, info, warning, "
                                  "error."),
) -> None:
    """Connect with CONFIG and print normalized rows live, one line each, recording
    nothing: a quick look at a pair or a config before a long job."""
    from recorder.analysis.tail import canonical_symbol
    from recorder.capture.watch import watch as run_watch
    from recorder.core.config import ConfigError, load_config
    from recorder.core.logs import setup_logging
    from recorder.core.secrets import CredentialError

    setup_logging(log_level, default=logging.WARNING)
    try:
        cfg = load_config(config)
    except ConfigError as e:
        fail(str(e))
    if url and not url.startswith(("ws://", "wss://")):
        fail(f"--url {url!r} is not a WebSocket URL (ws:// or wss://)")

    def write(line: str) -> None:
        sys.stdout.write(line + "\n")

    try:
        run_watch(cfg, url=url, duration=duration, tables=table or None,
                  symbols=[canonical_symbol(s) for s in symbol] or None, events=events,
                  private=private, write=write)
    except (ValueError, CredentialError, RuntimeError) as e:
        fail(str(e))


# -- table catalog and compaction (docs/storage.md) -----------------------------------------


def enable_catalogs(loaded: list, data: Path | None) -> None:
    """``recorder run``: turn on the ``[output] catalog`` of each config in its data root
    (the directory, or the spool of a store) before any collector starts, so that every
    writer of the root commits (sinks/catalog.py). A mistake: one line and exit 2."""
    for cfg in loaded:
        uri = getattr(cfg, "catalog", None)
        if not uri:
            continue
        root = Path(data) if data is not None else cfg.output_path
        try:
            import pyiceberg  # noqa: F401
        except ImportError:
            fail(f"{cfg.path}: output.catalog: needs pyiceberg; install it with "
                 "pip install 'market-recorder[catalog]'")
        from sinks.catalog import CatalogError, write_settings

        try:
            root.mkdir(parents=True, exist_ok=True)
            write_settings(root, uri)
        except CatalogError as e:
            fail(f"{cfg.path}: output.catalog: {e}")
        except OSError as e:
            fail(f"{cfg.path}: output.catalog: cannot write {root}: {e.strerror or e}")


def _catalog_target(data: Path, catalog: str | None, required: bool = False):  # noqa: ANN202
    """The dataset's catalog (``--catalog``, else the settings its root holds), None
    without one; mistakes: one line, exit 2."""
    from recorder.core.location import resolve

    try:
        root, store = resolve(data)
    except ValueError as e:
        fail(f"--data: {e}")
    from sinks.catalog import CatalogError, read_settings, target_for

    have = read_settings(root) if root.is_dir() else None
    if catalog and have and catalog != have:
        fail(f"--catalog {catalog!r}: {root} commits to {have!r} (its _catalog/catalog.json)")
    uri = catalog or have
    if uri is None:
        if required:
            fail(f"--data {data}: no table catalog here; pass --catalog sqlite (or a "
                 "postgresql:// or https:// URI)")
        return None
    try:
        import pyiceberg  # noqa: F401
    except ImportError:
        fail("a table catalog needs pyiceberg: pip install 'market-recorder[catalog]'")
    try:
        return target_for(root, uri, store)
    except CatalogError as e:
        fail(f"--catalog: {e}")


def _check_compact_data(data: Path) -> None:
    from recorder.core.location import is_store_url, read_marker

    if is_store_url(data):
        return
    if not data.is_dir():
        fail(f"--data {data}: no such directory")
    store = read_marker(data)
    if store is not None:
        fail(f"--data {data} is the spool of {store.url}: compact the store (--data "
             f"{store.url}), whose files the spool only holds until they are uploaded")


def _day(value: str, option: str) -> str:
    import datetime as dt

    if value == "today":
        return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        fail(f"{option} {value!r} is not a date; use YYYY-MM-DD (or today)")


def compact(
    data: Path = typer.Option(Path("data"), "--data", help="Data directory or "
                              "s3://bucket/prefix."),
    table: list[str] = typer.Option([], "--table", help="Only this table (repeatable; "
                                    "default: all)."),
    exchange: str | None = typer.Option(None, "--exchange", help="Only this exchange."),
    date: list[str] = typer.Option([], "--date", help="Only this UTC date, YYYY-MM-DD "
                                   "(repeatable; 'today' allowed: only its published files "
                                   "are touched)."),
    before: str | None = typer.Option(None, "--before", help="Only dates before this one "
                                      "(default without --date: today, i.e. finished days)."),
    min_files: int = typer.Option(2, "--min-files", min=2, help="Compact a partition from "
                                  "this many files on."),
    catalog: str | None = typer.Option(None, "--catalog", help="The table catalog (default: "
                                       "the one the data directory names, if any)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be "
                                 "compacted."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress "
                                         "on stderr (default: when it is a terminal)."),
) -> None:
    """Rewrite each partition's small files into one large file, swapped in at once
    (and in one commit of the table catalog, if there is one)."""
    from recorder.core.schema import TABLES

    _check_compact_data(data)
    for t in table:
        if t not in TABLES:
            fail(f"--table {t!r}; tables: {', '.join(TABLES)}")
    dates = [_day(d, "--date") for d in date]
    if before is not None:
        before = _day(before, "--before")
    elif not dates:
        before = _day("today", "--before")
    target = _catalog_target(data, catalog)
    from recorder.analysis.compact import compact as run_compact

    show = sys.stderr.isatty() if progress is None else progress

    def report(done: int, total: int, what: str) -> None:
        if show:
            typer.echo(f"[{done}/{total}] {what}", err=True)

    try:
        results = run_compact(data, tables=table or None, exchange=exchange,
                              dates=dates or None, before=before, min_files=min_files,
                              catalog=target, dry_run=dry_run, progress=report)
    except (OSError, RuntimeError, ValueError) as e:
        from sinks.object_store import describe

        fail(describe(e) if str(data).startswith("s3:") else str(e))
    if not results:
        typer.echo("nothing to compact", err=True)
    for r in results:
        p = r.partition
        if r.finished_leftovers and not r.output:
            typer.echo(f"{p.rel}: removed {len(r.finished_leftovers)} file(s) an earlier "
                       "compaction replaced")
        elif dry_run:
            typer.echo(f"{p.rel}: {len(p.files)} files, {p.bytes / 1e6:.1f} MB (dry run)")
        else:
            typer.echo(f"{p.rel}: {len(p.files)} files -> {r.output.rsplit('/', 1)[1]}, "
                       f"{r.rows:,} rows, {r.bytes_in / 1e6:.1f} MB -> "
                       f"{r.bytes_out / 1e6:.1f} MB in {r.seconds:.1f} s")


def iceberg(
    data: Path = typer.Option(Path("data"), "--data", help="Data directory or "
                              "s3://bucket/prefix."),
    catalog: str | None = typer.Option(None, "--catalog", help="sqlite (<data>/_catalog/"
                                       "catalog.db), sqlite:////path.db, postgresql://user@"
                                       "host/db or an https:// REST catalog (default: the one "
                                       "the data directory names)."),
) -> None:
    """Turn on the Iceberg table catalog for a dataset (or check it): create or grow the
    tables and add every published file they lack. Recorders writing here commit from
    then on."""
    from recorder.core.location import is_store_url

    if not is_store_url(data) and not data.is_dir():
        fail(f"--data {data}: no such directory")
    target = _catalog_target(data, catalog, required=True)
    from recorder.analysis.compact import sync_catalog
    from sinks.catalog import CatalogError, write_settings

    try:
        target.root.mkdir(parents=True, exist_ok=True)
        write_settings(target.root, catalog or _settings_of(target.root))
        added = sync_catalog(data, target)
    except CatalogError as e:
        fail(f"--catalog: {e}")
    except OSError as e:
        fail(str(e))
    for table, (n, total) in added.items():
        typer.echo(f"{table}: {n} file(s) added, {total} in the table")
    typer.echo(f"catalog {target.shown()}, metadata under {target.warehouse}", err=True)


def _settings_of(root: Path) -> str:
    from sinks.catalog import read_settings

    return read_settings(root) or "sqlite"
