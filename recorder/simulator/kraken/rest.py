"""The REST server: Kraken's public endpoints, GetWebSocketsToken, TradesHistory, and the
/_sim/ control API.

http.server runs in a thread for its robust HTTP handling; every request is answered by a
coroutine on the simulator's event loop, so all state stays single-threaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from recorder.exchanges.kraken.pairs import PAIRS, Pair, find_pair
from recorder.simulator.kraken.account import history_entry, time_text
from recorder.simulator.kraken.faults import FaultError
from recorder.simulator.kraken.market import INTERVALS, v1_ts
from recorder.simulator.numbers import fmt_fixed

if TYPE_CHECKING:
    from recorder.simulator.kraken.server import Simulator

log = logging.getLogger("recorder.simulator")

_ASSET_CODES = {
    "BTC": "XXBT", "ETH": "XETH", "XRP": "XXRP", "LTC": "XLTC", "XMR": "XXMR", "DOGE": "XXDG",
    "USD": "ZUSD", "EUR": "ZEUR", "GBP": "ZGBP", "JPY": "ZJPY",
}


def _ok(result: object) -> tuple[int, dict]:
    return 200, {"error": [], "result": result}


def _err(message: str) -> tuple[int, dict]:
    return 200, {"error": [message]}


def _lookup(name: str) -> Pair | None:
    pair = find_pair(name)
    if pair:
        return pair
    for p in PAIRS.values():
        if name in (p.rest_id, p.altname):
            return p
    return None


def asset_pair_info(p: Pair) -> dict:
    return {
        "altname": p.altname, "wsname": p.wsname, "aclass_base": "currency",
        "base": _ASSET_CODES.get(p.base, p.base), "aclass_quote": "currency",
        "quote": _ASSET_CODES.get(p.quote, p.quote), "lot": "unit",
        "cost_decimals": max(p.price_decimals, 5), "pair_decimals": p.price_decimals,
        "lot_decimals": p.qty_decimals, "lot_multiplier": 1, "leverage_buy": [],
        "leverage_sell": [], "fees": [[0, 0.4]], "fees_maker": [[0, 0.25]],
        "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40,
        "ordermin": p.ordermin, "costmin": "0.5",
        "tick_size": fmt_fixed(1, p.price_decimals), "status": "online",
    }


class RestApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict]:
        parts = urlsplit(target)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if path.startswith("/_sim/"):
            return await self._control(method, path, body)
        if path.startswith("/0/private/"):
            if method != "POST":
                return _err("EGeneral:Invalid arguments")
            problem = self.sim.auth.check_request(path, headers, body)
            if problem:
                return _err(problem)
            injected = self.sim.faults.take_rest_error(path)
            if injected:
                self.sim.stats.faults["rest_error"] = (
                    self.sim.stats.faults.get("rest_error", 0) + 1)
                return _err(injected)
            if path == "/0/private/GetWebSocketsToken":
                token = self.sim.auth.issue()
                return _ok({"token": token, "expires": int(self.sim.auth.token_ttl)})
            if path == "/0/private/TradesHistory":
                return self._trades_history(
                    {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()})
            # The demo key has the "WebSocket interface" and "Query closed orders & trades"
            # permissions only.
            return _err("EGeneral:Permission denied")
        if method == "POST":
            query.update({k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()})
        name = path.removeprefix("/0/public/")
        handler = getattr(self, f"_public_{name}", None) if path.startswith("/0/public/") else None
        if handler is None:
            return 404, {"error": ["EGeneral:Unknown method"]}
        return handler(query)

    # -- public -----------------------------------------------------------------------------

    def _public_Time(self, q: dict) -> tuple[int, dict]:  # noqa: N802 (Kraken's names)
        now = int(time.time())
        # Kraken's own form, two-digit year included: "Thu, 06 Jul 23 18:50:48 +0000".
        stamp = time.strftime("%a, %d %b %y %H:%M:%S +0000", time.gmtime(now))
        return _ok({"unixtime": now, "rfc1123": stamp})

    def _public_SystemStatus(self, q: dict) -> tuple[int, dict]:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return _ok({"status": self.sim.status, "timestamp": stamp})

    def _public_AssetPairs(self, q: dict) -> tuple[int, dict]:  # noqa: N802
        names = [n for n in q.get("pair", "").split(",") if n]
        if not names:
            return _ok({p.rest_id: asset_pair_info(p) for p in PAIRS.values()})
        out = {}
        for n in names:
            p = _lookup(n)
            if p is None:
                return _err("EQuery:Unknown asset pair")
            out[p.rest_id] = asset_pair_info(p)
        return _ok(out)

    def _market(self, q: dict):
        p = _lookup(q.get("pair", ""))
        if p is None:
            return None
        return self.sim.market.pairs.get(p.symbol)

    def _public_Depth(self, q: dict) -> tuple[int, dict]:  # noqa: N802
        pm = self._market(q)
        if pm is None:
            return _err("EQuery:Unknown asset pair")
        try:
            count = min(max(int(q.get("count", 100)), 1), 500)
        except ValueError:
            return _err("EGeneral:Invalid arguments:count")

        def rows(side):
            return [
                [fmt_fixed(p, pm.pd), fmt_fixed(qty, pm.qd), int(float(ts))]
                for p, qty, ts in side.top(count)
            ]

        return _ok({pm.pair.rest_id: {"asks": rows(pm.asks), "bids": rows(pm.bids)}})

    def _public_Trades(self, q: dict) -> tuple[int, dict]:  # noqa: N802
        pm = self._market(q)
        if pm is None:
            return _err("EQuery:Unknown asset pair")
        try:
            count = min(max(int(q.get("count", 1000)), 1), 1000)
            since = int(q.get("since", 0) or 0)
        except ValueError:
            return _err("EGeneral:Invalid arguments")
        if since and since < 10**12:  # a seconds timestamp rather than a nanosecond cursor
            since *= 10**9
        rows = [t for t in pm.trades if _ns(t.time) > since][:count]
        out = [
            # The stream's microseconds (Kraken's REST shows more digits, never fewer).
            [fmt_fixed(t.price, pm.pd), fmt_fixed(t.qty, pm.qd), float(v1_ts(t.time)), t.side,
             t.ord_type, "", t.trade_id]
            for t in rows
        ]
        last = _ns(rows[-1].time) if rows else (since or time.time_ns())
        return _ok({pm.pair.rest_id: out, "last": str(last)})

    def _public_OHLC(self, q: dict) -> tuple[int, dict]:  # noqa: N802
        pm = self._market(q)
        if pm is None:
            return _err("EQuery:Unknown asset pair")
        try:
            interval = int(q.get("interval", 1))
            since = int(q.get("since", 0) or 0)
        except ValueError:
            return _err("EGeneral:Invalid arguments")
        if interval not in INTERVALS:
            return _err("EGeneral:Invalid arguments")
        candles = [*pm.history[interval], pm.candles[interval]]
        out = [
            [c.begin, fmt_fixed(c.open, pm.pd), fmt_fixed(c.high, pm.pd),
             fmt_fixed(c.low, pm.pd), fmt_fixed(c.close, pm.pd), fmt_fixed(c.vwap(), pm.pd),
             fmt_fixed(c.volume, pm.qd), c.count]
            for c in candles if c.begin > since or c is candles[-1]
        ]
        last = candles[-2].begin if len(candles) > 1 else candles[-1].begin
        return _ok({pm.pair.rest_id: out, "last": last})

    # -- private ----------------------------------------------------------------------------

    def _trades_history(self, q: dict) -> tuple[int, dict]:
        """The demo account's fills, newest first, 50 a page: ``start`` (exclusive) and
        ``end`` (inclusive) unix times or trade TXIDs, ``ofs``; ``count`` = all that match."""
        fills = list(self.sim.account.fills)
        try:
            start = _bound(q.get("start"), fills)
            end = _bound(q.get("end"), fills)
            ofs = int(q.get("ofs") or 0)
        except ValueError:
            return _err("EGeneral:Invalid arguments")
        if ofs < 0:
            return _err("EGeneral:Invalid arguments")
        chosen = [f for f in reversed(fills)
                  if (start is None or float(time_text(f.time)) > start)
                  and (end is None or float(time_text(f.time)) <= end)]
        page = chosen[ofs:ofs + 50]
        return _ok({"trades": {f.txid: history_entry(f) for f in page}, "count": len(chosen)})

    # -- control ----------------------------------------------------------------------------

    async def _control(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        sim = self.sim
        if path == "/_sim/stats":
            return 200, sim.stats_dict()
        if path == "/_sim/fault" and method == "POST":
            try:
                spec = json.loads(body or b"{}")
                if not isinstance(spec, dict):
                    raise FaultError("the body must be a JSON object")
                return 200, {"ok": True, **sim.apply_fault(spec)}
            except (FaultError, ValueError, TypeError) as exc:
                return 400, {"ok": False, "error": str(exc)}
        return 404, {"ok": False, "error": f"unknown control path {path}"}


def _bound(value: str | None, fills: list) -> float | None:
    """A start/end parameter: unix seconds, or a trade TXID (its time)."""
    if value is None or value == "":
        return None
    for f in fills:
        if f.txid == value:
            return float(time_text(f.time))
    return float(value)


def _ns(t: float) -> int:
    return int(round(t * 1_000_000)) * 1000


class RestServer:
    def __init__(self, api: RestApi, loop: asyncio.AbstractEventLoop, host: str, port: int):
        handler = _make_handler(api, loop)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(api: RestApi, loop: asyncio.AbstractEventLoop) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "recorder-simulator"

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            fut = asyncio.run_coroutine_threadsafe(
                api.handle(method, self.path, headers, body), loop
            )
            try:
                status, payload = fut.result(timeout=10)
            except Exception as exc:  # the loop is gone or the handler failed
                log.exception("REST %s %s failed", method, self.path)
                status, payload = 500, {"error": [f"EService:Unavailable ({exc})"]}
            data = json.dumps(payload, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("REST " + format, *args)

    return Handler
