"""The object store: any S3-compatible service, through pyarrow's S3 file system.

Configured only by the standard AWS environment variables: ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (read here and passed on explicitly, since not every SDK build honours
them; ``http://`` is allowed for a local store), ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` (without them, the SDK's default chain:
profile, instance role...), ``AWS_REGION`` / ``AWS_DEFAULT_REGION``. Nothing of these is
ever logged or written into the data.

A file appears under its final key only complete (docs/storage.md, "Object storage and many
hosts"): a small file is one PutObject of bytes already read into memory; a large one is
uploaded (multipart) under ``<prefix>/_uploads/<host>/`` first, its size checked, then copied
server-side (CopyObject, atomic) to its final key and the staging object deleted. pyarrow's
output stream completes a multipart upload with whatever was written when it is closed
after an error, so a large file is never streamed to its final key.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from recorder.core.location import StoreURL

log = logging.getLogger("sinks")

MiB = 1 << 20
DIRECT_MAX_BYTES = 8 * MiB  # up to this size: one PutObject from memory
CHUNK = 8 * MiB
STAGING = "_uploads"
# Answers that retrying cannot change (at start-up: exit 2). Anything else (no route, a
# refused connection, a timeout, 5xx, throttling) can pass: retried, files wait in the spool.
_PERMANENT = ("INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "ACCESS_DENIED",
              "NO_SUCH_BUCKET", "INVALID_BUCKET_NAME", "EXPIRED_TOKEN", "INVALID_TOKEN",
              "AUTHORIZATION_HEADER_MALFORMED", "ALL_ACCESS_DISABLED", "HTTP status 401",
              "HTTP status 403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
              "NoSuchBucket")
_AWS_ERROR = re.compile(r"AWS Error (?P<code>[\w ()]+?) during (?P<op>\w+) operation: "
                        r"(?P<msg>.*?)(?: \(Request ID: [^)]*\))?$", re.S)


class StoreError(OSError):
    """The store refused or could not be reached. ``permanent``: retrying cannot help (wrong
    credentials, a missing bucket, access denied)."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def describe(e: BaseException) -> str:
    """One short line for an error of pyarrow's S3 file system."""
    text = " ".join(str(e).split())
    m = _AWS_ERROR.search(text)
    if m is None:
        return text[:300]
    msg = m["msg"]
    if m["code"] == "ACCESS_DENIED" and msg.strip(" .") in ("", "No response body"):
        msg = ("access denied: wrong AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or no "
               "permission on the bucket")
    if "curlCode" in msg:  # "curlCode: 7, Could not connect to server; Details: ..."
        msg = msg.split(";")[0].split(",", 1)[-1].strip()
    return f"{m['code']} ({m['op']}): {msg}"[:300]


def is_permanent(e: BaseException) -> bool:
    if isinstance(e, StoreError):
        return e.permanent
    text = str(e)
    return any(code in text for code in _PERMANENT)


@dataclass(frozen=True)
class Uploaded:
    rel: str  # the path under the prefix it got (a "-N" suffix if the name was taken)
    bytes: int
    seconds: float
    already: bool = False  # found complete in the store (an earlier, interrupted attempt)


def endpoint_from_env(env: dict[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def filesystem(store: StoreURL, env: dict[str, str] | None = None, *,
               connect_timeout: float = 5.0, request_timeout: float = 60.0,
               attempts: int = 3) -> Any:
    """A ``pyarrow.fs.S3FileSystem`` for ``store``, configured from the environment."""
    import pyarrow.fs as pafs

    env = os.environ if env is None else env
    kw: dict[str, Any] = {}
    endpoint = endpoint_from_env(env)
    if endpoint:
        u = urlsplit(endpoint)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise StoreError(f"AWS_ENDPOINT_URL {endpoint!r} is not an http:// or https:// "
                             "URL", permanent=True)
        kw["endpoint_override"] = u.netloc + u.path.rstrip("/")
        kw["scheme"] = u.scheme
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if bool(key) != bool(secret):
        raise StoreError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither "
                         "(to use the SDK's default credentials)", permanent=True)
    if key:
        kw.update(access_key=key, secret_key=secret,
                  session_token=env.get("AWS_SESSION_TOKEN") or None)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region and not endpoint:
        try:  # AWS itself: the bucket's region (one anonymous HEAD request)
            region = pafs.resolve_s3_region(store.bucket)
        except (OSError, ValueError):
            region = None
    kw["region"] = region or "us-east-1"
    return pafs.S3FileSystem(
        connect_timeout=connect_timeout, request_timeout=request_timeout,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts), **kw)


class S3Store:
    """Uploads finished files under ``store``'s prefix and lists them for readers."""

    def __init__(self, store: StoreURL, env: dict[str, str] | None = None, *,
                 host: str = "host", connect_timeout: float = 5.0,
                 request_timeout: float = 60.0, attempts: int = 3,
                 direct_max_bytes: int = DIRECT_MAX_BYTES) -> None:
        self.store = store
        self.host = host
        self.endpoint = endpoint_from_env(env) or "AWS"
        self.direct_max_bytes = direct_max_bytes
        self.fs = filesystem(store, env, connect_timeout=connect_timeout,
                             request_timeout=request_timeout, attempts=attempts)

    @property
    def url(self) -> str:
        return self.store.url

    def where(self) -> str:
        return f"{self.store.url} (endpoint {self.endpoint})"

    # -- start-up ----------------------------------------------------------------------

    def check(self) -> None:
        """The bucket exists and a file can be written under the prefix (a probe object,
        deleted again). Raises StoreError: ``permanent`` for wrong credentials, a missing
        bucket or a refusal; not permanent when the store cannot be reached."""
        import pyarrow.fs as pafs

        try:
            info = self.fs.get_file_info(self.store.bucket)
        except OSError as e:
            raise self._error("cannot use", e) from None
        if info.type == pafs.FileType.NotFound:
            raise StoreError(f"the bucket {self.store.bucket!r} does not exist at "
                             f"{self.endpoint} (create it first)", permanent=True)
        probe = self.store.key(f"{STAGING}/{self.host}/.probe-{os.getpid()}-{uuid.uuid4().hex}")
        try:
            out = self.fs.open_output_stream(probe)
            out.write(b"market-recorder write probe\n")
            out.close()
            self.fs.delete_file(probe)
        except OSError as e:
            raise self._error("cannot write to", e) from None

    def _error(self, what: str, e: OSError) -> StoreError:
        return StoreError(f"{what} {self.where()}: {describe(e)}", is_permanent(e))

    # -- uploads -----------------------------------------------------------------------

    def upload(self, local: Path, rel: str) -> Uploaded:
        """Put ``local`` at ``<prefix>/<rel>``, visible only complete. A name already taken
        by a file of the same size is taken as this file's earlier upload (cut short before
        the spool forgot it); of another size (a pid reused after a container restart), the
        file gets the next free ``-N`` name. Raises OSError (StoreError) if it cannot."""
        import pyarrow.fs as pafs

        size = local.stat().st_size
        final = rel
        stem = PurePosixPath(rel).stem
        parent = str(PurePosixPath(rel).parent)
        for n in range(1, 1000):
            info = self.fs.get_file_info(self.store.key(final))
            if info.type == pafs.FileType.NotFound:
                break
            if info.size == size:
                return Uploaded(final, size, 0.0, already=True)
            final = f"{parent}/{stem}-{n}.parquet"
        t0 = time.monotonic()
        if size <= self.direct_max_bytes:
            self._put(local, self.store.key(final))
        else:
            self._staged(local, self.store.key(final), size)
        return Uploaded(final, size, time.monotonic() - t0)

    def _put(self, local: Path, key: str) -> None:
        data = local.read_bytes()  # read first: nothing can fail half-way through the PUT
        out = self.fs.open_output_stream(key)
        out.write(data)
        out.close()  # one PutObject: the object appears whole or not at all

    def _staged(self, local: Path, key: str, size: int) -> None:
        name = PurePosixPath(key).name
        staging = self.store.key(f"{STAGING}/{self.host}/{uuid.uuid4().hex}-{name}")
        try:
            out = self.fs.open_output_stream(staging)
            with open(local, "rb") as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
            out.close()
            got = self.fs.get_file_info(staging).size
            if got != size:
                raise StoreError(f"staged upload of {name} has {got} bytes, not {size}",
                                 permanent=False)
            self.fs.copy_file(staging, key)  # CopyObject: atomic at the final key
        finally:
            try:
                self.fs.delete_file(staging)
            except OSError:
                pass  # never there, or the store is gone: a lifecycle rule expires it

    # -- readers -----------------------------------------------------------------------

    def parquet_files(self, table: str) -> list[str]:
        """``bucket/prefix/<table>/exchange=*/date=*/*.parquet`` keys, sorted."""
        import pyarrow.fs as pafs

        base = self.store.key(table)
        sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(sel):
            if info.type != pafs.FileType.File:
                continue
            parts = info.path[len(base) + 1:].split("/")
            if (len(parts) == 3 and parts[0].startswith("exchange=")
                    and parts[1].startswith("date=") and parts[2].endswith(".parquet")
                    and not parts[2].startswith(".")):
                out.append(info.path)
        return sorted(out)

    def file_metadata(self, key: str) -> dict[str, str]:
        """The ``market_recorder.*`` metadata of the Parquet file ``bucket/prefix/...``
        (prefix removed): the footer only, a ranged read or two."""
        import pyarrow.parquet as pq

        from sinks.parquet_format import META_PREFIX

        with self.fs.open_input_file(key) as f:
            raw = pq.read_schema(f).metadata or {}
        return {k.decode()[len(META_PREFIX):]: v.decode() for k, v in raw.items()
                if k.decode().startswith(META_PREFIX)}

    def delete(self, rel: str) -> None:
        """Delete ``<prefix>/<rel>`` (gone already is fine)."""
        try:
            self.fs.delete_file(self.store.key(rel))
        except FileNotFoundError:
            pass

    def fsspec(self) -> Any:
        """This store as an fsspec file system answering ``s3://`` paths (what DuckDB's
        ``register_filesystem`` takes; its httpfs extension is not needed)."""
        try:
            from fsspec.implementations.arrow import ArrowFSWrapper
        except ImportError:
            raise ImportError("reading s3:// needs fsspec (pip install 'fsspec>=2023.1')") \
                from None

        class S3OverArrow(ArrowFSWrapper):
            protocol = ("s3", "s3a")

        return S3OverArrow(self.fs)
