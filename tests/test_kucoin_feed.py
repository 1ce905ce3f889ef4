"""The KuCoin public feed (what the runtime drives), its replay session and its spec, against
a local REST stub: fresh bullet per connect, subscribe messages within KuCoin's limits,
REST snapshots handed back as frames that a replay turns into the same rows."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from recorder.core.events import new_rows
from recorder.core.schema import column_index
from recorder.core.secrets import CredentialError
from recorder.exchanges.base import Feed, ReplaySession, Subscription
from recorder.exchanges.kucoin.book_rule import RULE
from recorder.exchanges.kucoin.feed import (
    ping_request,
    public_feed,
    refused_for_now,
    session_invalid,
    subscribe_requests,
)
from recorder.exchanges.kucoin.parse import decode
from recorder.exchanges.kucoin.replay import replay_session
from recorder.exchanges.kucoin.spec import SPEC
from tests.fakes import KucoinStub, rest_body

ENV = {"T_KC_KEY": "test-key-0001", "T_KC_SECRET": "test-secret-0002",
       "T_KC_PASS": "test-passphrase-0003"}


@pytest.fixture
def stub():
    s = KucoinStub()
    yield s
    s.close()


def _bullet(token: str, endpoints: list[str]) -> str:
    body = json.loads(rest_body("POST /api/v1/bullet-public"))
    server = body["data"]["instanceServers"][0]
    body["data"]["token"] = token
    body["data"]["instanceServers"] = [{**server, "endpoint": e} for e in endpoints]
    return json.dumps(body)


def _config(stub, **kw):
    base = dict(rest_url=stub.url, url="", api_key_env=None, api_secret_env=None,
                api_passphrase_env=None, secrets_file=None, key_version=2)
    base.update(kw)
    return SimpleNamespace(**base)


SUBS = [Subscription("trade", ("BTC/USDT", "ETH/USDT")), Subscription("book", ("BTC/USDT",)),
        Subscription("book", ("ETH/USDT",), depth=5), Subscription("spread", ("BTC/USDT",)),
        Subscription("ohlc", ("BTC/USDT", "ETH/USDT"), interval=60),
        Subscription("ticker", ("BTC/USDT",))]


def test_subscribe_requests():
    reqs = [json.loads(r) for r in subscribe_requests(SUBS)]
    assert [r["topic"] for r in reqs] == [
        "/market/match:BTC-USDT,ETH-USDT", "/market/level2:BTC-USDT",
        "/spotMarket/level2Depth5:ETH-USDT", "/market/ticker:BTC-USDT",
        "/market/candles:BTC-USDT_1hour", "/market/candles:ETH-USDT_1hour",
        "/market/snapshot:BTC-USDT"]
    assert all(r["type"] == "subscribe" and r["privateChannel"] is False
               and r["response"] is True for r in reqs)
    assert len({r["id"] for r in reqs}) == len(reqs)
    assert [r["id"].split(".")[1] for r in reqs] == ["trade", "book", "book", "spread", "ohlc",
                                                     "ohlc", "ticker"]


def test_at_most_100_symbols_per_subscribe_message():
    names = tuple(f"C{i}/USDT" for i in range(250))
    reqs = [json.loads(r) for r in subscribe_requests([Subscription("trade", names)])]
    sizes = [len(r["topic"].split(":")[1].split(",")) for r in reqs]
    assert sizes == [100, 100, 50]
    assert ",".join(r["topic"].split(":")[1] for r in reqs) == ",".join(
        n.replace("/", "-") for n in names)


def test_prepare_takes_a_fresh_bullet_every_time(stub):
    servers = ["wss://a.example/", "wss://b.example/"]
    stub.routes[("POST", "/api/v1/bullet-public")] = [(200, _bullet("tok-1", servers)),
                                                      (200, _bullet("tok-2", servers))]
    feed = public_feed(_config(stub), None, SUBS)
    assert isinstance(feed, Feed) and feed.exchange == "kucoin"
    plans = [feed.prepare() for _ in range(2)]
    for plan, token in zip(plans, ("tok-1", "tok-2"), strict=True):
        endpoint, _, query = plan.url.partition("?")
        assert endpoint in servers
        params = dict(p.split("=", 1) for p in query.split("&"))
        assert params["token"] == token and params["connectId"]
        assert plan.ready_kind == "welcome"
        assert (plan.ping_interval, plan.pong_timeout) == (18.0, 10.0)
        assert plan.requests == subscribe_requests(SUBS)
        assert plan.acks_expected == len(plan.requests) == 7
        ((endpoint_name, text),) = plan.raw_records
        assert endpoint_name == "POST /api/v1/bullet-public"
        assert token not in text and json.loads(text)["data"]["token"] == "<redacted>"
    assert plans[0].url.split("connectId=")[1] != plans[1].url.split("connectId=")[1]
    assert plans[0].parse.__self__ is not plans[1].parse.__self__, "a parser per connection"
    assert stub.paths() == ["POST /api/v1/bullet-public"] * 2


def test_requests_are_paced_below_kucoins_uplink_limit(stub):
    stub.routes[("POST", "/api/v1/bullet-public")] = (200, _bullet("tok", ["wss://x/"]))
    rate = public_feed(_config(stub), None, SUBS).prepare().max_messages_per_second
    # The collector sends one second's worth at once, then `rate` a second: within any 10 s
    # that is 11 x rate, and the pings (every 5 s at most) must fit in KuCoin's 100 too.
    assert rate and 11 * rate + 3 <= 100


def test_url_override_still_gets_the_token(stub):
    stub.routes[("POST", "/api/v1/bullet-public")] = (200, _bullet("tok", ["wss://x/"]))
    plan = public_feed(_config(stub), "ws://127.0.0.1:1/ws", SUBS).prepare()
    assert plan.url.startswith("ws://127.0.0.1:1/ws?token=tok&connectId=")
    plan = public_feed(_config(stub, url="ws://127.0.0.1:2/x?a=1"), None, SUBS).prepare()
    assert plan.url.startswith("ws://127.0.0.1:2/x?a=1&token=tok&connectId=")


def test_feed_fields():
    feed = public_feed(SimpleNamespace(rest_url="http://127.0.0.1:1", url=""), None, SUBS)
    assert feed.book_rule is RULE and feed.book_resync is None
    assert feed.book_depths == {"ETH/USDT": 5}
    assert feed.ping(42) == ping_request(42) == '{"id":"42","type":"ping"}'
    assert json.loads(feed.ping(7)) == {"id": "7", "type": "ping"}
    key = feed.dedupe_keys["trades"]
    row = tuple("BTC/USDT" if i == column_index("trades", "symbol") else
                "abc" if i == column_index("trades", "trade_id") else None for i in range(11))
    assert key(row) == ("BTC/USDT", "abc")
    assert feed.refused_for_now is refused_for_now and feed.session_invalid is session_invalid


def test_refusals():
    assert refused_for_now("exceed max permits per second")
    assert refused_for_now("exceed max subscription count limitation of 100 per time")
    assert not refused_for_now("topic /market/level2:BSV-BTC is not found")
    assert not refused_for_now(None)
    assert session_invalid("token is expired") and not session_invalid("exceed max permits")


def _feed_snapshot(stub, config, symbol="BTC/USDT"):
    feed = public_feed(config, None, SUBS)
    endpoint, text = feed.fetch_snapshot(symbol, 0)
    return feed, endpoint, text


def test_public_snapshot_frame(stub):
    body = rest_body("GET level2 snapshot (endpoint not recorded)")
    stub.routes[("GET", "/api/v1/market/orderbook/level2_100")] = (200, body)
    feed, endpoint, text = _feed_snapshot(stub, _config(stub))
    assert endpoint == "GET /api/v1/market/orderbook/level2_100"
    data = json.loads(body)["data"]
    assert json.dumps(data, separators=(",", ":")) in text, "KuCoin's bytes, spliced"
    frame = json.loads(text)
    assert frame["type"] == "rest_snapshot" and frame["depth"] == 100
    assert frame["topic"] == "/market/level2:BTC-USDT" and frame["endpoint"] == endpoint
    out = new_rows()
    assert feed.parse(decode(text.encode()), 7, 3, out) is None
    rows = out["book"]
    assert [(r[4], r[5], r[6]) for r in rows] == (
        [("bid", p, q) for p, q in data["bids"]] + [("ask", p, q) for p, q in data["asks"]])
    assert {(r[column_index("book", "sequence")], r[column_index("book", "depth")],
             r[column_index("book", "ts_exchange")]) for r in rows} == {
        (int(data["sequence"]), 100, data["time"] * 1000)}


def test_full_snapshot_with_credentials(stub, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    stub.routes[("GET", "/api/v1/timestamp")] = (200, rest_body("GET /api/v1/timestamp"))
    stub.routes[("GET", "/api/v3/market/orderbook/level2")] = (
        200, rest_body("GET /api/v3/market/orderbook/level2"))
    config = _config(stub, api_key_env="T_KC_KEY", api_secret_env="T_KC_SECRET",
                     api_passphrase_env="T_KC_PASS")
    feed, endpoint, text = _feed_snapshot(stub, config)
    assert endpoint == "GET /api/v3/market/orderbook/level2"
    assert json.loads(text)["depth"] is None
    assert stub.requests[-1]["headers"]["KC-API-KEY"] == ENV["T_KC_KEY"]
    out = new_rows()
    feed.parse(decode(text.encode()), 7, 3, out)
    assert {r[column_index("book", "depth")] for r in out["book"]} == {None}
    # Credentials named but not set: refused with the variable's name.
    monkeypatch.delenv("T_KC_PASS")
    with pytest.raises(CredentialError, match="T_KC_PASS"):
        public_feed(config, None, SUBS).fetch_snapshot("BTC/USDT", 0)


def test_replay_gives_the_live_rows(stub):
    stub.routes[("POST", "/api/v1/bullet-public")] = (200, _bullet("tok", ["wss://x/"]))
    stub.routes[("GET", "/api/v1/market/orderbook/level2_100")] = (200, json.dumps({
        "code": "200000", "data": {"time": 1, "sequence": "10", "bids": [["99", "1"]],
                                   "asks": [["101", "2"]]}}))
    feed = public_feed(_config(stub), None, SUBS)
    plan = feed.prepare()
    frames = [b'{"id":"1","type":"welcome"}', b'{"id":"2.book","type":"ack"}']
    frames += [json.dumps({"type": "message", "topic": "/market/level2:BTC-USDT",
                           "subject": "trade.l2update", "data": {
                               "changes": {"asks": [["101", str(n), str(n)]], "bids": []},
                               "sequenceEnd": n, "sequenceStart": n, "symbol": "BTC-USDT",
                               "time": 1700000000000 + n}}).encode() for n in range(9, 13)]
    frames.insert(4, feed.fetch_snapshot("BTC/USDT", 0)[1].encode())
    frames.append(b'{"type":"message","topic":"/market/match:BTC-USDT","data":{"symbol":'
                  b'"BTC-USDT","sequence":"5","side":"buy","size":"1","price":"100",'
                  b'"time":"1700000000000000001","tradeId":"5","type":"match"}}')
    live = new_rows()
    controls = [plan.parse(feed.decode(f), 100 + i, i, live) for i, f in enumerate(frames)]
    assert [c.kind if c else None for c in controls][:3] == ["welcome", "subscribed",
                                                             "snapshot_needed"]
    session = replay_session(plan.url.split("?")[0])
    assert isinstance(session, ReplaySession) and session.book_rule is RULE
    replayed = new_rows()
    for i, (_endpoint, text) in enumerate(plan.raw_records):
        session.parse(session.decode(text.encode()), 50 + i, -1, replayed)
    for i, f in enumerate(frames):
        session.parse(session.decode(f), 100 + i, i, replayed)
    assert replayed == live
    assert [r[column_index("book", "sequence")] for r in live["book"]] == [10, 10, 11, 12]


def test_spec():
    assert SPEC.name == "kucoin" and SPEC.apis == ("spot",)
    assert SPEC.public_channels == ("trade", "book", "spread", "ohlc", "ticker")
    assert SPEC.private_channels == ("fills",)
    assert SPEC.book_depths == (5, 50) and SPEC.default_book_depth is None
    assert SPEC.ohlc_intervals == (1, 3, 15, 30, 60, 120, 240, 360, 480, 720, 1440, 10080)
    assert SPEC.default_urls == {"spot": ("", "")}
    assert SPEC.default_rest_url == "https://api.kucoin.com"
    assert SPEC.credential_keys == ("api_key_env", "api_secret_env", "api_passphrase_env",
                                    "key_version")
    assert SPEC.required_credentials == ("api_key_env", "api_secret_env",
                                         "api_passphrase_env")
    assert SPEC.default_max_connection_age == 23.5 * 3600
    assert (SPEC.max_topics_per_message, SPEC.max_topics_per_connection) == (100, 300)
    assert SPEC.lookup_symbol("BTC-USDT", None) == "BTC/USDT"
    assert "BTC/USDT" in SPEC.unknown_symbol_hint()
    assert isinstance(SPEC.replay_session("wss://x/"), ReplaySession)
    feed = SPEC.public_feed(SimpleNamespace(rest_url="http://127.0.0.1:1", url=""), None, SUBS)
    assert isinstance(feed, Feed)


def test_spec_import_is_cheap():
    code = ("import sys, recorder.exchanges.kucoin.spec as s; "
            "print(sorted(m for m in ('msgspec', 'pyarrow', 'urllib.request', 'http.client',"
            " 'recorder.exchanges.kucoin.parse') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30)
    assert out.stdout.strip() == "[]"


def test_check_subscriptions():
    check = SPEC.check_subscriptions
    S = SimpleNamespace
    ok = [S(channel="book", symbols=("BTC/USDT",), depth=None, interval=None),
          S(channel="book", symbols=("ETH/USDT",), depth=5, interval=None),
          S(channel="ohlc", symbols=("BTC/USDT",), depth=None, interval=1),
          S(channel="ohlc", symbols=("BTC/USDT",), depth=None, interval=60),
          S(channel="spread", symbols=("BTC/USDT",), depth=None, interval=None),
          S(channel="ticker", symbols=("BTC/USDT",), depth=None, interval=None)]
    assert check("spot", ok) == []
    twice = ok + [S(channel="book", symbols=("BTC/USDT",), depth=50, interval=None)]
    ((i, key, msg),) = check("spot", twice)
    assert (i, key) == (6, "symbols") and "subscribe[0]" in msg and "BTC/USDT" in msg
    same = ok + [S(channel="spread", symbols=("ETH/USDT", "BTC/USDT"), depth=None,
                   interval=None)]
    assert check("spot", same)[0][0] == 6


def test_check_credentials(monkeypatch):
    config = SimpleNamespace(api_key_env="T_KC_KEY", api_secret_env="T_KC_SECRET",
                             api_passphrase_env="T_KC_PASS", secrets_file=None, key_version=2)
    for k in ENV:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(CredentialError, match="T_KC_KEY"):
        SPEC.check_credentials(config)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    SPEC.check_credentials(config)
    SPEC.check_credentials(SimpleNamespace(rest_url="x"))  # none configured: nothing to check
