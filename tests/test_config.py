"""Config validation: every mistake is named with its file, key and what is allowed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recorder.core.config import ConfigError, load_config

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
    (GOOD + "\n[output]\nbook_checkpoint = 'often'\n", "output.book_checkpoint",
     "'often' is not a duration; use a number with s, m, h or d, e.g. \"1m\" or \"30s\", "
     "or \"0\" for no checkpoints"),
    (GOOD + "\n[output]\nbook_checkpoint = '-5s'\n", "output.book_checkpoint",
     "is not a duration"),
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


@pytest.mark.parametrize("text,seconds", [(None, 60), ("30s", 30), ("2h", 7200), ("0", 0)])
def test_book_checkpoint_interval(tmp_path, text, seconds):
    body = GOOD if text is None else GOOD + f"\n[output]\nbook_checkpoint = '{text}'\n"
    assert load_config(_write(tmp_path, body)).book_checkpoint_seconds == seconds


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


# One wrong-typed value for every key: (section, key, bad TOML value, message fragment).
# ``section`` "subscribe" means the first [[subscribe]] entry of GOOD (a book).
TYPE_CASES = [
    ("exchange", "name", "1", "1 is not supported; allowed: kraken"),
    ("exchange", "api", "2", "2 is not supported; allowed: v1, v2"),
    ("exchange", "url", "5", "must be a non-empty string, got 5"),
    ("exchange", "auth_url", "true", "must be a non-empty string, got True"),
    ("exchange", "rest_url", "[]", "must be a non-empty string, got []"),
    ("output", "path", "1", "must be a non-empty string, got 1"),
    ("output", "rotate", "3600", "must be a non-empty string, got 3600"),
    ("output", "raw", "'yes'", "must be true or false, got 'yes'"),
    ("output", "max_file_mb", "1.5", "must be an integer, got 1.5"),
    ("output", "journal_interval", "'1s'", "must be a number, got '1s'"),
    ("output", "book_checkpoint", "60", "must be a non-empty string, got 60"),
    ("output", "spool", "1", "must be a non-empty string, got 1"),
    ("output", "spool_max_mb", "0.5", "must be an integer, got 0.5"),
    ("output", "upload_wait", "'8s'", "must be a number, got '8s'"),
    ("output", "catalog", "1", "must be a non-empty string, got 1"),
    ("credentials", "api_key_env", "1", "must be a non-empty string, got 1"),
    ("credentials", "api_secret_env", "{a = 1}", "must be a non-empty string"),
    ("credentials", "secrets_file", "false", "must be a non-empty string, got False"),
    ("connection", "stale_after", "'10'", "must be a number, got '10'"),
    ("connection", "backoff_initial", "true", "must be a number, got True"),
    ("connection", "backoff_max", "[30]", "must be a number, got [30]"),
    ("connection", "ping_interval", "'30s'", "must be a number, got '30s'"),
    ("connection", "resync_timeout", "'10'", "must be a number, got '10'"),
    ("connection", "resync_attempts", "2.5", "must be an integer, got 2.5"),
    ("connection", "max_connection_age", "30", "must be a non-empty string, got 30"),
    ("connection", "backfill", '"yes"', "must be true or false, got 'yes'"),
    ("connection", "redundancy", "3", "1 or 2 connections carry the trades, got 3"),
    ("connection", "topics_per_connection", "'3'", "must be an integer, got '3'"),
    ("connection", "connections_per_process", "2.5", "must be an integer, got 2.5"),
    ("connection", "backfill_max_span", '"a day"',
     "'a day' is not a duration; use a number with s, m, h or d"),
    ("credentials", "api_passphrase_env", "'P'", "kraken does not use it"),
    ("credentials", "key_version", "2", "kraken does not use it"),
    ("subscribe", "channel", "1", "1 is not a channel; allowed: trade, book"),
    ("subscribe", "symbols", "[1, 2]", "must be a non-empty list of pair names"),
    ("subscribe", "depth", "10.0", "10.0 is not a book depth Kraken supports"),
    ("subscribe", "interval", "'5'", "'5' is not an ohlc interval Kraken supports"),
]


def _with_value(section: str, key: str, value: str) -> str:
    if section == "subscribe":
        body = GOOD
        if key == "interval":  # only the ohlc channel takes one
            body = body.replace('channel = "book"', 'channel = "ohlc"').replace(
                "depth = 25\n", "")
        lines = [ln for ln in body.splitlines() if not ln.startswith(f"{key} =")]
        i = lines.index("[[subscribe]]")
        return "\n".join(lines[:i + 1] + [f"{key} = {value}"] + lines[i + 1:]) + "\n"
    if section == "exchange":
        lines = [ln for ln in GOOD.splitlines() if not ln.startswith(f"{key} =")]
        i = lines.index("[exchange]")
        return "\n".join(lines[:i + 1] + [f"{key} = {value}"] + lines[i + 1:]) + "\n"
    return GOOD + f"\n[{section}]\n{key} = {value}\n"


def test_every_key_has_a_type_case():
    from recorder.core.config import _SECTIONS

    covered = {(sec, key) for sec, key, _, _ in TYPE_CASES}
    assert covered == {(sec, key) for sec, keys in _SECTIONS.items() for key in keys}


@pytest.mark.parametrize("section,key,value,fragment", TYPE_CASES,
                         ids=[f"{c[0]}.{c[1]}" for c in TYPE_CASES])
def test_wrong_type_of_each_key(tmp_path, section, key, value, fragment):
    path = _write(tmp_path, _with_value(section, key, value))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    want = f"subscribe[0].{key}" if section == "subscribe" else f"{section}.{key}"
    assert info.value.key == want
    assert fragment in info.value.message
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text,key,fragment", [
    ("exchange = 'kraken'\n" + GOOD.replace("[exchange]\nname = \"kraken\"\napi = \"v2\"\n", ""),
     "exchange", "must be a table ([exchange])"),
    ("output = 1\n" + GOOD, "output", "must be a table ([output])"),
    ("[exchange]\nname = 'kraken'\n[subscribe]\nchannel = 'trade'\n", "subscribe",
     "must be an array of tables ([[subscribe]])"),
    ("subscribe = [1, 2]\n[exchange]\nname = 'kraken'\n", "subscribe",
     "must be an array of tables ([[subscribe]])"),
])
def test_wrong_type_of_a_section(tmp_path, text, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert info.value.key == key and fragment in info.value.message


@pytest.mark.parametrize("text,key,fragment", CASES)
def test_every_config_error_is_one_line(tmp_path, text, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert "\n" not in str(info.value) and str(info.value).strip() == str(info.value)


def test_toml_syntax_error_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, '[exchange]\nname = "kraken\n'))
    assert "not valid TOML" in str(info.value) and "\n" not in str(info.value)


FILLS = "\n[[subscribe]]\nchannel = 'fills'\n"
# One case per category through the real CLI: (config text, key, message fragment).
CLI_CASES = {
    "unknown key": (GOOD.replace("depth = 25", "depth = 25\ndeep = true"),
                    "subscribe[0].deep", "unknown key; allowed: channel, depth, interval"),
    "wrong type": (GOOD + "\n[output]\nraw = 1\n", "output.raw",
                   "must be true or false, got 1"),
    "unknown channel": (GOOD.replace('channel = "book"', 'channel = "quotes"'),
                        "subscribe[0].channel", "'quotes' is not a channel; allowed: trade"),
    "unlisted pair": (GOOD.replace('"XBT/EUR"', '"NOPE/USD"'), "subscribe[0].symbols",
                      "'NOPE/USD' is not a pair Kraken lists"),
    "unsupported depth": (GOOD.replace("depth = 25", "depth = 20"), "subscribe[0].depth",
                          "allowed: 10, 25, 100, 500, 1000"),
    "unsupported interval": (GOOD.replace('channel = "book"', 'channel = "ohlc"').replace(
        "depth = 25", "interval = 2"), "subscribe[0].interval",
        "allowed: 1, 5, 15, 30, 60, 240, 1440, 10080, 21600"),
    "missing credentials": (GOOD + FILLS, "credentials",
                            'the private channel "fills" needs credentials'),
    "credential variable not set": (
        GOOD + "\n[credentials]\napi_key_env = 'MR_UNSET_KEY'\n"
        "api_secret_env = 'MR_UNSET_SECRET'\n" + FILLS, "credentials.api_key_env",
        "environment variable MR_UNSET_KEY is not set"),
    "no subscriptions": ("[exchange]\nname = 'kraken'\n", "subscribe",
                         "no [[subscribe]] entries; add at least one"),
}


@pytest.mark.parametrize("category", list(CLI_CASES))
def test_cli_reports_each_kind_of_config_error_in_one_line_and_exits_2(tmp_path, category):
    text, key, fragment = CLI_CASES[category]
    path = _write(tmp_path, text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MR_UNSET")}
    proc = subprocess.run([sys.executable, "-m", "recorder", "run", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {path}: {key}: "), lines[0]
    assert fragment in lines[0]
    assert not (tmp_path / "data").exists(), "nothing starts before the config is valid"


def test_cli_reports_config_error_and_exits_2(tmp_path):
    path = _write(tmp_path, GOOD.replace("depth = 25", "depth = 42"))
    proc = subprocess.run([sys.executable, "-m", "recorder", "run", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and "subscribe[0].depth" in lines[0]
    assert "allowed: 10, 25, 100, 500, 1000" in lines[0]


def test_backfill_is_on_by_default_and_off_for_a_custom_url_without_rest_url(tmp_path):
    """Repairing gaps reads the REST history at rest_url: a config pointing url at another
    server (the simulator) without its rest_url would repair from the real exchange."""
    subs = '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD"]\n'

    def load(exchange: str, connection: str = "") -> object:
        path = tmp_path / "c.toml"
        path.write_text(f'[exchange]\nname = "kraken"\n{exchange}\n[connection]\n'
                        f'{connection}\n{subs}')
        return load_config(path)

    assert load("").backfill is True and load("").backfill_max_span == 86_400
    assert load('url = "ws://127.0.0.1:1/v2"').backfill is False
    both = 'url = "ws://127.0.0.1:1/v2"\nrest_url = "http://127.0.0.1:2"'
    assert load(both).backfill is True
    assert load("", 'backfill = false\nbackfill_max_span = "2h"').backfill is False
    assert load("", 'backfill_max_span = "2h"').backfill_max_span == 7200
    with pytest.raises(ConfigError) as e:
        load('url = "ws://127.0.0.1:1/v2"', "backfill = true")
    assert e.value.key == "connection.backfill" and "needs exchange.rest_url" in str(e.value)


def test_redundancy_is_one_or_two_connections(tmp_path):
    path = tmp_path / "c.toml"
    base = '[exchange]\nname = "kraken"\n[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD"]\n'
    path.write_text(base)
    assert load_config(path).redundancy == 1
    path.write_text(base + "[connection]\nredundancy = 2\n")
    assert load_config(path).redundancy == 2
    for bad, says in (("0", "must be at least 1"), ("1.5", "must be an integer")):
        path.write_text(base + f"[connection]\nredundancy = {bad}\n")
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert e.value.key == "connection.redundancy" and says in str(e.value)
