"""What ``recorder pairs`` and ``recorder token`` ask of KuCoin: the symbol list (bundled,
cached, fetched), a private WebSocket token signed with the configured key (against a local
stub, then the simulator as a real process), and the spec fields the runtime reads."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import websocket

from recorder.core.config import load_config
from recorder.core.secrets import CredentialError
from recorder.exchanges.base import ExchangeError, SymbolInfo
from recorder.exchanges.kucoin import commands, symbols
from recorder.exchanges.kucoin.spec import SPEC
from tests.fakes import KucoinStub, rest_body
from tests.sentinel import SENTINEL_KEY, SENTINEL_SECRET, WRONG_SECRET, assert_clean

ROOT = Path(__file__).resolve().parents[1]
PASSPHRASE = "kucoin-e2e-passphrase"
NAMES = {"api_key_env": "T_KC_KEY", "api_secret_env": "T_KC_SECRET",
         "api_passphrase_env": "T_KC_PASS"}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(symbols.CACHE_ENV, str(tmp_path))
    return tmp_path / symbols.CACHE_NAME


@pytest.fixture
def stub():
    s = KucoinStub()
    yield s
    s.close()


def _config(**kw):
    return SimpleNamespace(**{**NAMES, "secrets_file": None, "key_version": 2, **kw})


def _env(monkeypatch, secret: str = SENTINEL_SECRET) -> None:
    for var, value in (("T_KC_KEY", SENTINEL_KEY), ("T_KC_SECRET", secret),
                       ("T_KC_PASS", PASSPHRASE)):
        monkeypatch.setenv(var, value)


def _recorder(*args: str, env: dict[str, str] | None = None, cache: Path | None = None,
              umask: int | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KUCOIN_", "T_KC_"))}
    if cache is not None:
        full[symbols.CACHE_ENV] = str(cache)
    full.update(env or {})
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "recorder", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60, preexec_fn=pre)


# -- the spec ---------------------------------------------------------------------------------


def test_spec_hooks():
    assert SPEC.default_api == "spot"
    assert SPEC.public_uses_credentials is True
    assert SPEC.wire_name_label == "KuCoin name"
    assert SPEC.tardis_names("BTC/USDT") == [(None, "BTC-USDT")]
    assert SPEC.tardis_names("ETH/BTC") == [(None, "ETH-BTC")]
    assert SPEC.default_credential_env == ("KUCOIN_API_KEY", "KUCOIN_API_SECRET",
                                           "KUCOIN_API_PASSPHRASE")
    assert all(callable(h) for h in (SPEC.list_symbols, SPEC.update_symbols, SPEC.fetch_token))


def test_credentials_are_checked_before_a_public_connection(tmp_path):
    """A config with [credentials] whose variables are not set is refused at start-up, for
    public channels too (they would sign the full-depth snapshots): exit 2, one line."""
    cfg = tmp_path / "pub.toml"
    cfg.write_text('[exchange]\nname = "kucoin"\nrest_url = "http://127.0.0.1:9"\n'
                   '[credentials]\napi_key_env = "T_KC_KEY"\napi_secret_env = "T_KC_SECRET"\n'
                   'api_passphrase_env = "T_KC_PASS"\n'
                   '[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USDT"]\n')
    proc = _recorder("run", str(cfg), "--data", str(tmp_path / "data"), "--duration", "2",
                     env={"T_KC_KEY": SENTINEL_KEY, "T_KC_SECRET": SENTINEL_SECRET})
    assert proc.returncode == 2, proc.stderr
    assert "environment variable T_KC_PASS is not set" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_clean([proc.stdout, proc.stderr], where="the recorder's output")


# -- recorder pairs ---------------------------------------------------------------------------


def test_decimals():
    assert [commands.decimals(t) for t in ("0.1", "0.00000001", "1", "10", "0.0010", "1E-7")
            ] == [1, 8, 0, 0, 3, 7]
    assert [commands.decimals(t) for t in (None, "x", "0", "-1", "NaN")] == [None] * 5


def test_list_symbols_bundled_then_cached(cache):
    listed, line = commands.list_symbols()
    assert "none yet" in line and "--exchange kucoin --update" in line
    by_name = {s.symbol: s for s in listed}
    assert set(by_name) == set(symbols.BUNDLED)
    assert by_name["BTC/USDT"] == SymbolInfo("BTC/USDT", "BTC-USDT", 1, 8, "bundled")
    assert by_name["SOL/USDT"].price_decimals is None  # unknown, not guessed
    found = {"BTC/USDT": symbols.Symbol("BTC/USDT", "BTC-USDT", "BTC", "USDT", "0.1",
                                        "0.00000001", True),
             "SOL/USDT": symbols.Symbol("SOL/USDT", "SOL-USDT", "SOL", "USDT", "0.01",
                                        "0.0001", True),
             "PEPE/USDT": symbols.Symbol("PEPE/USDT", "PEPE-USDT", "PEPE", "USDT",
                                         "0.000000001", "1", True)}
    symbols.save_symbol_list(found, "http://kucoin.test")
    listed, line = commands.list_symbols()
    assert str(cache) in line and "3 symbols from http://kucoin.test" in line
    by_name = {s.symbol: s for s in listed}
    assert by_name["PEPE/USDT"] == SymbolInfo("PEPE/USDT", "PEPE-USDT", 9, 0, "cached")
    assert by_name["SOL/USDT"] == SymbolInfo("SOL/USDT", "SOL-USDT", 2, 4, "bundled+cached")
    assert by_name["ETH/USDT"].source == "bundled"
    assert [s.symbol for s in listed] == sorted(by_name)
    cache.write_text("{broken")
    with pytest.raises(ExchangeError, match="recorder pairs --update"):
        commands.list_symbols()


def test_update_symbols(stub, cache):
    stub.routes[("GET", "/api/v2/symbols")] = (200, rest_body("GET /api/v2/symbols"))
    text = commands.update_symbols(stub.url)
    assert text == f"1 symbols from {stub.url} cached in {cache}"
    assert cache.exists() and stat.S_IMODE(cache.stat().st_mode) == 0o600
    stub.routes[("GET", "/api/v2/symbols")] = (500, '{"code":"500000","msg":"Internal"}')
    with pytest.raises(ExchangeError, match="500000"):
        commands.update_symbols(stub.url)


def test_pairs_command_updates_from_the_simulator(tmp_path):
    from recorder.simulator.testing import SimulatorProcess

    with SimulatorProcess(["--seed", "1", "--pairs", "BTC-USDT,SOL-USDT,ETH-BTC"],
                          exchange="kucoin") as sim:
        out = _recorder("pairs", "--exchange", "kucoin", "--update", "--rest-url",
                        sim.urls["rest"], "--search", "usdt", cache=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"3 symbols from {sim.urls['rest']} cached in" in out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["symbol", "KuCoin", "name", "price", "dp", "qty", "dp",
                                "source"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["SOL/USDT"] == ["SOL-USDT", "2", "4", "bundled+cached"]
    assert rows["BTC/USDT"] == ["BTC-USDT", "1", "8", "bundled+cached"]
    assert rows["ETH/USDT"] == ["ETH-USDT", "2", "7", "bundled"]
    assert "ETH/BTC" not in rows  # --search
    cfg = tmp_path / "k.toml"
    cfg.write_text('[exchange]\nname = "kucoin"\n[[subscribe]]\nchannel = "trade"\n'
                   'symbols = ["SOL/USDT"]\n')
    failed = _recorder("pairs", str(cfg), "--update", "--rest-url", "http://127.0.0.1:9",
                       cache=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: GET /api/v2/symbols: cannot reach ")
    assert failed.stderr.count("\n") == 1


# -- recorder token ---------------------------------------------------------------------------


def _bullet_private(token: str) -> str:
    body = json.loads(rest_body("POST /api/v1/bullet-public"))
    body["data"]["token"] = token
    return json.dumps(body)


def _clock_route(stub) -> None:
    stub.routes[("GET", "/api/v1/timestamp")] = (200, rest_body("GET /api/v1/timestamp"))


def test_fetch_token_signs_with_the_configured_key(stub, monkeypatch):
    _env(monkeypatch)
    _clock_route(stub)
    stub.routes[("POST", "/api/v1/bullet-private")] = (200, _bullet_private("tok-private"))
    token, ttl = commands.fetch_token(_config(), stub.url, 5.0, 0)
    assert (token, ttl) == ("tok-private", 24 * 3600.0)
    req = stub.requests[-1]
    assert (req["method"], req["path"]) == ("POST", "/api/v1/bullet-private")
    assert req["headers"]["KC-API-KEY"] == SENTINEL_KEY
    assert req["headers"]["KC-API-KEY-VERSION"] == "2"
    assert PASSPHRASE not in req["headers"]["KC-API-PASSPHRASE"], "a v2 key signs it"


def test_fetch_token_retries_rate_limits_then_gives_up(stub, monkeypatch):
    _env(monkeypatch)
    _clock_route(stub)
    limited = (429, '{"code":"429000","msg":"Too Many Requests"}')
    stub.routes[("POST", "/api/v1/bullet-private")] = [limited, limited,
                                                       (200, _bullet_private("tok-3"))]
    slept: list[float] = []
    assert commands.fetch_token(_config(), stub.url, 5.0, 3, sleep=slept.append)[0] == "tok-3"
    assert slept == [0.5, 1.0]
    stub.routes[("POST", "/api/v1/bullet-private")] = limited
    with pytest.raises(ExchangeError, match=r"rate limited.*after 2 attempts"):
        commands.fetch_token(_config(), stub.url, 5.0, 1, sleep=slept.append)


@pytest.mark.parametrize("code,names", [
    ("400005", "T_KC_SECRET"), ("400004", "T_KC_PASS"), ("400003", "T_KC_KEY")])
def test_refused_credentials_name_the_variable_never_the_value(stub, monkeypatch, code, names):
    _env(monkeypatch)
    _clock_route(stub)
    stub.routes[("POST", "/api/v1/bullet-private")] = (401, json.dumps(
        {"code": code, "msg": "refused"}))
    with pytest.raises(CredentialError) as err:
        commands.fetch_token(_config(), stub.url, 5.0, 3, sleep=lambda s: None)
    text = str(err.value)
    assert names in text and code in text
    for value in (SENTINEL_KEY, SENTINEL_SECRET, PASSPHRASE):
        assert value not in text
    assert len(stub.paths()) == 2, "refused credentials are not retried"


def test_missing_credentials_and_other_failures(stub, monkeypatch):
    for var in ("T_KC_KEY", "T_KC_SECRET", "T_KC_PASS", "KUCOIN_API_KEY",
                "KUCOIN_API_SECRET", "KUCOIN_API_PASSPHRASE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CredentialError, match="T_KC_KEY and T_KC_SECRET and T_KC_PASS"):
        commands.fetch_token(_config(), stub.url, 5.0, 0)
    with pytest.raises(CredentialError, match="KUCOIN_API_KEY"):
        commands.fetch_token(None, stub.url, 5.0, 0)
    assert stub.requests == []
    _env(monkeypatch)
    _clock_route(stub)
    stub.routes[("POST", "/api/v1/bullet-private")] = (200, '{"code":"200000","data":{}}')
    with pytest.raises(ExchangeError, match="no token"):
        commands.fetch_token(_config(), stub.url, 5.0, 0)
    stub.routes[("POST", "/api/v1/bullet-private")] = (503, "maintenance")
    with pytest.raises(ExchangeError, match="HTTP 503"):
        commands.fetch_token(_config(), stub.url, 5.0, 0)


def _token_config(tmp_path: Path, rest: str) -> Path:
    cfg = tmp_path / "kucoin-private.toml"
    cfg.write_text(f'[exchange]\nname = "kucoin"\nrest_url = "{rest}"\n'
                   '[credentials]\napi_key_env = "T_KC_KEY"\napi_secret_env = "T_KC_SECRET"\n'
                   'api_passphrase_env = "T_KC_PASS"\n'
                   '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USDT"]\n')
    load_config(cfg, check_env=False)
    return cfg


def test_token_command_writes_a_usable_private_token(tmp_path):
    """`recorder token CONFIG --write FILE` against the simulator: an owner-only file holding
    a bullet-private token the simulator accepts for a private connection; a wrong secret is
    one line and exit 2; the secret shows nowhere."""
    from recorder.simulator.testing import SimulatorProcess

    env = {"T_KC_KEY": SENTINEL_KEY, "T_KC_SECRET": SENTINEL_SECRET, "T_KC_PASS": PASSPHRASE}
    with SimulatorProcess(["--seed", "2"], exchange="kucoin", api_key=SENTINEL_KEY,
                          api_secret=SENTINEL_SECRET, api_passphrase=PASSPHRASE) as sim:
        cfg = _token_config(tmp_path, sim.urls["rest"])
        target = tmp_path / "kucoin-token"
        target.write_text("old")
        target.chmod(0o644)
        proc = _recorder("token", str(cfg), "--write", str(target), env=env, umask=0)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ""
        assert "wrote a WebSocket token to" in proc.stderr and "86400 s" in proc.stderr
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        token = target.read_text()
        assert token and "\n" not in token
        ws = websocket.create_connection(f"{sim.urls['ws']}?token={token}&connectId=t1",
                                         timeout=10)
        try:
            assert json.loads(ws.recv()) == {"id": "t1", "type": "welcome"}
        finally:
            ws.close()
        printed = _recorder("token", str(cfg), env=env)
        assert printed.returncode == 0 and printed.stdout.strip() not in ("", token)
        wrong = _recorder("token", str(cfg), "--write", str(tmp_path / "never"),
                          env={**env, "T_KC_SECRET": WRONG_SECRET})
        assert wrong.returncode == 2
        assert wrong.stderr.startswith("error: POST /api/v1/bullet-private: KuCoin refused")
        assert "T_KC_SECRET" in wrong.stderr and wrong.stderr.count("\n") == 1
        assert not (tmp_path / "never").exists()
        later = _recorder("token", str(cfg), "--rest-url", "http://127.0.0.1:9",
                          "--retries", "0", env=env)
        assert later.returncode == 1 and "cannot reach" in later.stderr
    assert_clean([p.stdout + p.stderr for p in (proc, printed, wrong, later)],
                 where="the token command's output")
