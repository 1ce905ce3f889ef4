"""KuCoin request signing and credentials: the official vector, the passphrase rule per key
version, and credentials that never show their values."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from recorder.core.secrets import CredentialError
from recorder.exchanges.kucoin import credentials
from recorder.exchanges.kucoin.signer import (
    auth_headers,
    passphrase_header,
    sign,
    string_to_sign,
)

# KuCoin's documented example (kucoin-protocol.md §1.2).
KEY = "5c2db93503aa674c74a31734"
SECRET = "f03a5284-5c39-4aaa-9b20-dea10bdcf8e3"
PASSPHRASE = "QWIxMjM0NTY3OCkoKiZeJSQjQA=="
TIMESTAMP = "1547015186532"
BODY = '{"currency":"BTC"}'


def test_official_signature_vector():
    message = string_to_sign(TIMESTAMP, "post", "/api/v1/deposit-addresses", BODY)
    assert message == '1547015186532POST/api/v1/deposit-addresses{"currency":"BTC"}'
    assert sign(SECRET, message) == "7QP/oM0ykidMdrfNEUmng8eZjg/ZvPafjIqmxiVfYu4="


def test_official_sdk_vector():
    # kucoin-universal-sdk test_default_signer.py: sign(b"test_plain", b"test_api_secret").
    assert sign("test_api_secret", "test_plain") == "jie/gxS38wLFFaBwl/cAzFbAzlI8MIny96jSXrB+iP4="


def test_passphrase_plain_for_v1_signed_for_v2_and_v3():
    assert passphrase_header(SECRET, PASSPHRASE, 1) == PASSPHRASE
    expected = "HFkKIy8cKfQF3Ognmbamq9Bd8VfYy3eUQj7uC8NvMes="
    assert passphrase_header(SECRET, PASSPHRASE, 2) == expected
    assert passphrase_header(SECRET, PASSPHRASE, 3) == expected
    assert passphrase_header(SECRET, "Ab12345678)(*&^%$#@", 2) == \
        "F2p2bNS1bBehHvC/Z4YkB7l1Wd0Pq2iV/oLHM/DyE+I="
    with pytest.raises(ValueError):
        passphrase_header(SECRET, PASSPHRASE, 4)


def test_headers_sign_the_path_with_its_query():
    h = auth_headers(KEY, SECRET, PASSPHRASE, 2, "GET",
                     "/api/v3/market/orderbook/level2?symbol=BTC-USDT", "", 1547015186532)
    assert h["KC-API-KEY"] == KEY and h["KC-API-TIMESTAMP"] == TIMESTAMP
    assert h["KC-API-SIGN"] == sign(
        SECRET, "1547015186532GET/api/v3/market/orderbook/level2?symbol=BTC-USDT")
    assert h["KC-API-KEY-VERSION"] == "2"
    assert h["KC-API-PASSPHRASE"] == passphrase_header(SECRET, PASSPHRASE, 2)
    post = auth_headers(KEY, SECRET, PASSPHRASE, 1, "POST", "/api/v1/deposit-addresses", BODY,
                        1547015186532)
    assert post["KC-API-SIGN"] == "7QP/oM0ykidMdrfNEUmng8eZjg/ZvPafjIqmxiVfYu4="
    assert post["KC-API-PASSPHRASE"] == PASSPHRASE and post["KC-API-KEY-VERSION"] == "1"


def _config(**kw):
    base = dict(api_key_env="T_KC_KEY", api_secret_env="T_KC_SECRET",
                api_passphrase_env="T_KC_PASS", secrets_file=None, key_version=2)
    base.update(kw)
    return SimpleNamespace(**base)


ENV = {"T_KC_KEY": KEY, "T_KC_SECRET": SECRET, "T_KC_PASS": PASSPHRASE}


def test_credentials_from_the_environment_hide_their_values():
    creds = credentials.load(_config(), environ=ENV)
    assert (creds.key, creds.secret, creds.passphrase, creds.key_version) == (
        KEY, SECRET, PASSPHRASE, 2)
    shown = repr(creds) + str(creds)
    assert KEY not in shown and SECRET not in shown and PASSPHRASE not in shown
    assert "T_KC_KEY" in creds.source


def test_missing_variables_are_named_not_shown():
    with pytest.raises(CredentialError) as e:
        credentials.load(_config(), environ={"T_KC_KEY": KEY})
    text = str(e.value)
    assert "T_KC_SECRET" in text and "T_KC_PASS" in text and KEY not in text


def test_key_version_is_checked():
    for bad in (0, 4, "2", True):
        with pytest.raises(CredentialError, match="key_version"):
            credentials.load(_config(key_version=bad), environ=ENV)
    assert credentials.load(_config(key_version=None), environ=ENV).key_version == 2
    assert credentials.load(_config(key_version=1), environ=ENV).key_version == 1


def test_configured():
    assert credentials.configured(_config())
    assert credentials.configured(_config(api_key_env=None, secrets_file="x"))
    assert not credentials.configured(SimpleNamespace(rest_url="x"))


@pytest.mark.parametrize("text", [
    f'api_key = "{KEY}"\napi_secret = "{SECRET}"\napi_passphrase = "{PASSPHRASE}"\n',
    f'[kucoin]\nkey = "{KEY}"\nsecret = "{SECRET}"\npassphrase = "{PASSPHRASE}"\n',
    f"export KUCOIN_API_KEY={KEY}\nKUCOIN_API_SECRET='{SECRET}'\n"
    f"KUCOIN_API_PASSPHRASE={PASSPHRASE}\n",
])
def test_secrets_file(tmp_path, text):
    path = tmp_path / "kucoin.secrets"
    path.write_text(text)
    os.chmod(path, 0o600)
    creds = credentials.load(_config(api_key_env=None, api_secret_env=None,
                                     api_passphrase_env=None, secrets_file=str(path)))
    assert (creds.key, creds.secret, creds.passphrase) == (KEY, SECRET, PASSPHRASE)
    os.chmod(path, 0o644)
    with pytest.raises(CredentialError, match="chmod 600"):
        credentials.load(_config(secrets_file=str(path)))


def test_secrets_file_without_passphrase(tmp_path):
    path = tmp_path / "kucoin.secrets"
    path.write_text(f"api_key={KEY}\napi_secret={SECRET}\n")
    os.chmod(path, 0o600)
    with pytest.raises(CredentialError, match="api_passphrase") as e:
        credentials.load(_config(secrets_file=str(path)))
    assert SECRET not in str(e.value)
