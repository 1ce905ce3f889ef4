"""Baseline WebSocket clients for `make bench`, each run as its own process.

    python bench/clients.py MODE URL WARMUP SECONDS SAMPLE REQUEST_JSON...

MODE:
  raw    the transport's limit: a plain socket (websocket-client only for the handshake) read
         in 1 MiB chunks; frames are split by their headers and counted, payloads never looked
         at beyond their first bytes (to tell data from control frames)
  bare   the ceiling of a websocket-client loop: ``enable_multithread=False``,
         ``skip_utf8_validation=True``, ``recv_data()`` and discard
  naive  Kraken's sample command-line client: default websocket-client, print every frame

Every mode measures the same way as the recorder in bench/run.py: data frames only
(heartbeats, status, acknowledgements, welcome and pong excluded); the first WARMUP data frames
are the warm-up and are not counted; the rate is the data frames after the warm-up over the
time from the WARMUP-th data frame to the last. The client stops SECONDS after the warm-up
ended. One JSON line on stderr: frames (after the warm-up), seconds, payload bytes, CPU seconds
over the same span, warmup_frames. ``bare`` also writes up to 200,000 data frames to SAMPLE
(one per line; ``-`` for none) so the caller can compare storage sizes.

A KuCoin URL (``http://...``: the simulator's REST) is turned into a WebSocket URL with a fresh
bullet-public token, as KuCoin requires for every connection.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request

import websocket
from wsframes import split_frames  # bench/ is on the path of a bench script

# Data frames never start with these: Kraken v2 heartbeat/status/acks, v1 events, KuCoin
# welcome/ack/pong/error ({"id":...,"type":...} or {"type":...}).
CONTROL_PREFIXES = (b'{"channel":"heartbeat"', b'{"channel":"status"', b'{"method"',
                    b'{"event"', b'{"id"', b'{"type"')
READ_SIZE = 1 << 20


def kucoin_ws_url(rest: str) -> str:
    req = urllib.request.Request(rest.rstrip("/") + "/api/v1/bullet-public", data=b"",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        data = json.loads(resp.read())["data"]
    return f"{data['instanceServers'][0]['endpoint']}?token={data['token']}&connectId=bench"


def _raw(ws: websocket.WebSocket, warmup: int, seconds: float) -> dict:
    sock = ws.sock
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.settimeout(None)
    buf = bytearray()
    chunk = bytearray(READ_SIZE)
    view = memoryview(chunk)
    recv_into = sock.recv_into
    prefixes = CONTROL_PREFIXES
    seen = frames = nbytes = 0
    t_w = cpu_w = 0.0
    end = float("inf")
    last = time.perf_counter()
    while True:
        got = recv_into(view)
        if not got:
            raise ConnectionError("closed by the server")
        buf += view[:got]
        pos, n, b = split_frames(buf, prefixes)
        del buf[:pos]
        if not n:
            continue
        last = time.perf_counter()
        if seen >= warmup:
            frames += n
            nbytes += b
            if last >= end:
                break
        else:
            seen += n
            if seen >= warmup:  # the warm-up ends at the end of this read
                t_w, cpu_w = last, time.process_time()
                end = t_w + seconds
    return {"frames": frames, "seconds": last - t_w, "bytes": nbytes,
            "cpu_seconds": time.process_time() - cpu_w}


def _bare(ws: websocket.WebSocket, warmup: int, seconds: float,
          sample: list[bytes] | None) -> dict:
    prefixes = CONTROL_PREFIXES
    seen = frames = nbytes = 0
    t_w = cpu_w = 0.0
    end = float("inf")
    last = time.perf_counter()
    recv_data = ws.recv_data
    perf = time.perf_counter
    while True:
        _op, data = recv_data()
        if data.startswith(prefixes):
            continue
        if sample is not None and len(sample) < 200_000:
            sample.append(data)
        if seen < warmup:
            seen += 1
            if seen == warmup:
                t_w, cpu_w = perf(), time.process_time()
                end = t_w + seconds
            continue
        frames += 1
        nbytes += len(data)
        if not frames & 255:
            last = perf()
            if last >= end:
                break
    last = perf()
    return {"frames": frames, "seconds": last - t_w, "bytes": nbytes,
            "cpu_seconds": time.process_time() - cpu_w}


def _naive(ws: websocket.WebSocket, warmup: int, seconds: float) -> dict:
    prefixes = tuple(p.decode() for p in CONTROL_PREFIXES)
    out = sys.stdout
    seen = frames = nbytes = 0
    t_w = cpu_w = 0.0
    end = float("inf")
    last = time.perf_counter()
    while True:
        frame = ws.recv()
        print(frame, file=out)
        if frame.startswith(prefixes):
            continue
        if seen < warmup:
            seen += 1
            if seen == warmup:
                t_w, cpu_w = time.perf_counter(), time.process_time()
                end = t_w + seconds
            continue
        frames += 1
        nbytes += len(frame)
        last = time.perf_counter()
        if last >= end:
            break
    return {"frames": frames, "seconds": last - t_w, "bytes": nbytes,
            "cpu_seconds": time.process_time() - cpu_w}


def main() -> None:
    mode, url, warmup, seconds, sample_path = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                               float(sys.argv[4]), sys.argv[5])
    requests = sys.argv[6:]
    kucoin = url.startswith("http")
    if kucoin:
        url = kucoin_ws_url(url)
    if mode == "naive":
        ws = websocket.create_connection(url)
    else:
        ws = websocket.create_connection(url, enable_multithread=False,
                                         skip_utf8_validation=True)
    if kucoin:  # KuCoin: no request before the welcome
        welcome = ws.recv()
        if '"welcome"' not in str(welcome):
            raise ConnectionError(f"expected KuCoin's welcome, got {welcome!r}")
    for msg in requests:
        ws.send(msg)
    sample: list[bytes] | None = [] if mode == "bare" and sample_path != "-" else None
    if mode == "raw":
        result = _raw(ws, warmup, seconds)
    elif mode == "bare":
        result = _bare(ws, warmup, seconds, sample)
    else:
        result = _naive(ws, warmup, seconds)
    ws.sock.close()
    if sample:
        with open(sample_path, "wb") as f:
            f.write(b"\n".join(sample))
    result["warmup_frames"] = warmup
    print(json.dumps(result), file=sys.stderr)


if __name__ == "__main__":
    main()
