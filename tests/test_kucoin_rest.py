"""The KuCoin REST client against a tiny local server answering with KuCoin's own bodies
(../shared/data/kucoin/rest.json): success envelopes, error envelopes and how each error
is classified, signing and the clock offset, proxies bypassed for 127.0.0.1."""

from __future__ import annotations

import json

import msgspec
import pytest

from recorder.core.secrets import CredentialError
from recorder.exchanges.kucoin.credentials import KucoinCredentials
from recorder.exchanges.kucoin.rest import (
    ClockSkew,
    InvalidCredentials,
    KucoinError,
    KucoinRest,
    RateLimited,
    TransientError,
)
from recorder.exchanges.kucoin.signer import passphrase_header, sign
from tests.fakes import KUCOIN_DATA as DATA
from tests.fakes import KucoinStub, rest_body

KEY, SECRET, PASSPHRASE = "test-key-0001", "test-secret-0002", "test-passphrase-0003"
NAMES = ("T_KC_KEY", "T_KC_SECRET", "T_KC_PASS")






@pytest.fixture
def stub():
    s = KucoinStub()
    yield s
    s.close()


def creds(version: int = 2) -> KucoinCredentials:
    return KucoinCredentials(KEY, SECRET, PASSPHRASE, version, "environment " + "/".join(NAMES),
                             NAMES)


def _clock() -> float:
    return 1_000.0


def test_bullet_public_and_its_redacted_record(stub):
    body = rest_body("POST /api/v1/bullet-public")
    stub.routes[("POST", "/api/v1/bullet-public")] = (200, body)
    data, text = KucoinRest(stub.url).bullet_public()
    expected = json.loads(body)["data"]
    assert data == expected
    assert expected["token"] not in text
    recorded = json.loads(text)
    assert recorded["data"] == {**expected, "token": "<redacted>"}
    (req,) = stub.requests
    assert req["method"] == "POST" and "KC-API-KEY" not in req["headers"]


def test_signed_request_carries_kucoins_clock(stub):
    # KuCoin's clock is a minute ahead of ours.
    stub.routes[("GET", "/api/v1/timestamp")] = (200, '{"code":"200000","data":1060000}')
    stub.routes[("POST", "/api/v1/bullet-private")] = (200, rest_body(
        "POST /api/v1/bullet-private"))
    client = KucoinRest(stub.url, creds(3), clock=_clock)
    client.bullet_private()
    assert stub.paths() == ["GET /api/v1/timestamp", "POST /api/v1/bullet-private"]
    h = stub.requests[1]["headers"]
    assert client.clock_offset_ms == 60_000
    assert h["KC-API-TIMESTAMP"] == "1060000"
    assert h["KC-API-SIGN"] == sign(SECRET, "1060000POST/api/v1/bullet-private")
    assert h["KC-API-PASSPHRASE"] == passphrase_header(SECRET, PASSPHRASE, 3)
    assert h["KC-API-KEY"] == KEY and h["KC-API-KEY-VERSION"] == "3"
    # The offset is reused, not measured per request.
    client.bullet_private()
    assert stub.paths().count("GET /api/v1/timestamp") == 1


def test_refused_timestamp_resyncs_the_clock_and_retries_once(stub):
    stub.routes[("GET", "/api/v1/timestamp")] = [(200, '{"code":"200000","data":1000000}'),
                                                 (200, '{"code":"200000","data":1009000}')]
    stub.routes[("GET", "/api/v3/market/orderbook/level2")] = [
        (400, '{"code":"400002","msg":"Invalid KC-API-TIMESTAMP"}'),
        (200, rest_body("GET /api/v3/market/orderbook/level2"))]
    client = KucoinRest(stub.url, creds(), clock=_clock)
    client.book_snapshot("BTC-USDT", full=True)
    assert stub.paths() == ["GET /api/v1/timestamp", "GET /api/v3/market/orderbook/level2",
                            "GET /api/v1/timestamp", "GET /api/v3/market/orderbook/level2"]
    assert stub.requests[-1]["headers"]["KC-API-TIMESTAMP"] == "1009000"
    # Refused twice: the error says why.
    stub.routes[("GET", "/api/v3/market/orderbook/level2")] = (
        400, '{"code":"400002","msg":"Invalid KC-API-TIMESTAMP"}')
    with pytest.raises(ClockSkew, match="clock"):
        client.book_snapshot("BTC-USDT", full=True)


def test_book_snapshots_keep_kucoins_bytes(stub):
    public = rest_body("GET level2 snapshot (endpoint not recorded)")
    full = rest_body("GET /api/v3/market/orderbook/level2")
    stub.routes[("GET", "/api/v1/market/orderbook/level2_100")] = (200, public)
    stub.routes[("GET", "/api/v3/market/orderbook/level2")] = (200, full)
    stub.routes[("GET", "/api/v1/timestamp")] = (200, rest_body("GET /api/v1/timestamp"))
    endpoint, data = KucoinRest(stub.url).book_snapshot("BTC-USDT", full=False)
    assert endpoint == "GET /api/v1/market/orderbook/level2_100"
    assert data.decode() in public and json.loads(data) == json.loads(public)["data"]
    assert stub.requests[-1]["query"] == "symbol=BTC-USDT"
    assert "KC-API-SIGN" not in stub.requests[-1]["headers"]
    endpoint, data = KucoinRest(stub.url, creds()).book_snapshot("BTC-USDT", full=True)
    assert endpoint == "GET /api/v3/market/orderbook/level2"
    assert json.loads(data) == json.loads(full)["data"]
    req = stub.requests[-1]
    assert req["full_path"] == "/api/v3/market/orderbook/level2?symbol=BTC-USDT"
    ts = req["headers"]["KC-API-TIMESTAMP"]
    assert req["headers"]["KC-API-SIGN"] == sign(
        SECRET, f"{ts}GET/api/v3/market/orderbook/level2?symbol=BTC-USDT")


def test_full_book_needs_credentials(stub):
    with pytest.raises(CredentialError, match="api_passphrase_env"):
        KucoinRest(stub.url).book_snapshot("BTC-USDT", full=True)
    assert stub.requests == []


def test_symbols_and_server_time(stub):
    stub.routes[("GET", "/api/v2/symbols")] = (200, rest_body("GET /api/v2/symbols"))
    stub.routes[("GET", "/api/v1/timestamp")] = (200, rest_body("GET /api/v1/timestamp"))
    client = KucoinRest(stub.url)
    assert [s["symbol"] for s in client.symbols()] == ["BTC-USDT"]
    assert client.server_time() == json.loads(rest_body("GET /api/v1/timestamp"))["data"]


def _error_bodies() -> list[dict]:
    samples = json.loads((DATA / "rest.json").read_text())["endpoints"]["ERROR envelopes"]
    return [s["body"] for s in samples]


@pytest.mark.parametrize("status", [200, 400])
def test_error_envelopes_name_endpoint_code_and_message(stub, status):
    for body in _error_bodies():
        stub.routes[("GET", "/api/v2/symbols")] = (status, json.dumps(body))
        with pytest.raises(KucoinError) as e:
            KucoinRest(stub.url).symbols()
        err = e.value
        text = str(err)
        assert "GET /api/v2/symbols" in text and body["code"] in text and body["msg"] in text
        assert (err.code, err.msg, err.http_status) == (body["code"], body["msg"], status)
        assert isinstance(err, TransientError) == (body["code"] == "500000")
        assert not isinstance(err, CredentialError)


# Codes and messages from kucoin-protocol.md (§1.2: the docs' meanings, texts seen in the
# wild for 400004 and 400005).
CREDENTIAL_ERRORS = [
    ("400003", "KC-API-KEY not exists", "T_KC_KEY"),
    ("400004", "Invalid KC-API-PASSPHRASE", "T_KC_PASS"),
    ("400005", "Invalid KC-API-SIGN", "T_KC_SECRET"),
    ("400006", "The requested ip address is not in the api whitelist", "whitelist"),
    ("400007", "Access Denied", "permission"),
]


@pytest.mark.parametrize("code,msg,names", CREDENTIAL_ERRORS)
def test_credential_errors_say_which_credential(stub, code, msg, names):
    stub.routes[("GET", "/api/v1/timestamp")] = (200, rest_body("GET /api/v1/timestamp"))
    stub.routes[("POST", "/api/v1/bullet-private")] = (401, json.dumps({"code": code,
                                                                          "msg": msg}))
    with pytest.raises(InvalidCredentials) as e:
        KucoinRest(stub.url, creds()).bullet_private()
    assert isinstance(e.value, CredentialError)
    text = str(e.value)
    assert names in text and code in text and msg in text
    assert "POST /api/v1/bullet-private" in text
    for value in (KEY, SECRET, PASSPHRASE, passphrase_header(SECRET, PASSPHRASE, 2)):
        assert value not in text
    if code == "400004":
        assert "key_version" in text


@pytest.mark.parametrize("status,body", [
    (429, '{"code":"429000","msg":"Too Many Requests"}'),
    (200, '{"code":"429000","msg":"Too Many Requests"}'),
    (429, "<html>slow down</html>"),
])
def test_rate_limits_are_their_own_error(stub, status, body):
    stub.routes[("POST", "/api/v1/bullet-public")] = (status, body)
    with pytest.raises(RateLimited, match="rate limited"):
        KucoinRest(stub.url).bullet_public()


def test_transient_failures(stub):
    stub.routes[("GET", "/api/v2/symbols")] = (503, "<html>maintenance</html>")
    with pytest.raises(TransientError, match="HTTP 503"):
        KucoinRest(stub.url).symbols()
    stub.routes[("GET", "/api/v2/symbols")] = (200, "not json")
    with pytest.raises(KucoinError, match="unexpected answer") as e:
        KucoinRest(stub.url).symbols()
    assert not isinstance(e.value, TransientError)
    closed = KucoinStub()
    url = closed.url
    closed.close()
    with pytest.raises(TransientError, match="cannot reach"):
        KucoinRest(url, timeout=2).symbols()


def test_bullet_without_token_is_an_error(stub):
    stub.routes[("POST", "/api/v1/bullet-public")] = (200, '{"code":"200000","data":{}}')
    with pytest.raises(KucoinError, match="no token"):
        KucoinRest(stub.url).bullet_public()


def test_a_proxy_in_the_environment_is_bypassed_for_127_0_0_1(stub, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    stub.routes[("GET", "/api/v1/timestamp")] = (200, rest_body("GET /api/v1/timestamp"))
    assert KucoinRest(stub.url).server_time() > 0


def test_big_integers_stay_exact(stub):
    stub.routes[("GET", "/api/v2/symbols")] = (200, '{"code":"200000","data":[{"symbol":'
                                                     '"A-B","tradeId":11029373945659392}]}')
    assert KucoinRest(stub.url).symbols()[0]["tradeId"] == 11029373945659392
    assert msgspec.json.decode(b"11029373945659392") == 11029373945659392
