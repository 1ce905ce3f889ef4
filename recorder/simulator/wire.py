"""WebSocket frames and timestamp text shared by both API versions.

Frames are serialised once with the websockets library's own frame encoder and then written
to the transport in batches: calling ``send`` per message costs far more than the message
itself (see the performance baseline, section 1b).
"""

from __future__ import annotations

import time

from websockets.frames import Frame, Opcode


def encode(text: str | bytes) -> bytes:
    """One unmasked server-to-client text frame."""
    data = text.encode() if isinstance(text, str) else text
    return Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])


_iso_cache: list = [None, ""]


def iso(t: float) -> str:
    """Kraken v2 time text: 2026-07-07T23:00:03.947173Z (microseconds, UTC)."""
    sec = int(t)
    us = int(round((t - sec) * 1_000_000))
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    if _iso_cache[0] != sec:
        _iso_cache[0] = sec
        _iso_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_iso_cache[1]}.{us:06d}Z"


def iso_ns(sec: int) -> str:
    """Whole-second time with nanosecond digits, as v2 ohlc interval_begin is sent."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".000000000Z"
