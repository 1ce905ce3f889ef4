"""Serving a capture: each connection gets its own timeline from its first subscription.

Only data frames of channels and pairs the client subscribed to go out, byte for byte as
recorded, at the recorded pace divided by --speed, or back to back with --speed max. When the
capture ends the connection stays open and idles with heartbeats.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from . import fastpath
from .channels import Sub

if TYPE_CHECKING:
    from .server import Simulator
    from .session import Session

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
        chosen = [(f.frame, f.channel) for f in frames if f.key in keys]
        await fastpath.pump(s, fastpath.Blob.build(chosen), repeat=False)
    else:
        loop = asyncio.get_running_loop()
        start = loop.time()
        base = frames[0].t if frames else 0.0
        keys = _keys(s)
        for f in frames:
            due = start + (f.t - base) / speed
            delay = due - loop.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
                keys = _keys(s)
            while s.stalled and not s.closed:
                await asyncio.sleep(0.05)
            if s.closed:
                return
            if f.key in keys:
                s.send(f.frame, f.channel)
    if not s.closed:
        s.replay_done = True
        sim.stats.replay_finished += 1
        log.info("conn %s: replay of %s finished", s.conn_id, sim.capture.path.name)
