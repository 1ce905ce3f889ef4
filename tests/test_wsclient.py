"""FrameReader against frames encoded by an independent implementation (websockets)."""

from __future__ import annotations

import socket

import pytest
from websockets.frames import Close, Frame, Opcode

from recorder.capture.wsclient import ConnectionClosed, FrameReader, ProtocolError


class _FakeWs:
    """What FrameReader uses of a websocket-client connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pongs: list[bytes] = []

    def pong(self, payload: bytes) -> None:
        self.pongs.append(payload)


def _frame(opcode: Opcode, data: bytes, fin: bool = True, mask: bool = False) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=mask, extensions=[])


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(2)
    yield a, b
    a.close()
    b.close()


def _read_all(reader: FrameReader, expected: int) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < expected and reader.close_frame is None:
        out += reader.read()
    return out


def test_lengths_7_16_64_bit_and_split_reads(pair):
    a, b = pair
    ws = _FakeWs(a)
    reader = FrameReader(ws)
    payloads = [b"x" * 5, b"y" * 300, b"z" * 70_000, b'{"channel":"heartbeat"}']
    wire = b"".join(_frame(Opcode.TEXT, p) for p in payloads)
    # Deliver the bytes in awkward pieces: inside headers, lengths and payloads.
    got: list[bytes] = []
    for i in range(0, len(wire), 7777):
        b.sendall(wire[i:i + 7777])
        got += reader.read()
    got += _read_all(reader, len(payloads) - len(got))
    assert got == payloads


def test_fragmented_message_and_control_frames_between(pair):
    a, b = pair
    ws = _FakeWs(a)
    reader = FrameReader(ws)
    wire = (_frame(Opcode.TEXT, b"hel", fin=False) + _frame(Opcode.PING, b"p1")
            + _frame(Opcode.CONT, b"lo ", fin=False) + _frame(Opcode.CONT, b"world")
            + _frame(Opcode.PONG, b"") + _frame(Opcode.BINARY, b"\x00\x01"))
    b.sendall(wire)
    assert _read_all(reader, 2) == [b"hello world", b"\x00\x01"]
    assert ws.pongs == [b"p1"]


def test_close_frame_ends_reading_after_earlier_messages(pair):
    a, b = pair
    reader = FrameReader(_FakeWs(a))
    b.sendall(_frame(Opcode.TEXT, b"last") + _frame(Opcode.CLOSE,
                                                    Close(1001, "going away").serialize())
              + _frame(Opcode.TEXT, b"never"))
    assert _read_all(reader, 2) == [b"last"]
    assert reader.close_frame == (1001, "going away")
    with pytest.raises(ConnectionClosed):
        reader.read()


def test_end_of_stream_and_timeout(pair):
    a, b = pair
    reader = FrameReader(_FakeWs(a))
    reader.settimeout(0.05)
    with pytest.raises(TimeoutError):
        reader.read()
    b.close()
    with pytest.raises(ConnectionClosed):
        reader.read()


def test_masked_server_frame_is_a_protocol_error(pair):
    a, b = pair
    reader = FrameReader(_FakeWs(a))
    b.sendall(_frame(Opcode.TEXT, b"masked", mask=True))
    with pytest.raises(ProtocolError, match="masked"):
        reader.read()


def test_oversized_frame_refused_not_buffered(pair, monkeypatch):
    from recorder.capture import wsclient

    monkeypatch.setattr(wsclient, "MAX_MESSAGE", 1000)
    a, b = pair
    reader = FrameReader(_FakeWs(a))
    b.sendall(_frame(Opcode.TEXT, b"x" * 2000)[:100])  # only the header need arrive
    with pytest.raises(ProtocolError, match="over the limit"):
        reader.read()
