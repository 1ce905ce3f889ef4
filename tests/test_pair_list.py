"""Kraken's current pair list: fetched by `recorder pairs --update`, read by config validation.

The AssetPairs answer served here is a real one (cryptofeed's 2021 capture, read in place):
304 pairs, most of them missing from the bundled table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recorder.core.config import ConfigError, load_config
from recorder.exchanges.kraken.pair_list import PairListError, parse_asset_pairs
from recorder.exchanges.kraken.pairs import PAIRS, find_pair
from tests.captures import DATA

ROOT = Path(__file__).resolve().parents[1]


def _real_asset_pairs() -> bytes:
    line = (DATA / "cryptofeed" / "KRAKEN.0").read_text().splitlines()[0]
    assert line.startswith("https://api.kraken.com/0/public/AssetPairs")
    return line.split(": ", 1)[1].encode()


@pytest.fixture
def rest_server():
    body = _real_asset_pairs()
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", paths
    server.shutdown()


def _recorder(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MARKET_RECORDER_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "recorder", *args], capture_output=True,
                          text=True, env=env, timeout=60, cwd=ROOT)


def _config(tmp_path: Path, symbols: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text('[exchange]\nname = "kraken"\napi = "v2"\n\n'
                    f'[[subscribe]]\nchannel = "trade"\nsymbols = {symbols}\n')
    return path


def test_parse_real_asset_pairs():
    pairs = parse_asset_pairs(json.loads(_real_asset_pairs()))
    # Values as the 2021 answer states them.
    aave = pairs["AAVE/AUD"]
    assert (aave.wsname, aave.rest_id, aave.price_decimals, aave.qty_decimals,
            aave.ordermin) == ("AAVE/AUD", "AAVEAUD", 2, 8, "0.1")
    btc = pairs["BTC/USD"]  # listed as XBT/USD, canonical BTC/USD
    assert (btc.wsname, btc.rest_id) == ("XBT/USD", "XXBTZUSD")
    assert all(p.wsname for p in pairs.values())
    assert len(pairs) > 250 and find_pair("AAVE/AUD") is None


def test_parse_rejects_an_error_answer():
    with pytest.raises(PairListError, match="EQuery:Unknown asset pair"):
        parse_asset_pairs({"error": ["EQuery:Unknown asset pair"]})


def test_update_then_configs_accept_every_listed_pair(tmp_path, rest_server, monkeypatch):
    url, paths = rest_server
    cache = tmp_path / "cache"
    cfg = _config(tmp_path, '["AAVE/AUD", "XBT/USD"]')
    before = _recorder("run", str(cfg), "--duration", "1", cache=cache)
    assert before.returncode == 2
    assert before.stderr.count("\n") == 1
    assert "'AAVE/AUD' is not a pair Kraken lists" in before.stderr
    assert "`recorder pairs --update`" in before.stderr

    updated = _recorder("pairs", "--update", "--rest-url", url, "--search", "aave/a",
                        cache=cache)
    assert updated.returncode == 0, updated.stderr
    assert paths == ["/0/public/AssetPairs"]
    assert "pairs from " + url in updated.stderr
    assert "AAVE/AUD" in updated.stdout and "cached" in updated.stdout
    assert "XBT/USD" not in updated.stdout  # --search filters

    monkeypatch.setenv("MARKET_RECORDER_CACHE", str(cache))
    loaded = load_config(cfg)
    assert loaded.subscriptions[0].symbols == ("AAVE/AUD", "BTC/USD")
    with pytest.raises(ConfigError, match="fetched by `recorder pairs --update`"):
        load_config(_config(tmp_path, '["NOPE/USD"]'))


def test_update_failure_is_one_line(tmp_path):
    out = _recorder("pairs", "--update", "--rest-url", "http://127.0.0.1:9", cache=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith("error: /0/public/AssetPairs: cannot reach "
                                 "http://127.0.0.1:9: ")
    assert out.stderr.count("\n") == 1
    assert not (tmp_path / "kraken-asset-pairs.json").exists()


def test_update_from_the_simulator(tmp_path):
    from recorder.simulator.testing import SimulatorProcess

    with SimulatorProcess(["--seed", "1"]) as sim:
        out = _recorder("pairs", "--update", "--rest-url", sim.urls["rest"], cache=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "BTC/USD        XBT/USD               1      8  bundled+cached" in out.stdout
    assert f"{len(PAIRS)} pairs from " in out.stderr  # all the simulator lists


def test_an_unknown_pair_is_looked_up_once_at_the_configured_rest_endpoint(tmp_path,
                                                                          rest_server):
    """Neither bundled nor cached: the config's REST endpoint is asked once (design.md)."""
    url, paths = rest_server
    cfg = tmp_path / "remote.toml"
    cfg.write_text(f'[exchange]\nname = "kraken"\nrest_url = "{url}"\n'
                   '[[subscribe]]\nchannel = "trade"\nsymbols = ["AAVE/AUD", "KSM/XBT"]\n')
    loaded = load_config(cfg)
    assert loaded.subscriptions[0].symbols == ("AAVE/AUD", "KSM/BTC")
    assert paths == ["/0/public/AssetPairs"]  # one look-up for both names
    cfg.write_text(f'[exchange]\nname = "kraken"\nrest_url = "{url}"\n'
                   '[[subscribe]]\nchannel = "trade"\nsymbols = ["NOPE/USD"]\n')
    with pytest.raises(ConfigError, match="'NOPE/USD' is not a pair Kraken lists"):
        load_config(cfg)
    # Unreachable: not found, never an exception other than the config error.
    cfg.write_text('[exchange]\nname = "kraken"\nrest_url = "http://127.0.0.1:9"\n'
                   '[[subscribe]]\nchannel = "trade"\nsymbols = ["AAVE/AUD"]\n')
    with pytest.raises(ConfigError, match="'AAVE/AUD' is not a pair Kraken lists"):
        load_config(cfg)
