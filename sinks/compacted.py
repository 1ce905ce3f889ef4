"""Compacted files in the Hive layout, and the files they replace (docs/storage.md,
"Compaction").

``recorder compact`` writes a partition's small files into one large file named like any
other, with the source ``compacted-<id>``::

    <first>-<last>-compacted-<id>-0001.parquet    footer: market_recorder.replaces = [names]

and then deletes the files it replaces. Between the two (a few milliseconds on disk, one
DELETE per file on a store; or longer after a crash) both are in the folder: a reader that
lists a partition drops every file a compacted file there names in ``replaces``, so it never
counts a row twice, and never misses one (the compacted file is visible before any input
goes). The next ``recorder compact`` deletes inputs a crash left behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import TypeVar

from sinks.layout import parse_parquet_name

SOURCE_PREFIX = "compacted-"
REPLACES_KEY = "replaces"  # market_recorder.replaces: JSON list of file names

P = TypeVar("P", bound=PurePath)


def is_compacted(name: str) -> bool:
    parsed = parse_parquet_name(name)
    return parsed is not None and parsed[0].startswith(SOURCE_PREFIX)


def replaces_of(metadata: dict[str, str]) -> list[str]:
    """The file names a compacted file's metadata (``market_recorder.*``, prefix removed)
    says it replaces."""
    try:
        names = json.loads(metadata.get(REPLACES_KEY) or "[]")
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)]


def visible(paths: Sequence[P], read_metadata: Callable[[P], dict[str, str]]) -> list[P]:
    """``paths`` without the files that a compacted file of the same partition replaces.
    Only compacted files' footers are read (``read_metadata``; its errors propagate: a
    reader fails rather than guess)."""
    replaced: set[tuple[str, str]] = set()
    for p in paths:
        if is_compacted(p.name):
            replaced.update((str(p.parent), n) for n in replaces_of(read_metadata(p)))
    if not replaced:
        return list(paths)
    return [p for p in paths if (str(p.parent), p.name) not in replaced]
