"""KuCoin symbol names and look-up: bundled list, cached list, one REST look-up at most."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recorder.exchanges.kucoin import symbols
from recorder.exchanges.kucoin.common import canonical, wire
from tests.fakes import KucoinStub, rest_body

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kucoin"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(symbols.CACHE_ENV, str(tmp_path))
    return tmp_path / symbols.CACHE_NAME


@pytest.fixture
def stub():
    s = KucoinStub()
    yield s
    s.close()


def _rest_items() -> list[dict]:
    entries = json.loads((DATA / "rest.json").read_text())["endpoints"]["GET /api/v2/symbols"]
    return entries[0]["body"]["data"] + entries[1]["data_items"]


def test_names():
    assert canonical("BTC-USDT") == canonical("BTC/USDT") == "BTC/USDT"
    assert wire("BTC/USDT") == wire("BTC-USDT") == "BTC-USDT"
    assert canonical("APE3S-USDT") == "APE3S/USDT"


def test_bundled_increments_are_kucoins():
    for item in _rest_items():
        sym = symbols.BUNDLED[canonical(item["symbol"])]
        assert (sym.wire, sym.price_increment, sym.base_increment) == (
            item["symbol"], item["priceIncrement"], item["baseIncrement"])
    assert all(s.wire == wire(name) for name, s in symbols.BUNDLED.items())


def test_lookup_offline(cache):
    for name in ("BTC/USDT", "BTC-USDT", "btc-usdt", " ETH/BTC "):
        assert symbols.lookup_symbol(name, None) is not None
    assert symbols.lookup_symbol("BTC-USDT") == "BTC/USDT"
    assert symbols.lookup_symbol("NOPE/USDT", None) is None
    assert symbols.lookup_symbol("", None) is None
    assert "recorder pairs --update" in symbols.unknown_symbol_hint()


def test_cache_round_trip(cache):
    parsed = symbols.parse_symbols(_rest_items() + [dict(_rest_items()[0], symbol="ZZZ-BTC",
                                                         baseCurrency="ZZZ",
                                                         quoteCurrency="BTC")])
    path = symbols.save_symbol_list(parsed, "https://api.kucoin.com")
    assert path == cache and oct(path.stat().st_mode & 0o777) == "0o600"
    found, meta = symbols.read_symbol_list()
    assert found == parsed and meta["source"] == "https://api.kucoin.com"
    assert symbols.lookup_symbol("ZZZ-BTC", None) == "ZZZ/BTC"
    assert "1 symbols" not in symbols.unknown_symbol_hint()
    assert f"{len(parsed)} symbols" in symbols.unknown_symbol_hint()
    cache.write_text("{broken")
    with pytest.raises(symbols.SymbolListError, match="recorder pairs --update"):
        symbols.read_symbol_list()
    assert symbols.lookup_symbol("ZZZ/BTC", None) is None  # a broken cache is no cache


def test_fetch_symbols(stub, cache):
    stub.routes[("GET", "/api/v2/symbols")] = (200, rest_body("GET /api/v2/symbols"))
    found = symbols.fetch_symbols(stub.url)
    assert list(found) == ["BTC/USDT"] and found["BTC/USDT"].enabled is True
    stub.routes[("GET", "/api/v2/symbols")] = (400, '{"code":"400100","msg":"Invalid Parameter."}')
    with pytest.raises(symbols.SymbolListError, match="400100"):
        symbols.fetch_symbols(stub.url)


def test_one_rest_lookup_before_refusing(stub, cache):
    items = [dict(_rest_items()[0], symbol=n) for n in ("PEPE-USDT", "WIF-USDT")]
    stub.routes[("GET", "/api/v2/symbols")] = (200, json.dumps({"code": "200000",
                                                                "data": items}))
    assert symbols.lookup_symbol("BTC/USDT", stub.url) == "BTC/USDT"
    assert stub.requests == [], "bundled names need no network"
    assert symbols.lookup_symbol("PEPE/USDT", stub.url) == "PEPE/USDT"
    assert symbols.lookup_symbol("WIF-USDT", stub.url) == "WIF/USDT"
    assert symbols.lookup_symbol("NOPE/USDT", stub.url) is None
    assert stub.paths() == ["GET /api/v2/symbols"]


def test_unreachable_rest_means_unknown(cache):
    dead = KucoinStub()
    url = dead.url
    dead.close()
    assert symbols.lookup_symbol("PEPE/USDT", url) is None
    assert symbols.lookup_symbol("BTC/USDT", url) == "BTC/USDT"
