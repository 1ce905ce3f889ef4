"""The test run's sentinel credentials, and the scanner that proves they leak nowhere.

Every test that needs an API key pair uses ``SENTINEL_KEY`` / ``SENTINEL_SECRET`` (and
``WRONG_SECRET`` where a refused secret is the point): the simulator and the recorder
processes get them through environment variables. ``tests/sentinel_plugin.py`` then checks
the whole session: captured output of every test, every file under the pytest temp folder,
the nonce state folder, and the command line of every child process.

Nothing here ever prints a needle: findings name the place and the needle's *name*.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SENTINEL_KEY = "SENTINEL-KEY-market-recorder-0000"
# Valid base64 (so it signs like a real secret) without "+" or "/", so that it reads the same
# URL-encoded and JSON-escaped; its decoded bytes are ASCII, so they are searched for too.
_SECRET_BYTES = b"SENTINEL-secret-market-recorder-0123456789-abcdef"
_WRONG_BYTES = b"SENTINEL-wrong-secret-market-recorder-987654321-zz"
SENTINEL_SECRET = base64.b64encode(_SECRET_BYTES).decode()
WRONG_SECRET = base64.b64encode(_WRONG_BYTES).decode()
# KuCoin's third credential. With key versions 2 and 3 the header carries it HMAC-signed with
# the secret (SENTINEL_SECRET serves as the KuCoin secret too): that form is a needle as well.
SENTINEL_PASSPHRASE = "SENTINEL-passphrase-market-recorder-42"
WRONG_PASSPHRASE = "SENTINEL-wrong-passphrase-market-recorder-24"

# Extra needles for a nested self-test session (``test_private_sentinel.py``): it plants a
# random canary where the outer session would otherwise see its own sentinel.
EXTRA_NEEDLES_ENV = "MR_TEST_SENTINEL_EXTRA"

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Needle:
    name: str
    value: bytes


def default_needles() -> list[Needle]:
    needles = [
        # Padding stripped: a secret cut at its "=" is still the secret.
        Needle("sentinel secret", SENTINEL_SECRET.rstrip("=").encode()),
        Needle("sentinel secret (decoded)", _SECRET_BYTES),
        Needle("wrong secret", WRONG_SECRET.rstrip("=").encode()),
        Needle("wrong secret (decoded)", _WRONG_BYTES),
        Needle("sentinel key", SENTINEL_KEY.encode()),
        Needle("sentinel passphrase", SENTINEL_PASSPHRASE.encode()),
        Needle("wrong passphrase", WRONG_PASSPHRASE.encode()),
        Needle("sentinel passphrase (signed)", _signed(SENTINEL_PASSPHRASE).rstrip("=").encode()),
    ]
    for i, extra in enumerate(filter(None, os.environ.get(EXTRA_NEEDLES_ENV, "").split(","))):
        needles.append(Needle(f"canary {i + 1}", extra.encode()))
    return needles


def _signed(passphrase: str) -> str:
    """KC-API-PASSPHRASE of a version 2/3 key: base64(HMAC-SHA256(secret, passphrase))."""
    import hashlib
    import hmac

    mac = hmac.new(SENTINEL_SECRET.encode(), passphrase.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


class Scanner:
    """Finds needles in text, files and folders; says where, never what."""

    def __init__(self, needles: Iterable[Needle] | None = None) -> None:
        self.needles = list(default_needles() if needles is None else needles)
        self._longest = max(len(n.value) for n in self.needles)
        self.unreadable: list[str] = []  # files whose decoded contents could not be read

    # -- text ---------------------------------------------------------------------------

    def found(self, data: str | bytes) -> list[str]:
        """Names of the needles in ``data``."""
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        return [n.name for n in self.needles if n.value in raw]

    def redact(self, text: str) -> str:
        for n in self.needles:
            text = text.replace(n.value.decode("utf-8", "replace"), f"<{n.name} redacted>")
        return text

    # -- files --------------------------------------------------------------------------

    def scan_file(self, path: Path) -> list[str]:
        """Findings in one file: its bytes, and for compressed formats (Parquet, Arrow IPC
        with zstd buffers, gzip, zstd) their decoded contents too."""
        findings = [f"{path}: {name} (file bytes)" for name in self._scan_bytes(path)]
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError:
            return findings
        try:
            if head[:4] == b"PAR1":
                findings += [f"{path}: {w}" for w in self._scan_parquet(path)]
            elif head[:4] == b"\xff\xff\xff\xff" or head[:6] == b"ARROW1":
                findings += [f"{path}: {w}" for w in self._scan_arrow(path, head)]
            elif head[:2] == b"\x1f\x8b" or head[:4] == b"\x28\xb5\x2f\xfd":
                codec = "gzip" if head[:2] == b"\x1f\x8b" else "zstd"
                findings += [f"{path}: {name} ({codec} contents)"
                             for name in self._scan_stream(path, codec)]
        except Exception as e:  # noqa: BLE001 - a torn file: its raw bytes were scanned
            self.unreadable.append(f"{path}: {type(e).__name__}")
        return findings

    def scan_tree(self, root: Path, skip: Iterable[Path] = ()) -> tuple[list[str], int]:
        """Findings under ``root`` and how many files were scanned. ``skip``: files a test
        wrote the secret into on purpose (a secrets file)."""
        skipped = {Path(p).resolve() for p in skip}
        findings: list[str] = []
        count = 0
        for path in _files(Path(root)):
            if path.resolve() in skipped:
                continue
            count += 1
            findings += self.scan_file(path)
        return findings, count

    def _scan_bytes(self, path: Path) -> set[str]:
        names: set[str] = set()
        try:
            with open(path, "rb") as f:
                tail = b""
                while chunk := f.read(_CHUNK):
                    names.update(self.found(tail + chunk))
                    tail = chunk[-self._longest:]
        except OSError:
            pass
        return names

    def _scan_stream(self, path: Path, codec: str) -> set[str]:
        import pyarrow as pa

        names: set[str] = set()
        with pa.input_stream(str(path), compression=codec) as f:
            tail = b""
            while chunk := f.read(_CHUNK):
                names.update(self.found(tail + chunk))
                tail = chunk[-self._longest:]
        return names

    def _scan_parquet(self, path: Path) -> list[str]:
        import pyarrow.parquet as pq

        out = []
        pf = pq.ParquetFile(path)
        meta = pf.metadata.metadata or {}
        out += [f"{name} (Parquet metadata)" for name in
                self.found(b"\n".join(k + b"=" + v for k, v in meta.items()))]
        for i in range(pf.num_row_groups):
            out += [f"{w} (Parquet values)" for w in self._scan_columns(pf.read_row_group(i))]
        return sorted(set(out))

    def _scan_arrow(self, path: Path, head: bytes) -> list[str]:
        import pyarrow as pa

        out: list[str] = []
        with pa.OSFile(str(path)) as source:
            if head[:6] == b"ARROW1":
                reader = pa.ipc.open_file(source)
                batches: Iterator = (reader.get_batch(i) for i in range(reader.num_record_batches))
                schema = reader.schema
            else:
                reader = pa.ipc.open_stream(source)
                batches = _complete_batches(reader)
                schema = reader.schema
            meta = schema.metadata or {}
            out += [f"{name} (Arrow metadata)" for name in
                    self.found(b"\n".join(k + b"=" + v for k, v in meta.items()))]
            for batch in batches:
                out += [f"{w} (Arrow values)" for w in self._scan_columns(batch)]
        return sorted(set(out))

    def _scan_columns(self, table) -> list[str]:
        out = []
        for name, column in zip(table.schema.names, table.columns, strict=True):
            out += [f"{needle} in column {name}" for needle in self._scan_array(column)]
        return out

    def _scan_array(self, arr) -> set[str]:
        import pyarrow as pa
        import pyarrow.compute as pc

        t = arr.type
        if isinstance(arr, pa.ChunkedArray):
            names: set[str] = set()
            for chunk in arr.chunks:
                names |= self._scan_array(chunk)
            return names
        if pa.types.is_dictionary(t):
            return self._scan_array(arr.dictionary)
        if pa.types.is_struct(t):
            return set().union(*(self._scan_array(arr.field(i)) for i in range(t.num_fields)))
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return self._scan_array(arr.flatten())
        if pa.types.is_map(t):
            return self._scan_array(arr.keys) | self._scan_array(arr.items)
        if (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                or pa.types.is_large_binary(t)):
            return {n.name for n in self.needles
                    if pc.any(pc.match_substring(arr, n.value.decode())).as_py()}
        return set()


def _complete_batches(reader) -> Iterator:
    # A journal segment may end in a torn batch (a killed writer): stop there.
    import pyarrow as pa

    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError):
            return


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


# -- for tests ------------------------------------------------------------------------------

_INTENDED: set[Path] = set()


def intended_holders() -> set[Path]:
    """Files tests wrote a secret into on purpose; the session scan leaves them out."""
    return set(_INTENDED)


def write_secrets_file(path: Path, text: str, mode: int = 0o600) -> Path:
    """Write a secrets file for a test and exempt exactly that file from the session scan."""
    path = Path(path)
    path.write_text(text)
    path.chmod(mode)
    _INTENDED.add(path.resolve())
    return path


def assert_clean(texts: Iterable[str] = (), dirs: Iterable[Path] = (), where: str = "output"
                 ) -> None:
    """Fail, naming the place only, if a needle is in ``texts`` or in a file under ``dirs``."""
    scanner = Scanner()
    for i, text in enumerate(texts):
        names = scanner.found(text)
        if names:
            raise AssertionError(f"{', '.join(names)} found in {where} #{i + 1}")
    for d in dirs:
        findings, _ = scanner.scan_tree(Path(d), intended_holders())
        if findings:
            raise AssertionError("found in files: " + "; ".join(findings))
