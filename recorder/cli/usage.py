"""How every command reports a mistake it cannot go on with: one line, then an exit code."""

from __future__ import annotations

import typer


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr (``error: ...``) and exit ``code`` (2: fix the input)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
