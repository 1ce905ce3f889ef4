"""Replaying recorded KuCoin traffic: WebSocket data frames byte for byte, REST answers too.

Formats (detected from the content):
- ndjson: one raw server frame per line, as ../shared/data/kucoin/ws-public.ndjson; also
  cryptofeed's ``KUCOIN.ws.*`` lines ``<epoch>: <json>``. Control frames (welcome, ack, pong,
  error) are skipped. A tardis-made ``/market/level2Snapshot:SYM`` wrapper (``"generated":
  true``) is not sent on the WebSocket: its ``data`` answers the REST level2 snapshot of SYM.
- Parquet: the recorder's ``raw`` table (a file or a directory), rows with ``exchange =
  'kucoin'``, ordered by ``ts_recv``. Rows whose ``endpoint`` starts with ``GET `` or ``POST ``
  are REST answers (``frame`` is the body) and are served from the matching REST endpoint;
  the others are WebSocket frames. The same frame recorded on two connections (a rotation's
  overlap) is replayed once.

Each connection gets its own timeline from its first subscription (0.1 s after it, so that a
burst of subscribe requests all count): the frames of the topics it subscribed go out at the
recorded pace divided by --speed (back to back with --speed max). Formats without receive
times are paced by the exchange times inside the frames, with any gap longer than a second
shortened to one second (the shared captures span years).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from recorder.simulator.wire import encode

if TYPE_CHECKING:
    from recorder.simulator.kucoin.server import Simulator
    from recorder.simulator.kucoin.session import Session

log = logging.getLogger("recorder.simulator")

_CRYPTOFEED_LINE = re.compile(r"^(\d+(?:\.\d+)?): (.*)$")
MAX_GAP = 1.0  # seconds, for captures paced by exchange times
START_GRACE = 0.1
LEVEL2_PATHS = ("/api/v1/market/orderbook/level2_20", "/api/v1/market/orderbook/level2_100",
                "/api/v3/market/orderbook/level2")
_DEDUP_WINDOW = 20_000


class CaptureError(ValueError):
    pass


@dataclass(slots=True)
class Captured:
    t: float
    topic: str
    frame: bytes  # the encoded WebSocket frame of the recorded text

    @property
    def channel(self) -> str:
        return self.topic.split(":")[0].rsplit("/", 1)[-1]

    @property
    def symbol(self) -> str:
        return self.topic.partition(":")[2]


@dataclass(slots=True)
class Capture:
    path: Path
    format: str
    frames: list[Captured] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)
    # (path, symbol) -> [(capture time, body)] in time order
    rest: dict[tuple[str, str], list[tuple[float, bytes]]] = field(default_factory=dict)

    def rest_answer(self, path: str, symbol: str, position: float | None) -> bytes | None:
        """The recorded answer for ``path`` and ``symbol`` at a replay position: the first one
        recorded at or after it (its book is ahead of what was sent, so the stream reaches
        it), else the last one. Level2 snapshot paths stand in for each other."""
        answers = self.rest.get((path, symbol))
        if answers is None and path in LEVEL2_PATHS:
            for other in LEVEL2_PATHS[::-1]:
                answers = self.rest.get((other, symbol))
                if answers is not None:
                    break
        if not answers:
            return None
        if position is not None:
            for t, body in answers:
                if t >= position:
                    return body
            return answers[-1][1]
        return answers[0][1]


def load_capture(path: str | Path) -> Capture:
    path = Path(path)
    if not path.exists():
        raise CaptureError(f"replay file not found: {path}")
    try:
        if path.is_dir() or path.suffix == ".parquet":
            cap = _from_parquet(path)
        else:
            cap = _from_lines(path)
    except CaptureError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CaptureError(f"cannot read replay file {path}: {exc}") from None
    if not cap.frames and not cap.rest:
        raise CaptureError(f"replay file {path} holds no KuCoin market data frames")
    return cap


def _from_lines(path: Path) -> Capture:
    text = path.read_text(encoding="utf-8")
    lines = [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]
    if not lines:
        raise CaptureError(f"replay file {path} is empty")
    rows: list[tuple[float | None, str]] = []
    fmt = "ndjson"
    for ln in lines:
        m = _CRYPTOFEED_LINE.match(ln)
        if m:
            fmt = "cryptofeed"
            rows.append((float(m.group(1)), m.group(2)))
        elif ln.lstrip().startswith("{"):
            rows.append((None, ln))
    if not rows:
        raise CaptureError(f"replay file {path} is not a capture: expected ndjson frames, "
                           "cryptofeed KUCOIN.ws lines or the recorder's raw Parquet")
    cap = Capture(path, fmt)
    last: float | None = None
    shift = 0.0  # time cut out of long gaps so far
    for t, line in rows:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if t is None:
            et = _exchange_time(obj)
            t = last if et is None else et - shift
            if t is None:
                t = 0.0
            if last is not None and t - last > MAX_GAP:
                shift += t - last - MAX_GAP
                t = last + MAX_GAP
        last = t if last is None else max(last, t)
        _add(cap, last, line, obj)
    return cap


def _from_parquet(path: Path) -> Capture:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(str(path), format="parquet")
        names = set(dataset.schema.names)
        cols = ["ts_recv", "frame"] + [c for c in ("exchange", "endpoint") if c in names]
        table = dataset.to_table(columns=cols)
    except (pa.ArrowException, OSError, ValueError):
        raise CaptureError(
            f"replay {'directory' if path.is_dir() else 'file'} {path} holds no Parquet files "
            "of the recorder's raw table (columns ts_recv and frame)"
        ) from None
    if "exchange" in names:
        table = table.filter(pc.equal(table.column("exchange"), "kucoin"))
    table = table.take(pc.sort_indices(table, sort_keys=[("ts_recv", "ascending")]))
    ts = pc.cast(table.column("ts_recv"), pa.int64()).to_pylist()
    frames = table.column("frame").to_pylist()
    endpoints = (table.column("endpoint").to_pylist() if "endpoint" in names
                 else [None] * len(frames))
    cap = Capture(path, "parquet")
    seen: set[str] = set()
    order: deque[str] = deque()
    for us, text, endpoint in zip(ts, frames, endpoints, strict=True):
        if text is None or us is None:
            continue
        t = us / 1e6
        if endpoint and endpoint.split(" ", 1)[0] in ("GET", "POST"):
            target = endpoint.split(" ", 1)[1].strip()
            parts = urlsplit(target)
            query = dict(parse_qsl(parts.query))
            key = (parts.path, query.get("symbol", "").upper())
            cap.rest.setdefault(key, []).append((t, text.encode()))
            continue
        if text in seen:
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            continue
        if isinstance(obj, dict) and _add(cap, t, text, obj):
            seen.add(text)
            order.append(text)
            if len(order) > _DEDUP_WINDOW:
                seen.discard(order.popleft())
    return cap


def _add(cap: Capture, t: float, text: str, obj: dict) -> bool:
    topic = obj.get("topic")
    if obj.get("type") != "message" or not isinstance(topic, str):
        return False
    prefix, _, symbol = topic.partition(":")
    if prefix == "/market/level2Snapshot" and isinstance(obj.get("data"), dict):
        body = ('{"code":"200000","data":'
                + json.dumps(obj["data"], separators=(",", ":")) + "}").encode()
        for path in LEVEL2_PATHS:
            cap.rest.setdefault((path, symbol.upper()), []).append((t, body))
        return False
    cap.frames.append(Captured(t, topic, encode(text)))
    cap.topics.add(topic)
    return True


def _exchange_time(obj: dict) -> float | None:
    data = obj.get("data")
    if not isinstance(data, dict):
        return None
    for key in ("time", "timestamp", "datetime", "ts"):
        value = data.get(key)
        if value is None and isinstance(data.get("data"), dict):
            value = data["data"].get(key)
        if value is None:
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        return v / 1e9 if v > 1e17 else v / 1e3 if v > 1e11 else v
    return None


# -- serving ----------------------------------------------------------------------------------


def on_subscribe(sim: Simulator, s: Session, topics: list[str]) -> None:
    cap = sim.capture
    for t in topics:
        if t not in cap.topics:
            log.warning("conn %s: the capture has no %s frames", s.conn_id, t)
    if s.replay_task is None:
        s.replay_task = asyncio.create_task(_run(sim, s))


async def _run(sim: Simulator, s: Session) -> None:
    from recorder.simulator.kucoin import fastpath

    frames = sim.capture.frames
    # Subscribe requests for several topics often arrive as separate messages in a burst; a
    # short grace lets them all count before the timeline starts.
    await asyncio.sleep(START_GRACE)
    if sim.cfg.max_speed:
        chosen = [f for f in frames if f.topic in s.topics]
        blob = fastpath.Blob.build([(f.frame, f.channel) for f in chosen])
        level2 = [(i, f.symbol) for i, f in enumerate(chosen) if f.channel == "level2"]
        if chosen:
            s.replay_pos = chosen[0].t  # REST answers as at the start: all frames follow
        await fastpath.pump(s, blob, functools.partial(fastpath.find_level2, level2))
    else:
        loop = asyncio.get_running_loop()
        start = loop.time()
        base = frames[0].t if frames else 0.0
        speed = sim.cfg.speed
        for f in frames:
            delay = start + (f.t - base) / speed - loop.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            while s.stalled and not s.closed:
                await asyncio.sleep(0.05)
            if s.closed:
                return
            s.replay_pos = f.t
            if f.topic not in s.topics:
                continue
            if f.channel == "level2" and s.skip and s.take_skip(f.symbol):
                continue
            s.send(f.frame, f.channel)
    if not s.closed:
        s.replay_done = True
        sim.stats.replay_finished += 1
        log.info("conn %s: replay of %s finished", s.conn_id, sim.capture.path.name)
