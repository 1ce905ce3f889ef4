"""Readers for recorded Kraken captures, turned into per-API-version streams of frames.

Formats (see docs/simulator.md):
- cryptofeed ``KRAKEN.ws.*``: ``<epoch>: <json>`` lines (client lines ``<url> <- ...`` and
  connect lines ``<url> <-> ...`` are skipped); frames are kept byte for byte.
- python-kraken-sdk fixtures: one JSON object ``{"init": ..., "updates": [...]}``, v1 or v2,
  pretty-printed. Frames are re-serialised compactly. The v2 file's numbers were re-serialised
  as floats by its authors (trailing zeros lost), so book prices and quantities are re-rendered
  at the pair's precision, which makes its checksums verify again.
- ndjson: one raw frame per line (flashbook), kept byte for byte.
- Parquet: the recorder's own ``raw`` table (file or directory), ordered by ts_recv.

Where a format has no receive times, timing comes from the exchange timestamps in the frames.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from recorder.exchanges.kraken.pairs import canonical_symbol, find_pair
from recorder.simulator.kraken.market import DEPTHS
from recorder.simulator.wire import encode

_CRYPTOFEED_LINE = re.compile(r"^(\d+(?:\.\d+)?): (.*)$")
_CRYPTOFEED_CLIENT = re.compile(r"^\S+ <-?> ")


class CaptureError(ValueError):
    pass


NOT_A_CAPTURE = "expected cryptofeed KRAKEN.ws lines, ndjson frames, a python-kraken-sdk " \
    "fixture or the recorder's raw Parquet"


@dataclass(slots=True)
class Captured:
    t: float
    text: str
    key: tuple[str, str]  # (v1-style channel name such as "book-10", canonical symbol)
    frame: bytes = b""

    @property
    def channel(self) -> str:
        return self.key[0].split("-")[0]


@dataclass(slots=True)
class Stream:
    version: int
    frames: list[Captured] = field(default_factory=list)
    chan_ids: dict[tuple[str, str], int] = field(default_factory=dict)
    symbols: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Capture:
    path: Path
    format: str
    v1: Stream | None = None
    v2: Stream | None = None

    def stream(self, version: int) -> Stream | None:
        return self.v1 if version == 1 else self.v2

    def streams(self) -> list[Stream]:
        return [s for s in (self.v1, self.v2) if s is not None]


def load_capture(path: str | Path) -> Capture:
    path = Path(path)
    if not path.exists():
        raise CaptureError(f"replay file not found: {path}")
    try:
        fmt, raw = _read(path)
    except CaptureError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CaptureError(f"cannot read replay file {path}: {exc}") from None
    cap = _build(path, fmt, raw)
    if not cap.streams():
        raise CaptureError(f"replay file {path} holds no Kraken market data frames")
    return cap


# Each reader yields (time or None, frame text).
def _read(path: Path) -> tuple[str, list[tuple[float | None, str]]]:
    if path.is_dir() or path.suffix == ".parquet":
        return "parquet", _read_parquet(path)
    text = path.read_text(encoding="utf-8")
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first:
        raise CaptureError(f"replay file {path} is empty")
    if _CRYPTOFEED_CLIENT.match(first) or _CRYPTOFEED_LINE.match(first):
        return "cryptofeed", _read_cryptofeed(text)
    try:
        json.loads(first)
        one_per_line = True
    except ValueError:
        one_per_line = False
    if one_per_line and not first.strip().startswith('{"init"'):
        return "ndjson", [(None, ln) for ln in text.splitlines() if ln.strip()]
    try:
        doc = json.loads(text, parse_float=Decimal)
    except ValueError:
        raise CaptureError(f"replay file {path} is not a capture: {NOT_A_CAPTURE}") from None
    if isinstance(doc, dict) and "updates" in doc:
        return "python-kraken-sdk", _read_sdk(doc)
    raise CaptureError(f"replay file {path} is not a capture: {NOT_A_CAPTURE}")


def _read_cryptofeed(text: str) -> list[tuple[float | None, str]]:
    out: list[tuple[float | None, str]] = []
    for line in text.splitlines():
        m = _CRYPTOFEED_LINE.match(line)
        if m:
            out.append((float(m.group(1)), m.group(2)))
    return out


def _read_sdk(doc: dict) -> list[tuple[float | None, str]]:
    init = doc.get("init")
    items = (init if isinstance(init, list) else [init]) + list(doc["updates"])
    return [(None, _dump(obj)) for obj in items if obj is not None]


def _dump(obj: object, fmt: tuple[int, int] | None = None, field_name: str = "") -> str:
    """Compact JSON; inside v2 book levels, numbers at the pair's precision (``fmt``)."""
    if isinstance(obj, dict):
        if fmt is None and obj.get("channel") == "book":
            data = obj.get("data") or [{}]
            pair = find_pair(str(data[0].get("symbol", "")))
            fmt = (pair.price_decimals, pair.qty_decimals) if pair else None
        return "{" + ",".join(
            json.dumps(k) + ":" + _dump(v, fmt, k) for k, v in obj.items()
        ) + "}"
    if isinstance(obj, list):
        return "[" + ",".join(_dump(v, fmt, field_name) for v in obj) + "]"
    if isinstance(obj, Decimal):
        if fmt is not None and field_name in ("price", "qty"):
            places = fmt[0] if field_name == "price" else fmt[1]
            return format(obj, f".{places}f")
        return str(obj)
    return json.dumps(obj)


def _read_parquet(path: Path) -> list[tuple[float | None, str]]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    try:
        table = ds.dataset(str(path), format="parquet").to_table(columns=["ts_recv", "frame"])
    except (pa.ArrowException, OSError, ValueError):
        # pyarrow's messages run over several lines and name its internals
        raise CaptureError(
            f"replay {'directory' if path.is_dir() else 'file'} {path} holds no Parquet files "
            "of the recorder's raw table (columns ts_recv and frame)"
        ) from None
    table = table.take(pc.sort_indices(table, sort_keys=[("ts_recv", "ascending")]))
    ts = pc.cast(pc.cast(table.column("ts_recv"), "int64"), "int64").to_pylist()
    frames = table.column("frame").to_pylist()
    return [(t / 1e6 if t is not None else None, f) for t, f in zip(ts, frames, strict=True)]


# -- classification ---------------------------------------------------------------------------


def _exchange_time(obj: object) -> float | None:
    """Latest exchange timestamp inside a frame, for formats without receive times."""
    if isinstance(obj, list):
        best = None
        for part in obj[1:-2] if len(obj) >= 4 else []:
            levels = []
            if isinstance(part, dict):
                for v in part.values():
                    if isinstance(v, list):
                        levels.extend(v)
            elif isinstance(part, list):
                levels = part
            for lv in levels:
                if isinstance(lv, list) and len(lv) >= 3:
                    try:
                        t = float(lv[2])
                    except (TypeError, ValueError):
                        continue
                    best = t if best is None else max(best, t)
        return best
    if isinstance(obj, dict):
        stamp = obj.get("timestamp")
        data = obj.get("data")
        if stamp is None and isinstance(data, list) and data and isinstance(data[0], dict):
            stamp = data[0].get("timestamp")
        if isinstance(stamp, str):
            try:
                return datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()
            except ValueError:
                return None
    return None


def _build(path: Path, fmt: str, raw: list[tuple[float | None, str]]) -> Capture:
    cap = Capture(path, fmt)
    parsed = []
    v2_depth: dict[str, int] = {}
    for t, text in raw:
        try:
            obj = json.loads(text)
        except ValueError:
            continue
        parsed.append((t, text, obj))
        if isinstance(obj, dict) and obj.get("method") == "subscribe":
            res = obj.get("result") or {}
            if res.get("channel") == "book" and "depth" in res:
                v2_depth[res.get("symbol", "")] = res["depth"]
        if (isinstance(obj, dict) and obj.get("channel") == "book"
                and obj.get("type") == "snapshot"):
            d = (obj.get("data") or [{}])[0]
            n = max(len(d.get("bids", [])), len(d.get("asks", [])))
            depth = next((x for x in DEPTHS if x >= n), 1000)
            v2_depth.setdefault(d.get("symbol", ""), depth)
    times = [t if t is not None else _exchange_time(obj) for t, _, obj in parsed]
    known = next((t for t in times if t is not None), 0.0)
    last_t = known  # frames before the first timed one go out at its time
    for (_, text, obj), t in zip(parsed, times, strict=True):
        t = last_t if t is None else max(t, last_t)
        last_t = t
        if isinstance(obj, list):
            stream = cap.v1 = cap.v1 or Stream(1)
            if len(obj) >= 4 and isinstance(obj[-1], str) and isinstance(obj[-2], str):
                symbol = canonical_symbol(obj[-1])
                stream.frames.append(Captured(t, text, (obj[-2], symbol)))
                stream.symbols.add(symbol)
            continue
        if not isinstance(obj, dict):
            continue
        if "event" in obj or "connectionID" in obj:
            stream = cap.v1 = cap.v1 or Stream(1)
            if obj.get("event") == "subscriptionStatus" and "channelID" in obj:
                stream.chan_ids[(obj["channelName"], obj["pair"])] = obj["channelID"]
                stream.symbols.add(canonical_symbol(obj["pair"]))
            continue
        channel = obj.get("channel")
        if channel is None and "method" not in obj:
            continue
        stream = cap.v2 = cap.v2 or Stream(2)
        data = obj.get("data")
        if channel in ("book", "trade", "ticker", "ohlc") and isinstance(data, list) and data:
            symbol = data[0].get("symbol", "")
            if channel == "book":
                name = f"book-{v2_depth.get(symbol, 10)}"
            elif channel == "ohlc":
                name = f"ohlc-{data[0].get('interval', 1)}"
            else:
                name = channel
            stream.frames.append(Captured(t, text, (name, symbol)))
            stream.symbols.add(symbol)
    for stream in cap.streams():
        for f in stream.frames:
            f.frame = encode(f.text)
    return cap
