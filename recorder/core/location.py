"""Where a recording goes: a local data directory, or an object store and a local spool.

``--data`` / ``[output] path`` is either a directory or ``s3://bucket/prefix`` (any
S3-compatible store; docs/storage.md, "Object storage and many hosts"). For a store, the
collectors still write a local directory, the *spool* (journal, files being written,
finished files waiting for their upload), and every finished file is uploaded to the same
relative path under the prefix. So everything that works on a data directory (the
supervisor's state files, recovery, ``recorder status``, ``recorder tail``) works on the
spool unchanged.

The spool of ``s3://bucket/prefix`` is ``<spool base>/<bucket>/<prefix, %-quoted>``; the
base is ``[output] spool``, else ``$RECORDER_SPOOL``, else
``$XDG_CACHE_HOME/market-recorder/spool`` (``~/.cache/market-recorder/spool``). A spool
carries a small marker file naming its store, so that a process handed only the spool
directory (a collector started by the supervisor) knows where its files go.

Pure functions and one tiny file: no network here (the client lives in
``sinks/object_store.py``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

MARKER = ".store.json"
SCHEMES = ("s3",)
# pathlib turns "s3://b/p" into "s3:/b/p" (a typer Path option does that to --data):
# accept both spellings, nothing else.
_URL = re.compile(r"^(?P<scheme>s3):/{1,2}(?P<bucket>[^/]*)(?:/(?P<prefix>.*))?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class StoreURL:
    """``s3://bucket/prefix``: the prefix has no leading or trailing slash (may be empty)."""

    bucket: str
    prefix: str = ""
    scheme: str = "s3"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def key(self, rel: str = "") -> str:
        """``bucket/prefix/rel``: the path a pyarrow/fsspec file system takes."""
        parts = [self.bucket, self.prefix, rel.strip("/")]
        return "/".join(p for p in parts if p)

    def __str__(self) -> str:
        return self.url


def is_store_url(value: object) -> bool:
    return value is not None and _URL.match(str(value)) is not None


def parse_store_url(value: object) -> StoreURL | None:
    """The store named by ``value`` (``s3://bucket/prefix``), None for a local path; a
    malformed store URL raises ValueError saying what is wrong."""
    if value is None:
        return None
    m = _URL.match(str(value))
    if m is None:
        return None
    bucket = m["bucket"]
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{value!s}: {bucket!r} is not a bucket name (3-63 characters: "
                         "lowercase letters, digits, '.' and '-'); use s3://bucket/prefix")
    parts = [p for p in (m["prefix"] or "").split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{value!s}: '.' and '..' are not allowed in the prefix")
    return StoreURL(bucket, "/".join(parts), m["scheme"])


def default_spool_base(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("RECORDER_SPOOL"):
        return Path(env["RECORDER_SPOOL"]).expanduser()
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "market-recorder" / "spool"


def spool_root(store: StoreURL, base: Path | str | None = None) -> Path:
    """The local directory that spools ``store``'s files (see the module doc)."""
    base = default_spool_base() if base is None else Path(base).expanduser()
    return base / store.bucket / (quote(store.prefix, safe="") or "_")


def read_marker(root: Path | str) -> StoreURL | None:
    """The store a spool directory uploads to (None: a plain data directory)."""
    try:
        raw = json.loads((Path(root) / MARKER).read_text())
        return parse_store_url(raw["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_marker(root: Path | str, store: StoreURL) -> None:
    path = Path(root) / MARKER
    if read_marker(root) == store:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{MARKER}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": store.url}) + "\n")
    os.replace(tmp, path)


def resolve(data: object, spool: Path | str | None = None) -> tuple[Path, StoreURL | None]:
    """(local directory, store or None) for a ``--data`` value: a store URL gives its spool
    (under ``spool``, default ``default_spool_base()``); a directory is itself, with the
    store its marker names if it is a spool."""
    store = parse_store_url(data)
    if store is not None:
        return spool_root(store, spool), store
    root = Path(str(data)).expanduser()
    return root, read_marker(root)
