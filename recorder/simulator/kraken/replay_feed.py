"""Serving a capture: each connection gets its own timeline from its first subscription.

Only data frames of channels and pairs the client subscribed to go out, byte for byte as
recorded, at the recorded pace divided by --speed, or back to back with --speed max. When the
capture ends the connection stays open and idles with heartbeats.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from recorder.simulator.kraken.channels import Sub
from recorder.simulator.kraken.replay_faults import corrupt_frame, trade_of

from . import fastpath

if TYPE_CHECKING:
    from recorder.simulator.kraken.server import Simulator
    from recorder.simulator.kraken.session import Session

log = logging.getLogger("recorder.simulator")

# Subscribe requests for several channels often arrive as separate messages in a burst; a
# short grace lets them all count before a --speed max replay is laid out.
MAX_SPEED_GRACE = 0.1


def _keys(s: Session) -> set[tuple[str, str]]:
    return {(sub.v1_name, sub.symbol) for sub, _ in s.subs.values()}


def on_subscribe(sim: Simulator, s: Session, sub: Sub) -> None:
    stream = sim.capture.stream(s.version) if sim.capture else None
    if stream is None:
        return
    if not any(f.key == (sub.v1_name, sub.symbol) for f in stream.frames):
        log.warning("conn %s: capture has no %s %s frames", s.conn_id, sub.v1_name, sub.symbol)
    if s.replay_task is None:
        s.replay_task = asyncio.create_task(_run(sim, s))


def on_unsubscribe(sim: Simulator, s: Session, sub: Sub) -> None:
    pass  # _run checks the live subscription set before each frame


async def _run(sim: Simulator, s: Session) -> None:
    stream = sim.capture.stream(s.version)
    frames = stream.frames
    speed = sim.cfg.speed
    if sim.cfg.max_speed:
        await asyncio.sleep(MAX_SPEED_GRACE)
        keys = _keys(s)
        chosen = [f for f in frames if f.key in keys]
        blob = fastpath.Blob.build([(f.frame, f.channel) for f in chosen])
        await fastpath.pump(s, blob, lambda sym, first: corrupt_frame(chosen, first, sym))
    else:
        loop = asyncio.get_running_loop()
        start = loop.time()
        base = frames[0].t if frames else 0.0
        keys = _keys(s)
        swap: tuple[int, bytes] | None = None
        for i, f in enumerate(frames):
            due = start + (f.t - base) / speed
            delay = due - loop.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
                keys = _keys(s)
            if sim.paused:  # the capture's clock stops for the maintenance
                t0 = loop.time()
                while sim.paused and not s.closed:
                    await asyncio.sleep(0.05)
                start += loop.time() - t0
            while s.stalled and not s.closed:
                await asyncio.sleep(0.05)
            if s.closed:
                return
            if f.key not in keys:
                continue
            if s.corrupt and swap is None and f.key[1] in s.corrupt and f.channel == "book":
                where = [j for j, g in enumerate(frames) if g.key == f.key]
                hit = corrupt_frame([frames[j] for j in where], where.index(i), f.key[1])
                s.corrupt.discard(f.key[1])  # none now means none later: search once
                if hit is not None:
                    swap = (where[hit[0]], hit[1])
                else:
                    log.warning("conn %s: corrupt_book %s: no book update left to corrupt",
                                s.conn_id, f.key[1])
            if swap is not None and swap[0] == i:
                s.send(swap[1], f.channel)
                swap = None
            else:
                s.send(f.frame, f.channel)
    if not s.closed:
        s.replay_done = True
        sim.stats.replay_finished += 1
        log.info("conn %s: replay of %s finished", s.conn_id, sim.capture.path.name)


async def drive_fills(sim: Simulator) -> None:
    """The capture's trades fill the demo account, from the first private subscription on, at
    the recorded pace divided by --speed (back to back with --speed max), once through."""
    streams = [st for st in (sim.capture.v2, sim.capture.v1) if st is not None]
    trades = next(([f for f in st.frames if f.channel == "trade"] for st in streams
                   if any(f.channel == "trade" for f in st.frames)), [])
    if not trades:
        log.info("replay: the capture has no trades, the demo account stays still")
        return
    loop = asyncio.get_running_loop()
    start = loop.time()
    base = trades[0].t
    for n, f in enumerate(trades):
        if sim.cfg.max_speed:
            await asyncio.sleep(0)
        else:
            delay = start + (f.t - base) / sim.cfg.speed - loop.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
        if sim.paused:
            t0 = loop.time()
            while sim.paused:
                await asyncio.sleep(0.05)
            start += loop.time() - t0
        got = trade_of(f, n + 1)
        if got is not None:
            update = sim.account.on_trade(*got)
            if update is not None:
                sim.publish_private(update)
    log.info("replay: the capture's %d trades have been offered to the demo account",
             len(trades))
