"""A minimal KuCoin client for trying the simulator (and for its tests): REST calls with the
KC-API-* signature, bullet tokens, and WebSocket connections that wait for the welcome.

    c = KucoinClient(urls["rest"])                       # the simulator's first stdout line
    ws, welcome = c.connect()                            # bullet-public, connect, welcome
    ws.send(json.dumps({"id": 1, "type": "subscribe", "topic": "/market/level2:BTC-USDT",
                        "response": True}))
    status, body = c.get("/api/v1/market/orderbook/level2_100", symbol="BTC-USDT")
    status, body = c.get("/api/v3/market/orderbook/level2", signed=True, symbol="BTC-USDT")
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlencode

from recorder.simulator.kucoin.auth import (
    DEMO_API_KEY,
    DEMO_API_PASSPHRASE,
    DEMO_API_SECRET,
    signed_headers,
)


class KucoinClient:
    def __init__(self, rest_url: str, key: str = DEMO_API_KEY, secret: str = DEMO_API_SECRET,
                 passphrase: str = DEMO_API_PASSPHRASE, version: str = "2",
                 timeout: float = 10.0) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.key, self.secret, self.passphrase = key, secret, passphrase
        self.version = version
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"KucoinClient({self.rest_url!r})"

    def request(self, method: str, path: str, signed: bool = False, body: str = "",
                headers: dict[str, str] | None = None, **query: object) -> tuple[int, dict]:
        """(HTTP status, decoded JSON body); KuCoin's error envelopes come back the same way."""
        target = path + ("?" + urlencode(query) if query else "")
        h = {"Content-Type": "application/json"}
        if signed:
            h.update(signed_headers(self.key, self.secret, self.passphrase, method, target,
                                    body, self.version))
        h.update(headers or {})
        req = urllib.request.Request(self.rest_url + target, method=method, headers=h,
                                     data=body.encode() if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def get(self, path: str, signed: bool = False, **query: object) -> tuple[int, dict]:
        return self.request("GET", path, signed, **query)

    def bullet(self, private: bool = False) -> dict:
        """The ``data`` of a bullet answer: token and instanceServers."""
        path = "/api/v1/bullet-private" if private else "/api/v1/bullet-public"
        status, body = self.request("POST", path, signed=private)
        if body.get("code") != "200000":
            raise RuntimeError(f"{path}: HTTP {status}: {body}")
        return body["data"]

    @staticmethod
    def url(bullet: dict, connect_id: str | None = None) -> str:
        server = bullet["instanceServers"][0]
        url = f"{server['endpoint']}?token={bullet['token']}"
        return url + (f"&connectId={connect_id}" if connect_id else "")

    def connect(self, private: bool = False, connect_id: str | None = "sim-client",
                timeout: float = 10.0, **ws_options: object):
        """(websocket-client connection, the welcome message as a dict)."""
        import websocket

        ws = websocket.create_connection(self.url(self.bullet(private), connect_id),
                                         timeout=timeout, **ws_options)
        welcome = json.loads(ws.recv())
        if welcome.get("type") != "welcome":
            ws.close()
            raise RuntimeError(f"expected the welcome, got {welcome}")
        return ws, welcome
