"""How many messages per second `recorder simulate --speed max` sends, per API version.

    python bench/sim_rate.py [--seconds 5] [--warmup 1] [--versions v1,v2] [--pairs BTC/USD,ETH/USD]
                             [--json] [--exchange kraken|kucoin]

Starts the simulator (``--speed max --seed 1``), connects one raw-socket client per version,
subscribes book depth 10 and trade on the pairs, and counts WebSocket frames for ``--seconds``
after ``--warmup``. The client parses only frame headers (no UTF-8, no JSON), so it drains faster
than the simulator writes and the figure is the simulator's. Prints one line per version, or with
``--json`` one JSON object: ``{"v1": {"msgs": N, "seconds": S, "msg_per_s": R,
"mb_per_s": M}, ...}``.

``--exchange kucoin`` measures ``recorder simulate --exchange kucoin --speed max`` instead: one
connection (a bullet-public token) subscribed to /market/level2 and /market/match on the pairs
(default BTC-USDT,ETH-USDT), reported under the key ``kucoin``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from wsframes import split_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder.simulator.testing import SimulatorProcess  # noqa: E402

READ_SIZE = 1 << 20


def _connect(url: str) -> socket.socket:
    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    key = base64.b64encode(os.urandom(16)).decode()
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    sock.sendall((f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"{url}: closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"{url}: handshake refused: {head.splitlines()[0]!r}")
    return sock  # bytes after the handshake are the greeting, not counted


def _send_text(sock: socket.socket, text: str) -> None:
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                              bytes([0x80 | 126]) + struct.pack(">H", n))
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(header + mask + masked)


def _subscribes(version: str, pairs: list[str]) -> list[str]:
    if version == "v1":
        wsnames = ["XBT" + p[3:] if p.startswith("BTC/") else p for p in pairs]
        return [json.dumps({"event": "subscribe", "pair": wsnames,
                            "subscription": {"name": "book", "depth": 10}}),
                json.dumps({"event": "subscribe", "pair": wsnames,
                            "subscription": {"name": "trade"}})]
    return [json.dumps({"method": "subscribe",
                        "params": {"channel": "book", "depth": 10, "symbol": pairs}}),
            json.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": pairs}})]


def _kucoin_url(rest: str) -> str:
    import urllib.request

    req = urllib.request.Request(rest + "/api/v1/bullet-public", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        data = json.loads(resp.read())["data"]
    return f"{data['instanceServers'][0]['endpoint']}?token={data['token']}&connectId=bench"


def _kucoin_subscribes(pairs: list[str]) -> list[str]:
    symbols = ",".join(pairs)
    return [json.dumps({"id": i, "type": "subscribe", "topic": f"{topic}:{symbols}",
                        "response": True})
            for i, topic in enumerate(("/market/level2", "/market/match"), 1)]


def drain(url: str, subscribes: list[str], warmup: float, seconds: float) -> dict:
    """Count frames (and payload bytes) received in ``seconds`` after ``warmup``."""
    sock = _connect(url)
    for text in subscribes:
        _send_text(sock, text)
    buf = bytearray()
    frames = nbytes = 0
    counting = False
    start = time.perf_counter() + warmup
    end = start + seconds
    recv_into = sock.recv_into
    chunk = bytearray(READ_SIZE)
    view = memoryview(chunk)
    while True:
        got = recv_into(view)
        if not got:
            raise ConnectionError(f"{url}: closed by the simulator")
        buf += view[:got]
        pos, n, _ = split_frames(buf)
        del buf[:pos]
        now = time.perf_counter()
        if counting:
            frames += n
            nbytes += pos
            if now >= end:
                break
        elif now >= start:
            counting, start = True, now
            end = start + seconds
    elapsed = time.perf_counter() - start
    sock.close()
    return {"msgs": frames, "seconds": round(elapsed, 3), "msg_per_s": round(frames / elapsed),
            "mb_per_s": round(nbytes / elapsed / 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="counting time per version")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds skipped first")
    ap.add_argument("--versions", default="v1,v2", help="v1, v2 or v1,v2")
    ap.add_argument("--pairs", default="BTC/USD,ETH/USD", help="synthetic pairs")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--exchange", default="kraken", choices=("kraken", "kucoin"),
                    help="which simulator (kucoin: level2 and match, one connection)")
    args = ap.parse_args(argv)
    if args.exchange == "kucoin":
        pairs = (["BTC-USDT", "ETH-USDT"] if args.pairs == ap.get_default("pairs")
                 else [p.strip() for p in args.pairs.split(",") if p.strip()])
        with SimulatorProcess(["--speed", "max", "--seed", "1", "--pairs", ",".join(pairs)],
                              capture_stderr=True, exchange="kucoin") as sim:
            results = {"kucoin": drain(_kucoin_url(sim.urls["rest"]), _kucoin_subscribes(pairs),
                                       args.warmup, args.seconds)}
        _report(results, args.json)
        return 0
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    if not versions or any(v not in ("v1", "v2") for v in versions):
        print("sim_rate: error: --versions takes v1, v2 or v1,v2", file=sys.stderr)
        return 2
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    results = {}
    with SimulatorProcess(["--speed", "max", "--seed", "1", "--pairs", ",".join(pairs)],
                          capture_stderr=True) as sim:
        for v in versions:
            results[v] = drain(sim.urls[f"ws_{v}"], _subscribes(v, pairs), args.warmup,
                               args.seconds)
    _report(results, args.json)
    return 0


def _report(results: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(results))
    else:
        for v, r in results.items():
            print(f"{v}: {r['msg_per_s']:>12,} msg/s  ({r['msgs']:,} frames in {r['seconds']} s, "
                  f"{r['mb_per_s']} MB/s)")


if __name__ == "__main__":
    raise SystemExit(main())
