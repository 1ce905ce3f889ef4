"""Signed KuCoin endpoints: a correct KC-API-* signature is accepted, and each wrong
credential is refused with KuCoin's own code. The simulator gets the session's sentinel key
pair through its environment only (tests/sentinel.py checks it leaks nowhere)."""

from __future__ import annotations

import time

import pytest

from recorder.simulator.kucoin.auth import DEMO_API_PASSPHRASE, DEMO_API_SECRET, sign
from recorder.simulator.kucoin.client import KucoinClient
from recorder.simulator.testing import SimulatorProcess
from tests.sentinel import SENTINEL_KEY, SENTINEL_SECRET, WRONG_SECRET

PASSPHRASE = "sim-passphrase-for-tests"
V3 = "/api/v3/market/orderbook/level2"


def test_kucoin_published_signing_examples():
    # kucoin-protocol.md 1.2: the docs' vector, and the SDK's.
    text = '1547015186532POST/api/v1/deposit-addresses{"currency":"BTC"}'
    assert sign(DEMO_API_SECRET, text) == "7QP/oM0ykidMdrfNEUmng8eZjg/ZvPafjIqmxiVfYu4="
    assert sign(DEMO_API_SECRET, DEMO_API_PASSPHRASE) == \
        "HFkKIy8cKfQF3Ognmbamq9Bd8VfYy3eUQj7uC8NvMes="
    assert sign("test_api_secret", "test_plain") == "jie/gxS38wLFFaBwl/cAzFbAzlI8MIny96jSXrB+iP4="


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--seed", "5"], exchange="kucoin", capture_stderr=True,
                          api_key=SENTINEL_KEY, api_secret=SENTINEL_SECRET,
                          api_passphrase=PASSPHRASE) as s:
        yield s


def client(sim, **kw) -> KucoinClient:
    creds = {"key": SENTINEL_KEY, "secret": SENTINEL_SECRET, "passphrase": PASSPHRASE, **kw}
    return KucoinClient(sim.urls["rest"], **creds)


def refused(status_body: tuple[int, dict], code: str, http: int) -> bool:
    status, body = status_body
    return status == http and body["code"] == code and set(body) == {"code", "msg"}


def headers(target: str = f"{V3}?symbol=BTC-USDT", method: str = "GET", **kw) -> dict:
    from recorder.simulator.kucoin.auth import signed_headers

    args = {"key": SENTINEL_KEY, "secret": SENTINEL_SECRET, "passphrase": PASSPHRASE, **kw}
    return signed_headers(args["key"], args["secret"], args["passphrase"], method, target,
                          version=kw.get("version", "2"), now_ms=kw.get("now_ms"))


def test_correct_signatures_are_accepted(sim):
    for version in ("2", "3"):
        status, body = client(sim, version=version).get(V3, signed=True, symbol="BTC-USDT")
        assert status == 200 and body["code"] == "200000"
        assert len(body["data"]["bids"]) > 100  # the full book
    data = client(sim).bullet(private=True)
    assert data["token"] and data["instanceServers"][0]["endpoint"] == sim.urls["ws"]
    status, body = client(sim).get("/api/v1/fills", signed=True)
    assert status == 200 and body["data"]["currentPage"] == 1
    # KuCoin's SDKs sign the raw query while sending it URL-encoded: both forms verify.
    h = headers(f"{V3}?symbol=BTC-USDT")
    status, body = client(sim).request("GET", f"{V3}?symbol=BTC%2DUSDT", headers=h)
    assert status == 200, body


def test_missing_headers_400001(sim):
    for name in ("KC-API-KEY", "KC-API-SIGN", "KC-API-TIMESTAMP", "KC-API-PASSPHRASE"):
        h = headers()
        h[name] = ""
        assert refused(client(sim).request("GET", f"{V3}?symbol=BTC-USDT", headers=h),
                       "400001", 401), name


def test_stale_timestamp_400002(sim):
    for now_ms in (int(time.time() * 1000) - 6000, int(time.time() * 1000) + 6000):
        h = headers(now_ms=now_ms)
        answer = client(sim).request("GET", f"{V3}?symbol=BTC-USDT", headers=h)
        assert refused(answer, "400002", 400)
        assert answer[1]["msg"] == "Invalid KC-API-TIMESTAMP"


def test_unknown_key_400003(sim):
    assert refused(client(sim, key="5c2db93503aa674c74a31734").get(V3, True, symbol="BTC-USDT"),
                   "400003", 401)


def test_passphrase_400004(sim):
    assert refused(client(sim, passphrase="other").get(V3, True, symbol="BTC-USDT"),
                   "400004", 401)
    # A plain passphrase sent as version 2, or a v1-style request for a v2 key.
    h = headers()
    h["KC-API-PASSPHRASE"] = PASSPHRASE
    answer = client(sim).request("GET", f"{V3}?symbol=BTC-USDT", headers=h)
    assert refused(answer, "400004", 401) and answer[1]["msg"] == "Invalid KC-API-PASSPHRASE"
    assert refused(client(sim, version="1").get(V3, True, symbol="BTC-USDT"), "400004", 401)
    sim.control.key(version=1)  # a v1 key takes its passphrase in plain text
    try:
        assert client(sim, version="1").get(V3, True, symbol="BTC-USDT")[0] == 200
        assert refused(client(sim).get(V3, True, symbol="BTC-USDT"), "400004", 401)
    finally:
        sim.control.key(version=2)


def test_signature_400005(sim):
    wrong = {**headers(secret=WRONG_SECRET),  # the right passphrase, a wrong signature
             "KC-API-PASSPHRASE": sign(SENTINEL_SECRET, PASSPHRASE)}
    answer = client(sim).request("GET", f"{V3}?symbol=BTC-USDT", headers=wrong)
    assert refused(answer, "400005", 401) and answer[1]["msg"] == "Invalid KC-API-SIGN"
    # Signed for one query, sent with another.
    h = headers(f"{V3}?symbol=ETH-USDT")
    assert refused(client(sim).request("GET", f"{V3}?symbol=BTC-USDT", headers=h),
                   "400005", 401)
    h = headers("/api/v1/bullet-private", method="POST")
    assert client(sim).request("POST", "/api/v1/bullet-private", headers=h)[0] == 200
    assert refused(client(sim).request("POST", "/api/v1/bullet-private", body="{}",
                                       headers=h), "400005", 401)


def test_whitelist_400006_and_permission_400007(sim):
    sim.control.key(ip_whitelist=["10.1.2.3"])
    try:
        assert refused(client(sim).get(V3, True, symbol="BTC-USDT"), "400006", 401)
    finally:
        sim.control.key(ip_whitelist=[])
    sim.control.key(access_denied=True)
    try:
        answer = client(sim).get("/api/v1/hf/fills", True, symbol="BTC-USDT")
        assert refused(answer, "400007", 403) and answer[1]["msg"] == "Access Denied"
    finally:
        sim.control.key(access_denied=False)
    assert client(sim).get(V3, True, symbol="BTC-USDT")[0] == 200


def test_credentials_are_printed_nowhere(sim):
    stats = sim.control.stats()
    assert stats["faults"].get("auth_400005", 0) >= 1
    line = str(sim.urls)
    logs = "".join(sim.stderr_lines)
    for value in (SENTINEL_KEY, SENTINEL_SECRET, PASSPHRASE):
        assert value not in line and value not in logs
