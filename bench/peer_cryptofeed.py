"""The cryptofeed peer of `make bench`: cryptofeed from PyPI in a virtual environment of its own.

    python bench/peer_cryptofeed.py setup                 create or reuse the environment
    <venv>/bin/python bench/peer_cryptofeed.py run --ws WS_V1_URL --rest REST_URL
        --pairs BTC/USD,... --mode shipped|trimmed --warmup N --seconds S [--deadline S]

cryptofeed 2.4.1 is the newest release that installs on Python 3.11 (2.5 needs 3.12); its
Kraken feed speaks WebSocket API v1 only, so it is measured on the simulator's v1 stream (book
depth 10 with ``checksum_validation=True`` and trades, callbacks that only count, nothing
stored). To reach the local simulator it needs two small shims, nothing else changed:

- ``WSAsyncConn`` refuses any address but ``wss://``: a subclass passes the check and connects
  to the ``ws://`` address (patched into ``cryptofeed.feed``, where feeds create connections);
- its symbol map comes from REST ``AssetPairs``: the feed's ``rest_endpoints`` point at the
  simulator's REST, so cryptofeed fills the map with its own parser from the simulator's list.

Modes:
- ``shipped``: cryptofeed's Kraken book as released. The order book trims itself to the depth
  on every insert (``truncate=True``), so a message that inserts a level and then deletes
  another loses a level that belongs in the top 10: its own checksum fails, it raises
  ``BadChecksum`` and the connection handler reconnects (1 s, then 2 s, 4 s ...).
- ``trimmed``: the same ``_book`` with one change: the book is built untruncated and trimmed
  once per message, before the checksum (as the recorder does). Still as shipped: the checksum
  is checked only when the first object of the frame carries ``"c"`` (frames changing both
  sides carry it in the second: those updates are never verified; counted here).

The rate rule is the bench's: data frames (v1 arrays) after the first ``--warmup``, over the
time from the warmup-th to the last. A run that never gets past the warm-up (``shipped``) is
reported over all its frames (``steady`` false). One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

VERSION = "2.4.1"
ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bench" / "out" / f"cryptofeed-{VERSION}-venv"


def venv_python() -> Path:
    return VENV / "bin" / "python"


def setup(python: str = sys.executable) -> dict:
    """Create the environment (once; a stamp file marks a finished install)."""
    stamp = VENV / ".installed"
    t0 = time.perf_counter()
    if not stamp.exists():
        subprocess.run([python, "-m", "venv", "--clear", str(VENV)], check=True)
        done = subprocess.run([str(venv_python()), "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", f"cryptofeed=={VERSION}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"pip install cryptofeed=={VERSION} failed:\n{done.stderr}")
        stamp.write_text(VERSION + "\n")
        created = True
    else:
        created = False
    return {"venv": str(VENV), "created": created, "seconds": time.perf_counter() - t0}


def run(args: argparse.Namespace) -> dict:  # noqa: C901 - one self-contained peer
    import asyncio
    from decimal import Decimal

    import cryptofeed.feed
    from cryptofeed import FeedHandler
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint, WSAsyncConn
    from cryptofeed.defines import ASK, BID, L2_BOOK, TRADES
    from cryptofeed.exceptions import BadChecksum
    from cryptofeed.exchanges import Kraken
    from cryptofeed.types import OrderBook

    stats = {"frames": 0, "failures": 0, "opens": 0, "book_callbacks": 0,
             "trade_callbacks": 0, "unchecked_updates": 0, "checked_updates": 0}
    clock = {"first": 0.0, "warm": 0.0, "last": 0.0, "cpu_warm": 0.0, "end": float("inf")}
    warmup, seconds = args.warmup, args.seconds
    started = time.perf_counter()
    deadline = started + args.deadline

    def finish() -> None:
        steady = stats["frames"] > warmup
        cpu = time.process_time()
        if steady:
            frames = stats["frames"] - warmup
            span = clock["last"] - clock["warm"]
            cpu -= clock["cpu_warm"]
        else:
            frames = stats["frames"]
            span = (clock["last"] - clock["first"]) if frames > 1 else 0.0
        out = {**stats, "mode": args.mode, "steady": steady, "counted_frames": frames,
               "seconds": span, "msgs_per_s": frames / span if span > 0 else 0.0,
               "cpu_seconds": cpu, "run_seconds": time.perf_counter() - started,
               "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        print(json.dumps(out), flush=True)
        os._exit(0)

    class LocalWSConn(WSAsyncConn):
        """Accepts ws:// (cryptofeed only allows wss://)."""

        def __init__(self, address: str, *a, **kw) -> None:
            super().__init__("wss://" + address.removeprefix("ws://"), *a, **kw)
            self.address = address

        async def _open(self):
            stats["opens"] += 1
            return await super()._open()

    cryptofeed.feed.WSAsyncConn = LocalWSConn

    class LocalKraken(Kraken):
        websocket_endpoints = [WebsocketEndpoint(args.ws, limit=20)]
        rest_endpoints = [RestEndpoint(args.rest, routes=Routes("/0/public/AssetPairs"))]

        async def message_handler(self, msg: str, conn, timestamp: float):
            if msg[0] == "[":
                now = time.perf_counter()
                n = stats["frames"] = stats["frames"] + 1
                if n == 1:
                    clock["first"] = now
                if n == warmup:
                    clock["warm"], clock["cpu_warm"] = now, time.process_time()
                    clock["end"] = now + seconds
                clock["last"] = now
                if now >= clock["end"] or now >= deadline:
                    finish()
            elif time.perf_counter() >= deadline:
                finish()
            try:
                await super().message_handler(msg, conn, timestamp)
            except BadChecksum:
                stats["failures"] += 1
                raise

    class TrimmedKraken(LocalKraken):
        """cryptofeed's Kraken._book with the book trimmed once per message."""

        async def _book(self, msg: dict, pair: str, timestamp: float):
            delta = {BID: [], ASK: []}
            msg = msg[1:-2]
            if "as" in msg[0]:
                bids = {Decimal(u[0]): Decimal(u[1]) for u in msg[0]["bs"]}
                asks = {Decimal(u[0]): Decimal(u[1]) for u in msg[0]["as"]}
                # truncate=False: inserts no longer trim; the message's end does (below).
                self._l2_book[pair] = OrderBook(self.id, pair, max_depth=self.max_depth,
                                                bids=bids, asks=asks, checksum_format="KRAKEN",
                                                truncate=False)
                await self.book_callback(L2_BOOK, self._l2_book[pair], timestamp, raw=msg)
                return
            book = self._l2_book[pair].book
            for m in msg:
                for s, updates in m.items():
                    side = BID if s == "b" else ASK if s == "a" else None
                    if side:
                        for update in updates:
                            price, size, *_ = update
                            price = Decimal(price)
                            size = Decimal(size)
                            if size == 0:
                                if price in book[side]:
                                    del book[side][price]
                                    delta[side].append((price, 0))
                            else:
                                delta[side].append((price, size))
                                book[side][price] = size
            book.bids.truncate()
            book.asks.truncate()
            if "c" in msg[0]:
                stats["checked_updates"] += 1
            else:
                stats["unchecked_updates"] += 1
            if (self.checksum_validation and "c" in msg[0]
                    and book.checksum() != int(msg[0]["c"])):
                raise BadChecksum("Checksum validation on orderbook failed")
            await self.book_callback(L2_BOOK, self._l2_book[pair], timestamp, delta=delta,
                                     raw=msg, checksum=int(msg[0]["c"]) if "c" in msg[0]
                                     else None)

    async def on_trade(trade, receipt_timestamp):
        stats["trade_callbacks"] += 1

    async def on_book(book, receipt_timestamp):
        stats["book_callbacks"] += 1

    feed_cls = TrimmedKraken if args.mode == "trimmed" else LocalKraken
    pairs = [p.strip().replace("/", "-") for p in args.pairs.split(",") if p.strip()]
    fh = FeedHandler(config={"log": {"disabled": True}, "uvloop": True})
    # FeedHandler installed uvloop's policy; its run() asks for the current loop.
    asyncio.set_event_loop(asyncio.new_event_loop())
    fh.add_feed(feed_cls(symbols=pairs, channels=[TRADES, L2_BOOK], max_depth=10,
                         checksum_validation=True,
                         callbacks={TRADES: on_trade, L2_BOOK: on_book}))

    async def watchdog() -> None:  # a feed stuck in its reconnect back-off still ends
        while True:
            await asyncio.sleep(0.25)
            if time.perf_counter() >= deadline:
                finish()

    loop = asyncio.get_event_loop()
    loop.create_task(watchdog())
    fh.run(install_signal_handlers=False)
    finish()
    return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup")
    r = sub.add_parser("run")
    r.add_argument("--ws", required=True)
    r.add_argument("--rest", required=True)
    r.add_argument("--pairs", required=True)
    r.add_argument("--mode", choices=("shipped", "trimmed"), required=True)
    r.add_argument("--warmup", type=int, default=20_000)
    r.add_argument("--seconds", type=float, default=6.0)
    r.add_argument("--deadline", type=float, default=15.0,
                   help="stop this many seconds after start whatever happened")
    args = ap.parse_args()
    if args.cmd == "setup":
        print(json.dumps(setup()))
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
