"""Baseline WebSocket clients for `make bench`, each run as its own process.

    python bench/clients.py bare  URL N SAMPLE SUBSCRIBE_JSON...   the ceiling: recv, discard
    python bench/clients.py naive URL N -      SUBSCRIBE_JSON...   Kraken's sample client: print

Both count N data frames (heartbeats, status and acks excluded) and print one JSON line on
stderr: frames, seconds between the first and the last data frame, payload bytes, CPU
seconds. ``bare`` also writes the first frames to SAMPLE (one per line) so the caller can
compare storage sizes.
"""

from __future__ import annotations

import json
import sys
import time

import websocket

_CONTROL_PREFIXES = (b'{"channel":"heartbeat"', b'{"channel":"status"', b'{"method"')


def main() -> None:
    mode, url, n, sample_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    subscribe = sys.argv[5:]
    if mode == "bare":
        ws = websocket.create_connection(url, enable_multithread=False,
                                         skip_utf8_validation=True)
    else:
        ws = websocket.create_connection(url)
    for msg in subscribe:
        ws.send(msg)
    count = nbytes = 0
    first = last = 0.0
    sample: list[bytes] = []
    cpu0 = time.process_time()
    if mode == "bare":
        while count < n:
            _op, data = ws.recv_data()
            if data.startswith(_CONTROL_PREFIXES):
                continue
            if not count:
                first = time.perf_counter()
            count += 1
            nbytes += len(data)
            if len(sample) < 200_000:
                sample.append(data)
    else:
        out = sys.stdout
        while count < n:
            frame = ws.recv()
            print(frame, file=out)
            if frame.startswith(('{"channel":"heartbeat"', '{"channel":"status"', '{"method"')):
                continue
            if not count:
                first = time.perf_counter()
            count += 1
            nbytes += len(frame)
    last = time.perf_counter()
    cpu = time.process_time() - cpu0
    ws.close()
    if sample and sample_path != "-":
        with open(sample_path, "wb") as f:
            f.write(b"\n".join(sample))
    print(json.dumps({"frames": count, "seconds": last - first, "bytes": nbytes,
                      "cpu_seconds": cpu}), file=sys.stderr)


if __name__ == "__main__":
    main()
