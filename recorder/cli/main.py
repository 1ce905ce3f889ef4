"""The ``recorder`` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

from recorder.cli.usage import fail
from recorder.core.config import Config, ConfigError, load_config
from recorder.core.logs import setup_logging

# No locals in tracebacks: a credential must never reach a terminal or a log.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  pretty_exceptions_show_locals=False,
                  help="Record crypto exchange market data (Kraken, KuCoin) to Parquet and "
                  "query it with DuckDB.")

log = logging.getLogger("recorder")


def _load_all(paths: list[Path]) -> list[Config]:
    configs = []
    for p in paths:
        try:
            configs.append(load_config(p))
        except ConfigError as e:
            fail(str(e))
    return configs


@app.command()
def run(
    configs: list[Path] = typer.Argument(..., help="Config files (TOML)."),
    data: Path | None = typer.Option(None, "--data", help="Data directory or "
                                     "s3://bucket/prefix (default: the config's [output] "
                                     "path)."),
    duration: float | None = typer.Option(None, "--duration", min=0.1,
                                          help="Stop after this many seconds."),
    url: str | None = typer.Option(None, "--url", help="Override the public WebSocket URL "
                                   "(single config only)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
    metrics_port: int | None = typer.Option(None, "--metrics-port", min=0, max=65535,
                                            help="Serve Prometheus metrics at /metrics and "
                                            "a live status page at / on this port (0: pick "
                                            "a free one and log it)."),
    metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="Address the "
                                     "metrics endpoint listens on."),
    metrics_token: str | None = typer.Option(None, "--metrics-token", envvar=
                                             "RECORDER_METRICS_TOKEN", show_envvar=True,
                                             help="Require this token from every client "
                                             "but 127.0.0.1 (Bearer header, or ?token= "
                                             "once in a browser)."),
) -> None:
    """Record until SIGINT/SIGTERM (finishing every file) or until --duration has passed."""
    setup_logging(log_level)
    loaded = _load_all(configs)
    if url and len(loaded) > 1:
        fail("--url overrides the endpoint of a single config; "
             f"{len(loaded)} configs were given")
    if url and not url.startswith(("ws://", "wss://")):
        fail(f"--url {url!r} is not a WebSocket URL (ws:// or wss://)")
    data = _check_stores(loaded, data)
    from recorder.cli.ops import enable_catalogs

    enable_catalogs(loaded, data)
    from recorder.capture import jobs as job_plan

    jobs = job_plan.jobs(loaded)
    if len(jobs) > 1:
        # Refuse bad credentials before any collector starts, not in one child of several.
        from recorder.capture.runner import check_credentials
        from recorder.core.secrets import CredentialError

        for cfg, role in jobs:
            if role == "private":
                try:
                    check_credentials(cfg)
                except CredentialError as e:
                    fail(f"{cfg.path}: {e}")
    # Always supervised, one job too: a crashed collector is restarted (and the restart
    # recorded as a gap), a collector that cannot start fails the job with exit code 2.
    if _as_process:
        _become_supervisor(configs, data, duration, url, log_level, metrics_port,
                           metrics_host, metrics_token)
    from recorder.capture.supervisor import run_many

    raise typer.Exit(run_many(jobs, data, duration, url, log_level, metrics_port=metrics_port,
                              metrics_host=metrics_host, metrics_token=metrics_token))


# True when this process is the `recorder` command itself (main()), not a caller of the app.
_as_process = False


def _become_supervisor(configs: list[Path], data: Path | None, duration: float | None,
                       url: str | None, log_level: str, metrics_port: int | None,
                       metrics_host: str, metrics_token: str | None) -> None:
    """Replace this process (same pid, same output) with the supervisor's own entry
    point once everything is checked: typer parses its options with pydantic, which would
    stay in the supervisor's memory (13 MB of its 36) for a capture of weeks. The token
    goes through the environment, never the command line (``ps`` shows it)."""
    argv = [sys.executable, "-m", "recorder.capture.supervisor", *map(str, configs),
            "--log-level", log_level, "--metrics-host", metrics_host]
    for flag, value in (("--data", data), ("--duration", duration), ("--url", url),
                        ("--metrics-port", metrics_port)):
        if value is not None:
            argv += [flag, str(value)]
    if metrics_token is not None:
        os.environ["RECORDER_METRICS_TOKEN"] = metrics_token
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def _check_stores(loaded: list[Config], data: Path | None) -> Path | None:
    """``--data s3://...`` or ``[output] path = "s3://..."``: check each object store once,
    before any collector starts (wrong credentials, a missing bucket: one line, exit 2; an
    unreachable store is not an error), and hand the collectors the local spool, whose
    marker names the store (recorder/core/location.py)."""
    from recorder.core.location import is_store_url, parse_store_url, resolve, write_marker

    if data is not None and not is_store_url(data):
        return data
    if data is not None:
        try:
            root, store = resolve(data, loaded[0].spool)
        except ValueError as e:
            fail(f"--data: {e}")
        targets, data = [(root, store)], root
    else:
        targets = [(c.output_path, parse_store_url(c.output_url)) for c in loaded
                   if c.output_url]
    from recorder.capture.runner import StartupError, open_store

    seen = set()
    for root, store in targets:
        if store.url in seen:
            continue
        seen.add(store.url)
        try:
            open_store(store)
        except StartupError as e:
            fail(str(e), e.code)
        try:
            root.mkdir(parents=True, exist_ok=True)
            write_marker(root, store)
        except OSError:
            pass  # the collector says why, with the path
    return data


@app.command(hidden=True)
def collect(
    config: Path = typer.Argument(...),
    role: str = typer.Option("public", "--role"),
    data: Path | None = typer.Option(None, "--data"),
    duration: float | None = typer.Option(None, "--duration"),
    url: str | None = typer.Option(None, "--url"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """One collector process (what `run` starts): one role, or several public roles of
    the config, comma-separated, each in a thread of its own. ``python -m recorder collect``
    does not come here (recorder/cli/collect.py, without typer)."""
    from recorder.cli.collect import collect as run_collect

    raise typer.Exit(run_collect(config, role, data, duration, url, log_level))


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
    from recorder.capture.renormalize import renormalize_to
    from recorder.core.config import parse_duration

    try:
        checkpoint_s = 0 if book_checkpoint.strip() == "0" else parse_duration(book_checkpoint)
    except ValueError:
        fail(f"--book-checkpoint {book_checkpoint!r} is not a duration; use e.g. 30s, 1m, 1h, "
             "or 0 for none")

    setup_logging("info")
    if not any((data / "raw").rglob("*.parquet")):
        fail(f"no raw frames under {data}/raw: record with [output] raw = true first")
    if out.resolve() == data.resolve():
        fail("--out must be a different directory than --data")
    def progress(n: int) -> None:
        typer.echo(f"\r{n:,} frames", err=True, nl=False)

    counts = renormalize_to(data, out, progress, checkpoint_us=checkpoint_s * 1_000_000)
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
    app.command("simulate", help="Run a local exchange (Kraken, or KuCoin with --exchange "
                "kucoin).")(simulate)
    app.command("token", help="Fetch a WebSocket token with the configured key.")(token)
    app.command("pairs")(pairs)
    app.command("status", help="What each collector records: state, last message, rates, "
                "gaps and integrity failures (checksum or sequence) over the last hour.")(status)
    from recorder.cli.ops import compact, iceberg, tail, watch

    app.command("tail", help="Follow the rows of a table as they are journaled.")(tail)
    app.command("watch", help="Connect with a config and print normalized rows live, "
                "recording nothing.")(watch)
    app.command("compact", help="Rewrite small files into large ones, swapped in at once "
                "(one commit with a table catalog).")(compact)
    app.command("iceberg", help="Turn on the Iceberg table catalog of a dataset: create "
                "the tables, add the files they lack.")(iceberg)


_register_optional_commands()


def main() -> None:
    from recorder.cli.app import run_app

    global _as_process
    _as_process = True
    run_app(app, "recorder")
