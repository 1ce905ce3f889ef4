"""Running a typer app the way every ``recorder`` command runs."""

from __future__ import annotations

import sys

import typer


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
