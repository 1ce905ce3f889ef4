"""One client connection: sending (with stalls, counters and fault triggers), heartbeats,
and the receive loop that hands requests to the v1 or v2 protocol module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed

from recorder.simulator.kraken.channels import Sub
from recorder.simulator.kraken.faults import MALFORMED_FRAME, Rule
from recorder.simulator.wire import encode

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from recorder.simulator.kraken.server import Simulator

log = logging.getLogger("recorder.simulator")

HEARTBEAT_V1 = encode('{"event":"heartbeat"}')
HEARTBEAT_V2 = encode('{"channel":"heartbeat"}')
# A client that stops reading must not make the simulator buffer without limit.
MAX_WRITE_BUFFER = 64 * 1024 * 1024


@dataclass(slots=True)
class PrivSub:
    name: str
    token: str
    seq: int = 0
    options: dict = field(default_factory=dict)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class Session:
    def __init__(self, sim: Simulator, ws: ServerConnection, endpoint: str) -> None:
        self.sim = sim
        self.ws = ws
        self.endpoint = endpoint
        self.version = 2 if endpoint.endswith("v2") else 1
        self.private = endpoint.startswith("ws_auth")
        self.transport = ws.transport
        self.conn_id = sim.conn_rng.randrange(1, 2**64)
        self.opened = time.monotonic()  # "only": "oldest" | "newest" faults pick by it
        self.subs: dict[tuple[str, str], tuple[Sub, int]] = {}
        self.priv: dict[str, PrivSub] = {}
        self.sent = 0
        self.last_send = time.monotonic()
        self.stall_until = 0.0
        self.held: list[tuple[bytes, str]] = []
        self.count_rules: list[tuple[int, Rule]] = []
        self.corrupt: set[str] = set()
        self.closed = False
        self.pump: asyncio.Task | None = None
        self.replay_task: asyncio.Task | None = None
        self.replay_done = False
        self._timers: list[asyncio.TimerHandle] = []
        # --speed max synthetic cycle state (see fastpath)
        self.blob = None
        self.next_blob = None
        self.lap = 0
        self.build_pending = False

    # -- sending ----------------------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        return self.stall_until > time.monotonic()

    def send_text(self, text: str, channel: str = "control") -> None:
        self.send(encode(text), channel)

    def _gone(self) -> bool:
        """The client is gone (or half-closed): writing on would only make asyncio log a
        warning per frame until the connection handler notices."""
        if not self.closed and self.transport.is_closing():
            self.closed = True
        return self.closed

    def _write(self, data: bytes) -> bool:
        try:
            self.transport.write(data)
        except RuntimeError:  # "Cannot call write() after write_eof()": the peer closed
            self.closed = True
            return False
        return True

    def send(self, frame: bytes, channel: str = "control", count: int = 1) -> None:
        if self._gone():
            return
        if self.stall_until:
            if self.stalled:
                self.held.append((frame, channel))
                return
            # The stall is over but its timer has not run yet (a busy event loop): what it
            # held goes out first, or this frame would overtake it (a sequence gap).
            self._unstall()
        if not self._write(frame):
            return
        self.sent += count
        self.last_send = time.monotonic()
        self.sim.stats.count(self.endpoint, channel, count)
        if self.count_rules and self.sent >= self.count_rules[0][0]:
            self._fire_count_rules()
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("conn %s: client not reading, dropping it", self.conn_id)
            self.abort()

    def send_chunk(self, data: bytes, n: int, counts: dict[str, int]) -> None:
        """Many pre-encoded frames at once (--speed max); fault triggers fire per chunk."""
        if self._gone() or not self._write(data):
            return
        self.sent += n
        self.last_send = time.monotonic()
        for channel, k in counts.items():
            self.sim.stats.count(self.endpoint, channel, k)
        if self.count_rules and self.sent >= self.count_rules[0][0]:
            self._fire_count_rules()

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()

    # -- faults -----------------------------------------------------------------------------

    def arm(self, rule: Rule) -> None:
        if rule.after_messages is not None:
            self.count_rules.append((self.sent + rule.after_messages, rule))
            self.count_rules.sort(key=lambda item: item[0])
            if self.sent >= self.count_rules[0][0]:
                self._fire_count_rules()
        elif rule.after_seconds is not None:
            loop = asyncio.get_running_loop()
            self._timers.append(loop.call_later(rule.after_seconds, self.fire, rule))
        else:
            self.fire(rule)

    def _fire_count_rules(self) -> None:
        while self.count_rules and self.sent >= self.count_rules[0][0]:
            _, rule = self.count_rules.pop(0)
            self.fire(rule)

    def fire(self, rule: Rule) -> None:
        if self.closed:
            return
        log.info("conn %s (%s): fault %s", self.conn_id, self.endpoint, rule.kind)
        self.sim.stats.faults[rule.kind] = self.sim.stats.faults.get(rule.kind, 0) + 1
        if rule.kind == "drop":
            if rule.mode == "abort":
                self.abort()
            elif rule.mode == "eof":
                # TCP FIN without a WebSocket close frame: what a proxy dropping the link does.
                self.closed = True
                self.transport.close()
            else:
                self.closed = True
                asyncio.ensure_future(self.ws.close(rule.code, "simulated close"))
        elif rule.kind == "stall":
            self.stall_until = time.monotonic() + rule.seconds
            loop = asyncio.get_running_loop()
            self._timers.append(loop.call_later(rule.seconds, self._unstall))
        elif rule.kind == "malformed":
            self.transport.write(encode(MALFORMED_FRAME))
            self.sent += 1
        elif rule.kind == "corrupt_book" and rule.symbol:
            from recorder.exchanges.kraken.pairs import find_pair

            pair = find_pair(rule.symbol)
            self.corrupt.add(pair.symbol if pair else rule.symbol)

    def _unstall(self) -> None:
        if self.stalled:
            return
        self.stall_until = 0.0
        held, self.held = self.held, []
        for frame, channel in held:
            self.send(frame, channel)

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        sim = self.sim
        self.send_text(sim.status_text(self), "status")
        for rule in sim.faults.persistent:
            if rule.matches(self.endpoint):
                self.arm(rule)
        hb = asyncio.create_task(self._heartbeats())
        handler = sim.proto_v2 if self.version == 2 else sim.proto_v1
        try:
            while True:
                try:
                    message = await self.ws.recv()
                except ConnectionClosed:
                    break
                if self.closed:
                    break
                if isinstance(message, bytes):
                    message = message.decode("utf-8", "replace")
                await handler(self, message)
        finally:
            self.closed = True
            hb.cancel()
            for t in self._timers:
                t.cancel()
            for task in (self.pump, self.replay_task):
                if task is not None:
                    task.cancel()

    async def _heartbeats(self) -> None:
        frame = HEARTBEAT_V2 if self.version == 2 else HEARTBEAT_V1
        while not self.closed:
            await asyncio.sleep(0.1)
            if (self.subs or self.priv) and not self.stalled:
                if time.monotonic() - self.last_send >= 1.0:
                    self.send(frame, "heartbeat")
