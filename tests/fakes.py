"""Fakes shared by the tests: local servers that answer like the exchanges' REST APIs.

- ``FakeKraken``: GetWebSocketsToken with Kraken's checks (key, API-Sign, nonces), scripted
  errors and dropped connections; ``FakeClock`` for the token helper.
- ``KucoinStub``: KuCoin REST answers (``rest_body``: KuCoin's own bodies from
  ../shared/data/kucoin/rest.json) per route.
"""

from __future__ import annotations

import hmac
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from recorder.exchanges.kraken.signer import api_sign
from tests.sentinel import SENTINEL_KEY, SENTINEL_SECRET, WRONG_SECRET

# The session's sentinels (tests/sentinel_plugin.py proves they leak nowhere).
KEY, SECRET, OTHER_SECRET = SENTINEL_KEY, SENTINEL_SECRET, WRONG_SECRET


class FakeKraken:
    """A GetWebSocketsToken endpoint on loopback. ``script`` lists what the next requests
    get: an error string (Kraken's error array), "DROP" (connection closed without an
    answer), "TRUNCATE" (an answer cut off mid-body), "GARBLE" (no valid status line),
    "HTTP500", or None (a token)."""

    def __init__(self, key: str = KEY, secret: str = SECRET, expires: int = 900,
                 delay: float = 0.0) -> None:
        self.key, self.secret, self.expires, self.delay = key, secret, expires, delay
        self.script: list[str | None] = []
        self.requests: list[dict] = []
        self.issued: list[str] = []
        self.nonce_errors = 0
        self._last_nonce = -1
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                        daemon=True)

    def __enter__(self) -> FakeKraken:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict] | str:
        import time

        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body})
            step = self.script.pop(0) if self.script else None
            if step in ("DROP", "TRUNCATE", "GARBLE"):
                return step
            if step == "HTTP500":
                return 500, {"error": []}
            if step is not None:
                return 200, {"error": [step]}
            if headers.get("api-key") != self.key:
                return 200, {"error": ["EAPI:Invalid key"]}
            fields = dict(parse_qsl(body.decode()))
            nonce = fields.get("nonce", "")
            try:
                expected = api_sign(path, nonce, body, self.secret)
            except ValueError:
                expected = ""
            if not hmac.compare_digest(headers.get("api-sign", ""), expected):
                return 200, {"error": ["EAPI:Invalid signature"]}
            if not nonce.isdigit() or int(nonce) <= self._last_nonce:
                self.nonce_errors += 1
                return 200, {"error": ["EAPI:Invalid nonce"]}
            self._last_nonce = int(nonce)
            token = f"tok{len(self.issued):04d}"
            self.issued.append(token)
            return 200, {"error": [], "result": {"token": token, "expires": self.expires}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = fake.answer(self.path, headers, body)
                if isinstance(reply, str):
                    if reply == "TRUNCATE":
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", "200")
                        self.end_headers()
                        self.wfile.write(b'{"error":[],"result":{"tok')
                    elif reply == "GARBLE":
                        self.wfile.write(b"KRAKEN IS HAVING A MOMENT\r\n\r\n")
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, doc = reply
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


KUCOIN_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kucoin"


def rest_body(endpoint: str, i: int = 0) -> str:
    """A KuCoin response body from rest.json, as compact text."""
    sample = json.loads((KUCOIN_DATA / "rest.json").read_text())["endpoints"][endpoint][i]
    return json.dumps(sample["body"], separators=(",", ":"))


class KucoinStub:
    """A local HTTP server: ``routes[(METHOD, path)]`` = (status, body) or a list of them
    (served in turn, the last one repeated); every request is kept in ``requests`` (its
    headers looked up case-insensitively, as HTTP reads them)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], object] = {}
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                split = urlsplit(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode() if n else ""
                stub.requests.append({"method": self.command, "path": split.path,
                                      "full_path": self.path, "query": split.query,
                                      "headers": self.headers, "body": body})
                answer = stub.routes.get((self.command, split.path), (404, "not found"))
                if isinstance(answer, list):
                    answer = answer.pop(0) if len(answer) > 1 else answer[0]
                status, text = answer
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.requests]
