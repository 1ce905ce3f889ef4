"""`recorder collect`: one collector process, as `recorder run`'s supervisor starts it.

Parsed with argparse, not typer: typer builds its parameter converters with pydantic, and a
collector that imported typer carried typer, rich and pydantic (about 18 MB of RSS) for the
whole capture without using them. ``python -m recorder collect`` comes here directly
(recorder/__main__.py); the hidden typer command of the same name calls ``collect`` too.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from recorder.core.logs import setup_logging

# A SIGTERM during start-up (journal recovery can take seconds) must not kill the process
# half-way: remember it, and stop as soon as the collector exists.
early_stop = threading.Event()


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def collect(config: Path, role: str, data: Path | None, duration: float | None,
            url: str | None, log_level: str) -> int:
    """One role, or several public roles of the config (comma-separated), each in a thread
    of its own; the process's exit code."""
    from recorder.core.lean_imports import keep_out

    keep_out()
    early_stop.clear()
    signal.signal(signal.SIGTERM, lambda *_: early_stop.set())
    signal.signal(signal.SIGINT, lambda *_: early_stop.set())
    setup_logging(log_level)
    from recorder.capture import jobs
    from recorder.capture.runner import StartupError, collect_many
    from recorder.core.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as e:
        return _fail(str(e))
    roles = jobs.roles(cfg)
    wanted = [r.strip() for r in role.split(",") if r.strip()]
    for r in wanted or [role]:
        if r not in roles:
            return _fail(f"--role {r!r}; {cfg.path} has: {', '.join(roles)}")
    if len(wanted) != len(set(wanted)) or (len(wanted) > 1 and not all(
            jobs.is_public(r) for r in wanted)):
        return _fail(f"--role {role!r}: only distinct public roles share a process")
    if len(wanted) > 1:  # say which connection a line is about
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s"))
    try:
        return collect_many(cfg, wanted, data, duration, url, early_stop)
    except StartupError as e:
        return _fail(str(e), e.code)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="recorder collect",
                                 description="One collector process (what `run` starts).")
    ap.add_argument("config", type=Path)
    ap.add_argument("--role", default="public")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--url")
    ap.add_argument("--log-level", default="info")
    a = ap.parse_args(argv)
    return collect(a.config, a.role, a.data, a.duration, a.url, a.log_level)
