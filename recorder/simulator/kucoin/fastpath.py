"""--speed max: pre-encoded frames laid out in one buffer and written in large chunks.

Rendering a frame in Python costs microseconds, far more than the budget of a stream of
several hundred thousand messages a second. So the synthetic market is stepped once, for all
symbols and topics, into a *cycle*: ``CYCLE_STEPS`` steps followed by the exact inverse of
their book changes (so each symbol's book ends where it started), with the 100 ms topics
(depth5/50, tickers) rendered every ``PERIOD_STEPS`` steps and the market snapshot every
``SNAPSHOT_STEPS``. Each connection lays out the frames of its topics once and then loops them.

KuCoin's sequences must keep increasing, so every lap rewrites, in place and vectorised with
numpy, each level2 sequence (``sequenceStart``, ``sequenceEnd``, change sequences, ticker and
snapshot ``sequence``) by ``lap x`` the symbol's sequences per lap, each trade sequence and
tradeId likewise, and every ms / ns time by the wall time since the cycle was built. The digit
count of each number stays the same, so frame lengths never change. Laps are numbered
globally: a connection starts at the lap the furthest connection has reached, and a REST
level2 snapshot answers the book at the end of that lap (the book at every lap boundary is
the book the cycle started from), so "snapshot, then the stream from sequence + 1" holds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from recorder.simulator.kucoin import render
from recorder.simulator.kucoin.market import BookEvent, TradeEvent, apply_undo
from recorder.simulator.wire import encode

if TYPE_CHECKING:
    from recorder.simulator.kucoin.server import Simulator
    from recorder.simulator.kucoin.session import Session

log = logging.getLogger("recorder.simulator")

CHUNK_FRAMES = 1000
CYCLE_STEPS = 6000
PERIOD_STEPS = 20  # 100 ms at the default --rate of 200 messages a second
SNAPSHOT_STEPS = 400  # 2 s

# Finds the frame to leave out for a skip_level2 fault: (symbol, first index) -> index or None
Finder = Callable[[str, int], "int | None"]

# A number to rewrite each lap: (kind, delimiter before it, its value). Kinds: "ms", "ns",
# ("seq", symbol), ("tseq", symbol).
Field = tuple[object, bytes, int]


@dataclass(slots=True)
class Item:
    topic: str
    channel: str
    symbol: str
    text: str
    fields: list[Field]


@dataclass(slots=True)
class Cycle:
    items: list[Item]
    built_ms: int
    seq0: dict[str, int]  # each symbol's level2 sequence before lap 0
    seq_per_lap: dict[str, int]
    tseq_per_lap: dict[str, int]


@dataclass(slots=True)
class Blob:
    data: bytearray
    chunks: list[tuple[int, int, int, Counter]]  # start, end, frames, frames per channel
    offsets: list[int] = field(default_factory=list)  # frame i is data[offsets[i]:offsets[i+1]]
    # numbers rewritten each lap, grouped by digit count: width -> (offsets, bases, kind ids)
    groups: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    kinds: list[object] = field(default_factory=list)
    level2: list[tuple[int, str]] = field(default_factory=list)  # (frame index, symbol)

    @classmethod
    def build(cls, frames: list[tuple[bytes, str]],
              fields: list[list[tuple[int, int, object]]] | None = None) -> Blob:
        """``fields[i]``: (offset in frame i, value, kind) of each number to rewrite."""
        data = bytearray()
        chunks = []
        offsets: list[int] = []
        by_width: dict[int, tuple[list[int], list[int], list[int]]] = {}
        kinds: list[object] = []
        kind_ids: dict[object, int] = {}
        for i in range(0, len(frames), CHUNK_FRAMES):
            part = frames[i:i + CHUNK_FRAMES]
            start = len(data)
            for j, (frame, _) in enumerate(part):
                base = len(data)
                offsets.append(base)
                if fields is not None:
                    for off, value, kind in fields[i + j]:
                        kid = kind_ids.get(kind)
                        if kid is None:
                            kid = kind_ids[kind] = len(kinds)
                            kinds.append(kind)
                        g = by_width.setdefault(len(str(value)), ([], [], []))
                        g[0].append(base + off)
                        g[1].append(value)
                        g[2].append(kid)
                data += frame
            chunks.append((start, len(data), len(part), Counter(ch for _, ch in part)))
        offsets.append(len(data))
        groups = {w: (np.array(o, dtype=np.int64), np.array(v, dtype=np.int64),
                      np.array(k, dtype=np.int64)) for w, (o, v, k) in by_width.items()}
        return cls(data, chunks, offsets, groups, kinds)

    def rewrite(self, deltas: dict[object, int]) -> bool:
        """Set every number to its base value plus its kind's delta; False if one would
        change its digit count (nothing is written then)."""
        if not self.groups:
            return True
        table = np.array([deltas.get(k, 0) for k in self.kinds], dtype=np.int64)
        view = np.frombuffer(self.data, dtype=np.uint8)
        pending = []
        for width, (offs, bases, kids) in self.groups.items():
            values = bases + table[kids]
            if values.min() < 10 ** (width - 1) or values.max() >= 10**width:
                return False
            pending.append((width, offs, values))
        for width, offs, values in pending:
            powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
            digits = (values[:, None] // powers) % 10 + 48
            view[offs[:, None] + np.arange(width)] = digits.astype(np.uint8)
        return True

    def chunk_bytes(self, ci: int, skips: set[int]) -> tuple[bytes, int]:
        """Chunk ``ci`` without the frames listed in ``skips`` (taken out of the set), and
        how many frames were left out."""
        start, end, n, _ = self.chunks[ci]
        first = ci * CHUNK_FRAMES
        mine = sorted(i for i in skips if first <= i < first + n)
        if not mine:
            return bytes(self.data[start:end]), 0
        parts = []
        pos = start
        for i in mine:
            skips.discard(i)
            parts.append(self.data[pos:self.offsets[i]])
            pos = self.offsets[i + 1]
        parts.append(self.data[pos:end])
        return b"".join(parts), len(mine)


def find_level2(level2: list[tuple[int, str]], symbol: str, first: int) -> int | None:
    """The first level2 frame of ``symbol`` at index ``first`` or later."""
    for i in range(bisect_left(level2, (first, "")), len(level2)):
        if level2[i][1] == symbol:
            return level2[i][0]
    return None


async def pump(s: Session, blob: Blob, finder: Finder | None = None) -> None:
    """Write ``blob`` once with flow control, pausing while the connection stalls."""
    skips: set[int] = set()
    for ci, (_, _, n, counts) in enumerate(blob.chunks):
        while s.stalled and not s.closed:
            await asyncio.sleep(0.05)
        if s.closed:
            return
        if s.skip and finder is not None:
            for symbol in list(s.skip):
                hit = finder(symbol, ci * CHUNK_FRAMES)
                if hit is not None and s.take_skip(symbol):
                    skips.add(hit)
        data, left_out = blob.chunk_bytes(ci, skips)
        if left_out:
            counts = Counter(counts)
            counts["level2"] -= left_out
        s.send_chunk(data, n - left_out, counts)
        await s.ws.drain()


# -- the synthetic cycle ----------------------------------------------------------------------


def build_cycle(sim: Simulator) -> Cycle:
    """Step the market CYCLE_STEPS times (plus the undo) and render every topic of every
    symbol; the account does not trade in this mode."""
    market = sim.market
    pms = list(market.pairs.values())
    seq0 = {pm.name: pm.seq for pm in pms}
    tseq0 = {pm.name: pm.trade_seq for pm in pms}
    items: list[Item] = []
    last_text: dict[str, str] = {}
    forward: list[BookEvent] = []
    hook, market.on_trade = market.on_trade, None
    t0 = time.time()
    try:
        for step in range(CYCLE_STEPS):
            for ev in market.step():
                _render_event(items, ev)
                if isinstance(ev, BookEvent):
                    forward.append(ev)
            if step % PERIOD_STEPS == PERIOD_STEPS - 1:
                _render_periodic(items, pms, last_text, step % SNAPSHOT_STEPS
                                 == SNAPSHOT_STEPS - 1)
        now_ms = int(market.clock() * 1000)
        for ev in reversed(forward):
            undo = apply_undo(ev, now_ms)
            if undo is not None:
                _render_event(items, undo)
        _render_periodic(items, pms, last_text, False)
    finally:
        market.on_trade = hook
    # Times are rewritten relative to the end of the build: a lap's times end at "now".
    cycle = Cycle(items, int(time.time() * 1000), seq0,
                  {pm.name: pm.seq - seq0[pm.name] for pm in pms},
                  {pm.name: pm.trade_seq - tseq0[pm.name] for pm in pms})
    log.info("built a --speed max cycle: %d frames over %d symbols in %.2fs", len(items),
             len(pms), time.time() - t0)
    return cycle


def _render_event(items: list[Item], ev: BookEvent | TradeEvent) -> None:
    pm = ev.pm
    name = pm.name
    if isinstance(ev, BookEvent):
        fields: list[Field] = [(("seq", name), b'"', c[2]) for c in ev.asks + ev.bids]
        fields += [(("seq", name), b":", ev.end), (("seq", name), b":", ev.start),
                   ("ms", b":", ev.time_ms)]
        items.append(Item(f"/market/level2:{name}", "level2", name, render.l2update(ev),
                          fields))
        return
    for t in ev.trades:
        items.append(Item(f"/market/match:{name}", "match", name, render.match(pm, t),
                          [(("tseq", name), b'"', t.seq), ("ns", b'"', t.time_ns),
                           (("tseq", name), b'"', t.seq)]))
    time_ns = ev.trades[-1].time_ns
    for kind in pm.candles:
        items.append(Item(f"/market/candles:{name}_{kind}", "candles", name,
                          render.candle(pm, kind, time_ns), [("ns", b":", time_ns)]))


def _render_periodic(items: list[Item], pms, last_text: dict[str, str], snap: bool) -> None:
    for pm in pms:
        name = pm.name
        now_ms = int(time.time() * 1000)
        for n in (5, 50):
            levels = render.depth_levels(pm, n)
            topic = f"/spotMarket/level2Depth{n}:{name}"
            if last_text.get(topic) != levels:
                last_text[topic] = levels
                items.append(Item(topic, f"depth{n}", name, render.depth(pm, n, levels, now_ms),
                                  [("ms", b":", now_ms)]))
        fields = render.ticker_fields(pm)
        topic = f"/market/ticker:{name}"
        if last_text.get(topic) != fields:
            last_text[topic] = fields
            nums = [(("seq", name), b'"', pm.seq), ("ms", b":", now_ms)]
            items.append(Item(topic, "ticker", name, render.ticker(pm, fields, now_ms), nums))
            items.append(Item("/market/ticker:all", "ticker", name,
                              render.ticker(pm, fields, now_ms, all_topic=True), list(nums)))
        if snap:
            for topic in (f"/market/snapshot:{name}", f"/market/snapshot:{pm.sym.market}"):
                items.append(Item(topic, "snapshot", name, render.snapshot(pm, topic, now_ms),
                                  [(("seq", name), b'"', pm.seq), ("ms", b":", now_ms)]))


def session_blob(cycle: Cycle, topics: set[str]) -> Blob:
    frames: list[tuple[bytes, str]] = []
    fields: list[list[tuple[int, int, object]]] = []
    level2: list[tuple[int, str]] = []
    for item in cycle.items:
        if item.topic not in topics:
            continue
        frame = encode(item.text)
        located = []
        pos = 0
        for kind, delim, value in item.fields:
            needle = delim + str(value).encode()
            at = frame.find(needle, pos)
            if at < 0:  # cannot happen for the frames rendered above
                raise RuntimeError(f"number {value} not found in a {item.channel} frame")
            located.append((at + 1, value, kind))
            pos = at + len(needle)
        if item.channel == "level2":
            level2.append((len(frames), item.symbol))
        frames.append((frame, item.channel))
        fields.append(located)
    blob = Blob.build(frames, fields)
    blob.level2 = level2
    return blob


def lap_deltas(cycle: Cycle, lap: int) -> dict[object, int]:
    ms = int(time.time() * 1000) - cycle.built_ms
    deltas: dict[object, int] = {"ms": ms, "ns": ms * 1_000_000}
    for name, n in cycle.seq_per_lap.items():
        deltas[("seq", name)] = lap * n
    for name, n in cycle.tseq_per_lap.items():
        deltas[("tseq", name)] = lap * n
    return deltas


async def synthetic_pump(sim: Simulator, s: Session) -> None:
    """Loop the session's blob, lap after lap; a changed subscription takes effect at the
    next lap boundary, where every book is back at the cycle's start."""
    blob: Blob | None = None
    lap = sim.fast_lap
    while not s.closed:
        if s.next_blob is not None:
            blob, s.next_blob = s.next_blob, None
        if blob is None or not blob.chunks:
            await asyncio.sleep(0.05)
            continue
        lap = max(lap, sim.fast_lap)
        if not blob.rewrite(lap_deltas(sim.cycle, lap)):
            log.error("conn %s: a sequence outgrew its digits after %d laps; dropping the "
                      "connection", s.conn_id, lap)
            s.abort()
            return
        s.lap = lap
        sim.fast_lap = max(sim.fast_lap, lap)
        await pump(s, blob, functools.partial(find_level2, blob.level2))
        lap += 1


def restart_pump(sim: Simulator, s: Session) -> None:
    """Lay out the session's frames again after its subscriptions changed (coalescing
    bursts of subscribe requests)."""
    if s.build_pending:
        return
    s.build_pending = True

    def build() -> None:
        s.build_pending = False
        if s.closed:
            return
        if sim.cycle is None:
            sim.cycle = build_cycle(sim)
        s.next_blob = session_blob(sim.cycle, s.topics)
        if s.pump is None:
            s.pump = asyncio.create_task(synthetic_pump(sim, s))

    asyncio.get_running_loop().call_later(0.05, build)
