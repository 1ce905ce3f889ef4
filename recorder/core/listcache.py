"""An exchange's symbol list cached on disk: written by `recorder pairs --update`, read by
config validation (which must work offline, so it reads only this file).

Where: ``$MARKET_RECORDER_CACHE/<name>`` if that variable is set, else
``$XDG_CACHE_HOME/market-recorder/<name>``, else ``~/.cache/market-recorder/<name>``. The
file is ``{"source": ..., "fetched_at": ..., "<key>": [row, ...]}``, written atomically.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CACHE_ENV = "MARKET_RECORDER_CACHE"


def cache_path(name: str) -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / name
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "market-recorder" / name


def save(path: Path, key: str, rows: list[list], source: str,
         error: Callable[[str], Exception]) -> Path:
    """Write the list atomically (a reader never sees half a file); ``error(message)`` is
    raised when the file cannot be written."""
    from recorder.core.secrets import write_private

    doc = {"source": source, "fetched_at": int(time.time()), key: rows}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, json.dumps(doc, indent=0))
    except OSError as e:
        raise error(f"cannot write {path}: {e.strerror or e}") from None
    return path


def load(path: Path, key: str, row: Callable[[list], Any],
         error: Callable[[str], Exception]) -> tuple[list[Any], dict[str, Any]] | None:
    """The rows (each through ``row``) and the metadata (source, fetched_at), or None if
    there is no file; ``error(message)`` is raised for a file that is not such a list."""
    try:
        doc = json.loads(path.read_text())
        rows = [row(r) for r in doc[key]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise error(f"{path}: not a list written by `recorder pairs --update`; delete it or "
                    "run that command again") from None
    return rows, {"source": doc.get("source"), "fetched_at": doc.get("fetched_at")}


def mtime(path: Path) -> int | None:
    """The file's modification time (ns), to re-read it only when it changed; None if it
    does not exist."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
