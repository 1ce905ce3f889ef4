"""Receiving market data fast over a websocket-client connection.

websocket-client does the handshake, TLS, sending and closing. Its receive path, however,
asks the socket for exactly the bytes it needs next (header, extended length, payload:
two or three system calls per frame) and builds an object per frame; with small
market-data frames that costs about 6.5 µs a frame, most of the recorder's budget.

``FrameReader`` reads the same connection in 256 KiB chunks and splits the frames itself,
following RFC 6455 §5.2 for what a server may send a client: unmasked text and binary
frames, fragmented messages (continuation frames), and the control frames ping (answered
with a pong carrying the same payload), pong and close. It hands back every complete
message in the chunk at once, so the caller's per-frame overhead is a loop iteration.
"""

from __future__ import annotations

import struct
import time

import websocket

_CHUNK = 256 * 1024
# A message larger than this is refused (the connection is replaced) rather than buffered:
# it bounds what one peer can make us hold (64 MiB). Kraken's largest messages, depth-1000
# snapshots, are well under 1 MiB, so the margin is wide and only a broken peer reaches it.
MAX_MESSAGE = 64 << 20
_TEXT, _BINARY, _CONTINUATION = 0x1, 0x2, 0x0
_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class ConnectionClosed(Exception):
    """The server closed the connection (close frame or end of stream)."""


class ProtocolError(Exception):
    """The server sent something RFC 6455 does not allow."""


def connect(url: str, timeout: float = 10) -> websocket.WebSocket:
    """Open a connection (websocket-client) with UTF-8 validation off (frames are parsed
    as JSON, which rejects invalid text) and no per-call locking (one thread reads)."""
    return websocket.create_connection(url, timeout=timeout, enable_multithread=False,
                                       skip_utf8_validation=True)


class FrameReader:
    """Reads whole messages (bytes) from a websocket-client connection's socket."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self._ws = ws
        self._sock = ws.sock
        self._buf = b""
        self._fragments: list[bytes] | None = None
        self.bytes_received = 0
        # (code, reason) once the server sent a close frame; nothing after it is read.
        self.close_frame: tuple[int | None, str] | None = None

    def settimeout(self, seconds: float) -> None:
        self._sock.settimeout(seconds)

    def read(self) -> list[bytes]:
        """Block until at least one chunk arrives (or the socket timeout passes, then
        ``TimeoutError``); return the complete messages it finished, possibly none. After a
        close frame, ``close_frame`` is set and the messages before it are returned."""
        if self.close_frame is not None:
            raise ConnectionClosed(f"closed by the server: {self.close_frame}")
        chunk = self._sock.recv(_CHUNK)  # socket.timeout is TimeoutError
        if not chunk:
            raise ConnectionClosed("connection ended without a close frame")
        self.bytes_received += len(chunk)
        buf = self._buf + chunk if self._buf else chunk
        out: list[bytes] = []
        append = out.append
        # 16-bit lengths are under the size limit unless it was lowered below 64 KiB.
        short = 126 if MAX_MESSAGE >= 0xFFFF else 125
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b0 == 0x81 and b1 <= short:
                # The usual market-data frame: a whole, unmasked (b1 < 128) text message
                # under 64 KiB. What the general path below checks, the short way.
                if b1 < 126:
                    start = pos + 2
                    stop = start + b1
                else:
                    start = pos + 4
                    if start > end:
                        break
                    stop = start + (buf[pos + 2] << 8 | buf[pos + 3])
                if stop > end:
                    break
                append(buf[start:stop])
                pos = stop
                continue
            length = b1 & 0x7F
            header = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = _U16.unpack_from(buf, pos + 2)[0]
                header = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = _U64.unpack_from(buf, pos + 2)[0]
                header = 10
            if b1 & 0x80:
                raise ProtocolError("the server sent a masked frame")
            if length > MAX_MESSAGE:
                raise ProtocolError(f"a frame of {length} bytes is over the limit")
            stop = pos + header + length
            if stop > end:
                break
            payload = buf[pos + header:stop]
            pos = stop
            opcode = b0 & 0x0F
            if opcode == _TEXT or opcode == _BINARY:
                if b0 & 0x80:
                    append(payload)
                else:
                    self._fragments = [payload]
            elif opcode == _CONTINUATION:
                if self._fragments is None:
                    raise ProtocolError("continuation frame without a first fragment")
                self._fragments.append(payload)
                if sum(map(len, self._fragments)) > MAX_MESSAGE:
                    raise ProtocolError("a fragmented message is over the size limit")
                if b0 & 0x80:
                    out.append(b"".join(self._fragments))
                    self._fragments = None
            elif opcode == _PING:
                self._ws.pong(payload)
            elif opcode == _CLOSE:
                self._buf = b""
                code = _U16.unpack_from(payload)[0] if len(payload) >= 2 else None
                self.close_frame = (code, payload[2:].decode("utf-8", "replace"))
                return out
            elif opcode != _PONG:
                raise ProtocolError(f"unknown opcode {opcode}")
        self._buf = buf[pos:] if pos < end else b""
        return out

    def close(self, timeout: float = 1.0) -> None:
        """Send a close frame and drop the socket without waiting long for the reply."""
        ws = self._ws
        try:
            ws.send_close()
            deadline = time.monotonic() + timeout
            self._sock.settimeout(0.2)
            while time.monotonic() < deadline:
                if not self._sock.recv(_CHUNK):
                    break
        except (OSError, websocket.WebSocketException):
            pass
        finally:
            try:
                ws.shutdown()
            except Exception:  # noqa: BLE001 - the socket may already be gone
                pass
