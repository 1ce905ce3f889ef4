"""The REST server: KuCoin's envelopes, bullet tokens, market data, fills, and /_sim/.

http.server runs in a thread for its robust HTTP handling; every request is answered on the
simulator's event loop, so all state stays single-threaded (a level2 snapshot is taken
between two market steps: its sequence S is exactly where the WebSocket stream continues at
S + 1). Bodies are written as bytes, so replayed answers go out byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from recorder.simulator.kucoin import render
from recorder.simulator.kucoin.auth import ERRORS
from recorder.simulator.kucoin.faults import FaultError
from recorder.simulator.kucoin.market import CANDLE_TYPES

if TYPE_CHECKING:
    from recorder.simulator.kucoin.server import Simulator

log = logging.getLogger("recorder.simulator")

Answer = tuple[int, bytes]
SIGNED = {"/api/v1/bullet-private", "/api/v3/market/orderbook/level2", "/api/v1/fills",
          "/api/v1/hf/fills"}
POST_ONLY = {"/api/v1/bullet-public", "/api/v1/bullet-private"}


def error(code: str, msg: str | None = None) -> Answer:
    status, text = ERRORS[code]
    return status, render.dumps({"code": code, "msg": msg or text}).encode()


class RestApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes,
               client_ip: str) -> Answer:
        sim = self.sim
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        if path.startswith("/_sim/"):
            return self._control(method, path, body)
        sim.stats.rest_requests += 1
        q = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True)}
        code = sim.faults.take_rest_error(path)
        if code is not None:
            sim.stats.fault("rest_error")
            return error(code)
        if path in POST_ONLY and method != "POST":
            return error("405000")
        if path in SIGNED:
            problem = sim.auth.check(method, target, headers, body, client_ip)
            if problem:
                sim.stats.fault(f"auth_{problem}")
                return error(problem)
        handler = None
        if path.startswith("/api/"):
            name = "_" + path.strip("/").replace("/", "_").replace("-", "_")
            handler = getattr(self, name, None)
        if handler is None:
            return error("404000")
        return handler(q)

    # -- tokens and basics ------------------------------------------------------------------

    def _bullet(self, private: bool) -> Answer:
        sim = self.sim
        token = sim.auth.issue(private)
        sim.stats.tokens_issued += 1
        server = {"endpoint": sim.ws_url, "encrypt": sim.ws_url.startswith("wss:"),
                  "protocol": "websocket", "pingInterval": sim.cfg.ping_interval_ms,
                  "pingTimeout": sim.cfg.ping_timeout_ms}
        return 200, render.ok(render.dumps({"token": token, "instanceServers": [server]}))

    def _api_v1_bullet_public(self, q: dict) -> Answer:
        return self._bullet(False)

    def _api_v1_bullet_private(self, q: dict) -> Answer:
        return self._bullet(True)

    def _api_v1_timestamp(self, q: dict) -> Answer:
        return 200, render.ok(str(int(time.time() * 1000)))

    def _api_v1_status(self, q: dict) -> Answer:
        return 200, render.ok('{"status":"open","msg":""}')

    def _api_v2_symbols(self, q: dict) -> Answer:
        market = q.get("market")
        rows = [sym.info() for sym in self.sim.served_symbols()
                if not market or sym.market == market]
        return 200, render.ok(render.dumps(rows))

    # -- market data ------------------------------------------------------------------------

    def _replayed(self, path: str, q: dict) -> Answer | None:
        sim = self.sim
        if sim.capture is None:
            return None
        symbol = q.get("symbol", "").upper()
        positions = [s.replay_pos for s in sim.sessions if s.replay_pos is not None]
        body = sim.capture.rest_answer(path, symbol, max(positions) if positions else None)
        if body is None:
            if any(t.endswith(":" + symbol) for t in sim.capture.topics):
                return error("400100", f"the replay has no recorded answer of {path} for "
                                       f"{symbol}")
            return None
        return 200, body

    def _pm(self, q: dict):
        return self.sim.market.pairs.get(q.get("symbol", "").upper())

    def _book(self, path: str, q: dict, depth: int | None) -> Answer:
        replayed = self._replayed(path, q)
        if replayed is not None:
            return replayed
        pm = self._pm(q)
        if pm is None:
            return error("900001") if q.get("symbol") else error("400100")
        now_ms = int(time.time() * 1000)
        return 200, render.book_snapshot(pm, depth, now_ms, self.sim.book_sequence(pm))

    def _api_v1_market_orderbook_level2_20(self, q: dict) -> Answer:
        return self._book("/api/v1/market/orderbook/level2_20", q, 20)

    def _api_v1_market_orderbook_level2_100(self, q: dict) -> Answer:
        return self._book("/api/v1/market/orderbook/level2_100", q, 100)

    def _api_v3_market_orderbook_level2(self, q: dict) -> Answer:
        return self._book("/api/v3/market/orderbook/level2", q, None)

    def _api_v1_market_histories(self, q: dict) -> Answer:
        replayed = self._replayed("/api/v1/market/histories", q)
        if replayed is not None:
            return replayed
        pm = self._pm(q)
        if pm is None:
            return error("900001") if q.get("symbol") else error("400100")
        return 200, render.histories(pm)

    def _api_v1_market_candles(self, q: dict) -> Answer:
        replayed = self._replayed("/api/v1/market/candles", q)
        if replayed is not None:
            return replayed
        pm = self._pm(q)
        kind = q.get("type", "")
        if pm is None or kind not in CANDLE_TYPES:
            return error("400100")
        try:
            start = int(q.get("startAt") or 0)
            end = int(q.get("endAt") or 0)
        except ValueError:
            return error("400100")
        return 200, render.candles(pm, kind, start, end)

    # -- fills ------------------------------------------------------------------------------

    def _api_v1_fills(self, q: dict) -> Answer:
        items = self.sim.account.select(q, hf=False)
        if isinstance(items, str):
            return error(items)
        try:
            page = max(1, int(q.get("currentPage") or 1))
            size = min(500, max(10, int(q.get("pageSize") or 50)))
        except ValueError:
            return error("400100")
        total = len(items)
        rows = [f.item(hf=False) for f in items[(page - 1) * size:page * size]]
        data = {"currentPage": page, "pageSize": size, "totalNum": total,
                "totalPage": (total + size - 1) // size, "items": rows}
        return 200, render.ok(render.dumps(data))

    def _api_v1_hf_fills(self, q: dict) -> Answer:
        items = self.sim.account.select(q, hf=True)
        if isinstance(items, str):
            return error(items)
        try:
            limit = min(100, max(1, int(q.get("limit") or 100)))
            last_id = int(q["lastId"]) if q.get("lastId") else None
        except ValueError:
            return error("400100")
        if last_id is not None:
            items = [f for f in items if f.id < last_id]
        rows = items[:limit]
        data = {"items": [f.item(hf=True) for f in rows],
                "lastId": rows[-1].id if rows else (last_id or 0)}
        return 200, render.ok(render.dumps(data))

    # -- control ----------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> Answer:
        sim = self.sim
        if path == "/_sim/stats":
            return 200, render.dumps(sim.stats_dict()).encode()
        if path == "/_sim/fault" and method == "POST":
            try:
                spec = json.loads(body or b"{}")
                if not isinstance(spec, dict):
                    raise FaultError("the body must be a JSON object")
                result = {"ok": True, **sim.apply_fault(spec)}
                return 200, render.dumps(result).encode()
            except (FaultError, ValueError, TypeError) as exc:
                return 400, render.dumps({"ok": False, "error": str(exc)}).encode()
        return 404, render.dumps({"ok": False, "error": f"unknown control path {path}"}).encode()


class RestServer:
    def __init__(self, api: RestApi, loop: asyncio.AbstractEventLoop, host: str, port: int):
        self.httpd = ThreadingHTTPServer((host, port), _make_handler(api, loop))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(api: RestApi, loop: asyncio.AbstractEventLoop) -> type[BaseHTTPRequestHandler]:
    async def call(method: str, target: str, headers: dict, body: bytes, ip: str) -> Answer:
        return api.handle(method, target, headers, body, ip)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "recorder-simulator"

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            fut = asyncio.run_coroutine_threadsafe(
                call(method, self.path, headers, body, self.client_address[0]), loop)
            try:
                status, data = fut.result(timeout=10)
            except Exception:  # the loop is gone or the handler failed
                log.exception("REST %s %s failed", method, self.path)
                status, data = error("500000")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_DELETE(self) -> None:  # noqa: N802
            self._serve("DELETE")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("REST " + format, *args)

    return Handler
