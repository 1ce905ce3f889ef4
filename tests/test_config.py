"""Config validation: every mistake is named with its file, key and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recorder.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
[exchange]
name = "kraken"
api = "v2"

[[subscribe]]
channel = "book"
symbols = ["BTC/USD", "XBT/EUR"]
depth = 25
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "job.toml"
    p.write_text(text)
    return p


def test_shipped_configs_are_valid():
    for p in sorted((ROOT / "configs").glob("*.toml")):
        # Environment variables for credentials are checked when recording, not here.
        cfg = load_config(p, check_env=False)
        assert cfg.subscriptions, p


def test_good_config_canonicalises_symbols(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.api == "v2" and cfg.url == "wss://ws.kraken.com/v2"
    assert cfg.subscriptions[0].symbols == ("BTC/USD", "BTC/EUR")
    assert cfg.subscriptions[0].depth == 25
    assert cfg.rotate_seconds == 3600 and cfg.output_path == Path("data")


CASES = [
    (GOOD + "\n[output]\npathh = 'x'\n", "output.pathh", "unknown key; allowed: "),
    (GOOD + "\n[extra]\na = 1\n", "extra", "unknown section"),
    (GOOD.replace('api = "v2"', 'api = "v3"'), "exchange.api", "allowed: v1, v2"),
    (GOOD.replace('name = "kraken"', 'name = "binance"'), "exchange.name", "allowed: kraken"),
    (GOOD.replace("depth = 25", "depth = 42"), "subscribe[0].depth",
     "42 is not a book depth Kraken supports; allowed: 10, 25, 100, 500, 1000"),
    (GOOD.replace("depth = 25", 'depth = "10"'), "subscribe[0].depth", "allowed: 10"),
    (GOOD.replace('channel = "book"', 'channel = "orderbook"'), "subscribe[0].channel",
     "'orderbook' is not a channel; allowed: trade, book, spread, ohlc, ticker, fills"),
    (GOOD.replace('"XBT/EUR"', '"FOO/BAR"'), "subscribe[0].symbols",
     "'FOO/BAR' is not a pair Kraken lists"),
    (GOOD.replace('["BTC/USD", "XBT/EUR"]', '"BTC/USD"'), "subscribe[0].symbols",
     "must be a non-empty list"),
    (GOOD.replace('channel = "book"', 'channel = "ohlc"'), "subscribe[0].depth",
     "only the book channel takes a depth"),
    (GOOD + "\n[output]\nrotate = 'hourly'\n", "output.rotate", "is not a duration"),
    (GOOD + "\n[output]\nraw = 'yes'\n", "output.raw", "must be true or false"),
    (GOOD + "\n[[subscribe]]\nchannel = 'fills'\n", "credentials",
     "the private channel \"fills\" needs credentials"),
    (GOOD + "\n[[subscribe]]\nchannel = 'book'\nsymbols = ['BTC/USD']\ndepth = 100\n",
     "subscribe[1].symbols", "Kraken refuses a second book depth"),
    (GOOD.replace('api = "v2"', 'api = "v2"\nurl = "http://x"'), "exchange.url",
     "must start with ws:// or wss://"),
    ("[exchange]\nname = 'kraken'\n", "subscribe", "no [[subscribe]] entries"),
]


@pytest.mark.parametrize("text,key,fragment", CASES)
def test_config_errors_name_file_key_and_allowed(tmp_path, text, key, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.key == key
    assert fragment in err.message
    assert str(path) in str(err)


def test_interval_error(tmp_path):
    text = GOOD.replace('channel = "book"', 'channel = "ohlc"').replace("depth = 25",
                                                                         "interval = 7")
    with pytest.raises(ConfigError, match=r"subscribe\[0\]\.interval: 7 is not an ohlc "
                       r"interval Kraken supports \(minutes\); allowed: 1, 5, 15"):
        load_config(_write(tmp_path, text))


def test_v2_spread_and_ticker_on_one_symbol_refused(tmp_path):
    text = GOOD + "\n[[subscribe]]\nchannel='spread'\nsymbols=['ETH/USD']\n" \
                  "\n[[subscribe]]\nchannel='ticker'\nsymbols=['ETH/USD']\n"
    with pytest.raises(ConfigError, match="both spread and ticker"):
        load_config(_write(tmp_path, text))
    # v1 has a separate spread channel, so both are fine there.
    load_config(_write(tmp_path, text.replace('api = "v2"', 'api = "v1"')))


def test_missing_credential_env_named(tmp_path, monkeypatch):
    monkeypatch.delenv("MR_TEST_KEY", raising=False)
    text = GOOD + ("\n[credentials]\napi_key_env='MR_TEST_KEY'\napi_secret_env='MR_TEST_SEC'\n"
                   "\n[[subscribe]]\nchannel = 'fills'\n")
    with pytest.raises(ConfigError, match="environment variable MR_TEST_KEY is not set"):
        load_config(_write(tmp_path, text))


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[exchange\nname="))


def test_cli_reports_config_error_and_exits_2(tmp_path):
    path = _write(tmp_path, GOOD.replace("depth = 25", "depth = 42"))
    proc = subprocess.run([sys.executable, "-m", "recorder", "run", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and "subscribe[0].depth" in lines[0]
    assert "allowed: 10, 25, 100, 500, 1000" in lines[0]
