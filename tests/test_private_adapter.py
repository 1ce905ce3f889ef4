"""make_private_adapter: start-up credential check, a fresh token before every connect."""

from __future__ import annotations

import json

import pytest

from recorder.core.config import load_config
from recorder.core.secrets import CredentialError
from recorder.exchanges.kraken.common import new_rows
from recorder.exchanges.kraken.private_feed import check_credentials, make_private_adapter
from recorder.exchanges.kraken.token import TokenError
from tests.fakes import KEY, OTHER_SECRET, SECRET, FakeKraken


@pytest.fixture
def kraken():
    with FakeKraken() as k:
        yield k


def _config(tmp_path, monkeypatch, url: str, api: str = "v2", secret: str = SECRET):
    monkeypatch.setenv("T_KEY", KEY)
    monkeypatch.setenv("T_SECRET", secret)
    path = tmp_path / "p.toml"
    path.write_text(f'[exchange]\nname = "kraken"\napi = "{api}"\nrest_url = "{url}"\n'
                    'auth_url = "ws://127.0.0.1:1/auth"\n'
                    '[credentials]\napi_key_env = "T_KEY"\napi_secret_env = "T_SECRET"\n'
                    '[[subscribe]]\nchannel = "fills"\n')
    return load_config(path)


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_every_connect_subscribes_with_a_new_token(kraken, tmp_path, monkeypatch, api):
    cfg = _config(tmp_path, monkeypatch, kraken.url, api)
    adapter = make_private_adapter(cfg, tmp_path / "data")
    assert adapter.url == "ws://127.0.0.1:1/auth" and adapter.book_resync is None
    assert len(kraken.issued) == 1  # the start-up check
    tokens = []
    for _ in range(3):
        reqs = [json.loads(r) for r in adapter.prepare().requests]
        found = {(r.get("params") or r.get("subscription"))["token"] for r in reqs}
        assert len(found) == 1
        tokens.append(found.pop())
    # The start-up token served the first connection; every later one fetched its own.
    assert tokens == kraken.issued == ["tok0000", "tok0001", "tok0002"]
    assert "ping" in adapter.ping(7)


def test_invalid_session_forgets_the_token_and_reconnects(kraken, tmp_path, monkeypatch):
    cfg = _config(tmp_path, monkeypatch, kraken.url)
    adapter = make_private_adapter(cfg, tmp_path / "data")
    adapter.prepare()
    out = new_rows()
    frame = b'{"error":"ESession:Invalid session","method":"subscribe","success":false}'
    control = adapter.parse(adapter.decode(frame), 1, 1, out)
    assert control.kind == "subscribe_error" and "Invalid session" in control.value
    events = [e[2] for e in out["events"]]
    assert "fills_seeded" in events and "subscribe_error" in events


def test_wrong_secret_fails_at_start_up(kraken, tmp_path, monkeypatch):
    cfg = _config(tmp_path, monkeypatch, kraken.url, secret=OTHER_SECRET)
    with pytest.raises(CredentialError, match="Invalid signature") as info:
        make_private_adapter(cfg, tmp_path / "data")
    assert OTHER_SECRET not in str(info.value)
    with pytest.raises(CredentialError, match="Invalid signature"):
        check_credentials(cfg)


def test_unreachable_rest_at_start_up_is_retried_when_connecting(tmp_path, monkeypatch):
    cfg = _config(tmp_path, monkeypatch, "http://127.0.0.1:9")
    monkeypatch.setattr("recorder.exchanges.kraken.token.time.sleep", lambda s: None)
    adapter = make_private_adapter(cfg, tmp_path / "data")  # only a warning
    check_credentials(cfg)  # likewise
    with pytest.raises(TokenError, match="cannot reach http://127.0.0.1:9"):
        adapter.prepare()
