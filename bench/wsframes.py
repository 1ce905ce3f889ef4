"""Splitting server WebSocket frames out of a receive buffer, for the benchmark clients that
drain a socket themselves (bench/clients.py raw mode, bench/sim_rate.py)."""

from __future__ import annotations


def split_frames(buf: bytearray, skip: tuple[bytes, ...] = ()) -> tuple[int, int, int]:
    """Complete frames at the start of ``buf`` (unmasked, as a server sends them): how many
    bytes they take, how many there are and their payload bytes, leaving out frames whose
    payload starts with one of ``skip`` (control messages)."""
    pos = n = payload = 0
    size = len(buf)
    while size - pos >= 2:
        ln = buf[pos + 1] & 0x7F
        if ln < 126:
            hl = 2
        elif ln == 126:
            if size - pos < 4:
                break
            hl, ln = 4, (buf[pos + 2] << 8) | buf[pos + 3]
        else:
            if size - pos < 10:
                break
            hl, ln = 10, int.from_bytes(buf[pos + 2:pos + 10], "big")
        if size - pos < hl + ln:
            break
        if not skip or not buf.startswith(skip, pos + hl):
            n += 1
            payload += ln
        pos += hl + ln
    return pos, n, payload
