"""--speed max: pre-encoded frames laid out in one buffer and written in large chunks.

Rendering and encoding a message in Python costs microseconds, far more than the 2 µs budget
of a 500k msg/s stream. So the frames are built once and the hot loop only slices the buffer,
writes, and waits for the transport to drain (flow control).

Synthetic markets loop: a cycle is N steps of the model followed by the exact inverse of its
book changes, so the book is back where it started and every checksum stays valid on the next
lap. v2 trade ids are rewritten in place each lap (same digit count), so they keep increasing.

Faults still apply: the pump waits while the connection stalls or the system is in
maintenance, and a corrupt_book fault swaps one book frame of the symbol for a garbled copy
(rendered in advance for synthetic cycles, one per chunk and symbol; found on demand in a
replay), so the client's checksum fails exactly as in real time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recorder.simulator.kraken.channels import event_frame, render_event
from recorder.simulator.kraken.market import BookEvent, TradeEvent, apply_undo
from recorder.simulator.wire import encode

if TYPE_CHECKING:
    from recorder.simulator.kraken.server import Simulator
    from recorder.simulator.kraken.session import Session

log = logging.getLogger("recorder.simulator")

CHUNK_FRAMES = 1000
# About 12,000 distinct book-10 updates per lap on two pairs (0.5 s to build): a checksum check
# over 10,000 updates never sees a repeat.
CYCLE_STEPS = 7000
_TRADE_ID = b'"trade_id":'


# (frame index, symbol) -> the garbled copy of that frame and its index, or None
Corruptor = Callable[[str, int], "tuple[int, bytes] | None"]


@dataclass(slots=True)
class Blob:
    data: bytearray
    chunks: list[tuple[int, int, int, Counter]]  # start, end, frames, frames per channel
    # (offset of the digits, id, symbol) of each v2 trade id, and trades per symbol per lap
    ids: list[tuple[int, int, str]] = field(default_factory=list)
    ids_per_lap: Counter = field(default_factory=Counter)
    offsets: list[int] = field(default_factory=list)  # frame i is data[offsets[i]:offsets[i+1]]
    # (frame index, symbol, garbled frame): book frames that can carry a corrupt_book fault
    spares: list[tuple[int, str, bytes]] = field(default_factory=list)

    @classmethod
    def build(cls, frames: list[tuple[bytes, str]], symbols: list[str] | None = None,
              spares: list[tuple[int, str, bytes]] | None = None) -> Blob:
        data = bytearray()
        chunks = []
        ids: list[tuple[int, int, str]] = []
        offsets: list[int] = []
        for i in range(0, len(frames), CHUNK_FRAMES):
            part = frames[i:i + CHUNK_FRAMES]
            start = len(data)
            for j, (frame, _) in enumerate(part):
                offsets.append(len(data))
                if symbols is not None and symbols[i + j] and _TRADE_ID in frame:
                    pos = 0
                    while (pos := frame.find(_TRADE_ID, pos)) >= 0:
                        pos += len(_TRADE_ID)
                        end = pos
                        while frame[end:end + 1].isdigit():
                            end += 1
                        ids.append((len(data) + pos, int(frame[pos:end]), symbols[i + j]))
                data += frame
            chunks.append((start, len(data), len(part), Counter(ch for _, ch in part)))
        offsets.append(len(data))
        blob = cls(data, chunks, ids, offsets=offsets, spares=spares or [])
        blob.ids_per_lap = Counter(sym for _, _, sym in ids)
        return blob

    def next_lap(self, lap: int) -> bool:
        """Rewrite the v2 trade ids for lap ``lap``; False if one would change width."""
        data = self.data
        for pos, base, sym in self.ids:
            new = str(base + lap * self.ids_per_lap[sym]).encode()
            if len(new) != len(str(base)):
                return False
            data[pos:pos + len(new)] = new
        return True

    def max_ids(self, lap: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, base, sym in self.ids:
            out[sym] = max(out.get(sym, 0), base + lap * self.ids_per_lap[sym])
        return out

    def spare(self, symbol: str, first: int) -> tuple[int, bytes] | None:
        for index, sym, frame in self.spares:
            if index >= first and sym == symbol:
                return index, frame
        return None

    def chunk_bytes(self, ci: int, swaps: dict[int, bytes]) -> bytes:
        """Chunk ``ci``, with the frames listed in ``swaps`` replaced (and removed from it)."""
        start, end, n, _ = self.chunks[ci]
        first = ci * CHUNK_FRAMES
        mine = sorted(i for i in swaps if first <= i < first + n)
        if not mine:
            return bytes(self.data[start:end])
        parts = []
        pos = start
        for i in mine:
            parts += (self.data[pos:self.offsets[i]], swaps.pop(i))
            pos = self.offsets[i + 1]
        parts.append(self.data[pos:end])
        return b"".join(parts)


async def pump(s: Session, blob: Blob, corruptor: Corruptor | None = None) -> None:
    """Write ``blob`` once with flow control, pausing for stalls and maintenance."""
    sim = s.sim
    swaps: dict[int, bytes] = {}
    searched: set[str] = set()
    for ci, (_, _, n, counts) in enumerate(blob.chunks):
        while (s.stalled or sim.paused) and not s.closed:
            await asyncio.sleep(0.05)
        if s.closed:
            return
        if s.corrupt and corruptor is not None:
            for symbol in list(s.corrupt - searched):
                # One search per armed fault and blob: it finds the first suitable frame
                # from here on; with none left in this blob (armed near a lap's end), the
                # fault stays armed for the next lap.
                hit = corruptor(symbol, ci * CHUNK_FRAMES)
                searched.add(symbol)
                if hit is not None:
                    s.corrupt.discard(symbol)
                    swaps[hit[0]] = hit[1]
                else:
                    log.info("conn %s: corrupt_book %s: no book update left in this lap",
                             s.conn_id, symbol)
        s.send_chunk(blob.chunk_bytes(ci, swaps), n, counts)
        await s.ws.drain()


async def _synthetic_pump(sim: Simulator, s: Session) -> None:
    """Loop the session's cycle; switch to a rebuilt one only at a lap boundary, where the
    book is back at the state the new cycle (and any new snapshot) starts from."""
    blob: Blob | None = None
    lap = 0
    while not s.closed:
        if s.next_blob is not None:
            blob, s.next_blob, lap = s.next_blob, None, 0
            s.blob = blob
        if blob is None or not blob.chunks:
            await asyncio.sleep(0.05)
            continue
        s.lap = lap
        t = time.monotonic()
        await pump(s, blob, blob.spare)
        lap += 1
        if lap == 1:
            log.info("conn %s: first lap, %d frames in %.3fs", s.conn_id,
                     sum(c[2] for c in blob.chunks), time.monotonic() - t)
        if not blob.next_lap(lap) and s.next_blob is None:
            _bump_trade_ids(sim, blob, lap - 1)
            s.next_blob = build_cycle(sim, s)


def build_cycle(sim: Simulator, s: Session) -> Blob:
    market = sim.market
    subs = list(s.subs.values())
    frames: list[tuple[bytes, str]] = []
    symbols: list[str] = []
    spares: list[tuple[int, str, bytes]] = []
    spare_at: dict[str, int] = {}  # symbol -> chunk of its latest spare
    forward: list[BookEvent] = []

    def render(ev: BookEvent | TradeEvent) -> None:
        sym = ev.pm.pair.symbol
        for sub, cid in subs:
            if sub.symbol == sym:
                frame = event_frame(sub, ev, cid)
                if frame is not None:
                    chunk = len(frames) // CHUNK_FRAMES
                    if sub.channel == "book" and spare_at.get(sym) != chunk:
                        # Rendered now, while the model's book is the one after this event.
                        bad = render_event(sub, ev, cid, corrupt=True)
                        if bad is not None:
                            spares.append((len(frames), sym, encode(bad)))
                            spare_at[sym] = chunk
                    frames.append((frame, sub.channel))
                    v2_trade = sub.version == 2 and isinstance(ev, TradeEvent)
                    symbols.append(sym if v2_trade else "")

    for _ in range(CYCLE_STEPS):
        for ev in market.step():
            render(ev)
            if isinstance(ev, BookEvent):
                forward.append(ev)
    for ev in reversed(forward):
        render(apply_undo(ev, market.clock()))
    return Blob.build(frames, symbols, spares)


def _bump_trade_ids(sim: Simulator, blob: Blob, lap: int) -> None:
    for sym, top in blob.max_ids(lap).items():
        pm = sim.market.pairs[sym]
        pm.trade_id = max(pm.trade_id, top)


def restart_synthetic_pump(sim: Simulator, s: Session) -> None:
    """Rebuild the session's cycle after its subscriptions changed (coalescing bursts)."""
    if s.build_pending:
        return
    s.build_pending = True

    def build() -> None:
        s.build_pending = False
        if s.closed:
            return
        if s.blob is not None:
            _bump_trade_ids(sim, s.blob, s.lap)
        t = time.monotonic()
        s.next_blob = build_cycle(sim, s)
        log.info("conn %s: built a %d-frame cycle in %.2fs", s.conn_id,
                 sum(c[2] for c in s.next_blob.chunks), time.monotonic() - t)
        if s.pump is None:
            s.pump = asyncio.create_task(_synthetic_pump(sim, s))

    asyncio.get_running_loop().call_later(0.05, build)
