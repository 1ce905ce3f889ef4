"""TokenHelper and the REST client against a small local GetWebSocketsToken server.

``FakeKraken`` checks what Kraken checks (key, API-Sign over the raw body, nonces strictly
increasing per key in arrival order) and can answer with scripted errors or drop the
connection, so retries, credential errors and thread safety are tested without a network.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from recorder.core.secrets import CredentialError, Credentials
from recorder.exchanges.kraken.rest import (
    USER_AGENT,
    InvalidCredentials,
    KrakenError,
    PrivateClient,
    TransientError,
)
from recorder.exchanges.kraken.token import TokenError, TokenHelper
from tests.fakes import KEY, OTHER_SECRET, SECRET, FakeClock, FakeKraken

ROOT = Path(__file__).resolve().parents[1]






@pytest.fixture
def kraken():
    with FakeKraken() as k:
        yield k


def _helper(url: str, secret: str = SECRET, **kw) -> TokenHelper:
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("timeout", 2)
    return TokenHelper(url, KEY, secret, **kw)


def test_fetch_sends_a_signed_request_kraken_accepts(kraken):
    helper = _helper(kraken.url)
    assert helper.fresh() == "tok0000"
    req = kraken.requests[0]
    assert req["path"] == "/0/private/GetWebSocketsToken"
    assert req["headers"]["user-agent"] == USER_AGENT
    assert req["headers"]["content-type"].startswith("application/x-www-form-urlencoded")
    assert req["body"].startswith(b"nonce=")


def test_token_is_cached_and_refreshed_ahead_of_expiry(kraken):
    clock = FakeClock()
    helper = _helper(kraken.url, clock=clock, refresh_margin=60)
    first = helper.token()
    clock.now += 500
    assert helper.token() == first and len(kraken.issued) == 1
    assert helper.expires_in() == pytest.approx(400)
    clock.now += 341  # 59 s of the 900 left: inside the margin
    second = helper.token()
    assert second != first and len(kraken.issued) == 2
    helper.invalidate()
    assert helper.expires_in() is None
    assert helper.token() not in (first, second)


def test_short_lived_tokens_are_still_cached_for_half_their_life():
    with FakeKraken(expires=30) as kraken:
        clock = FakeClock()
        helper = _helper(kraken.url, clock=clock, refresh_margin=60)
        first = helper.token()
        clock.now += 14
        assert helper.token() == first
        clock.now += 2
        assert helper.token() != first


def test_fresh_always_fetches(kraken):
    helper = _helper(kraken.url)
    tokens = [helper.fresh() for _ in range(3)]
    assert len(set(tokens)) == 3 and len(kraken.issued) == 3


def test_rate_limit_and_network_errors_are_retried_with_backoff(kraken):
    sleeps: list[float] = []
    helper = _helper(kraken.url, sleep=sleeps.append, retries=4, backoff_initial=0.5,
                     backoff_max=4)
    kraken.script = ["EAPI:Rate limit exceeded", "DROP", "HTTP500", "EService:Unavailable"]
    assert helper.fresh() == "tok0000"
    assert len(sleeps) == 4
    # Exponential with jitter: each delay within [initial, min(cap, initial * 2**n)].
    for n, delay in enumerate(sleeps):
        assert 0.5 <= delay <= min(4, 0.5 * 2 ** n)


def test_retries_are_bounded(kraken):
    helper = _helper(kraken.url, retries=2)
    kraken.script = ["EAPI:Rate limit exceeded"] * 5
    with pytest.raises(TokenError, match="after 3 attempts.*Rate limit exceeded"):
        helper.fresh()
    assert len(kraken.requests) == 3


@pytest.mark.parametrize("step, reason", [
    ("TRUNCATE", r"truncated response \(26 bytes read, 174 more expected\)"),
    ("GARBLE", "BadStatusLine"),
])
def test_broken_answers_are_retried_then_a_clear_token_error(kraken, step, reason):
    # http.client raises these outside OSError: they must take the transient path too.
    sleeps: list[float] = []
    helper = _helper(kraken.url, sleep=sleeps.append, retries=2)
    kraken.script = [step] * 3
    with pytest.raises(TokenError, match=f"after 3 attempts: .*broken answer from "
                                         f"http://127.0.0.1:\\d+: {reason}"):
        helper.fresh()
    assert len(kraken.requests) == 3 and len(sleeps) == 2
    kraken.script = [step]
    assert helper.fresh() == "tok0000"  # one broken answer, then a good one: just a retry


def test_unreachable_server_is_a_transient_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    helper = _helper(f"http://127.0.0.1:{port}", retries=1)
    with pytest.raises(TokenError, match="cannot reach"):
        helper.fresh()


@pytest.mark.parametrize("error, needle", [
    ("EAPI:Invalid key", "EAPI:Invalid key"),
    ("EGeneral:Permission denied", "Access WebSockets API"),
])
def test_credential_errors_are_clear_and_not_retried(kraken, error, needle):
    sleeps: list[float] = []
    helper = _helper(kraken.url, sleep=sleeps.append)
    kraken.script = [error]
    with pytest.raises(CredentialError, match=needle) as info:
        helper.fresh()
    assert isinstance(info.value, InvalidCredentials)
    assert sleeps == [] and len(kraken.requests) == 1


def test_wrong_secret_is_an_invalid_signature(kraken):
    helper = _helper(kraken.url, secret=OTHER_SECRET)
    with pytest.raises(CredentialError, match="Invalid signature") as info:
        helper.fresh()
    assert OTHER_SECRET not in str(info.value) and OTHER_SECRET not in repr(helper)


def test_unexpected_answers_are_errors_not_crashes(kraken):
    helper = _helper(kraken.url)
    kraken.script = ["EGeneral:Unknown method"]
    with pytest.raises(TokenError, match="Unknown method"):
        helper.fresh()
    client = PrivateClient(kraken.url, Credentials(KEY, SECRET), nonce_state=None)
    kraken.script = ["EQuery:Unknown asset pair"]
    with pytest.raises(KrakenError) as info:
        client.call("GetWebSocketsToken")
    assert not isinstance(info.value, TransientError | CredentialError)


def test_concurrent_token_callers_share_one_fetch():
    with FakeKraken(delay=0.2) as kraken:
        helper = _helper(kraken.url)
        got: list[str] = []
        threads = [threading.Thread(target=lambda: got.append(helper.token()))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 8 and len(set(got)) == 1 and len(kraken.issued) == 1


def test_concurrent_fresh_callers_each_get_a_token_newer_than_their_call(kraken):
    helper = _helper(kraken.url)
    old = helper.fresh()
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(helper.fresh())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and old not in got
    assert 2 <= len(kraken.issued) <= 7 and kraken.nonce_errors == 0


_CALLS = """
import sys
from recorder.exchanges.kraken.rest import PrivateClient
from recorder.core.secrets import from_env
client = PrivateClient(sys.argv[1], from_env(), nonce_state=sys.argv[2])
for _ in range(15):
    client.call("GetWebSocketsToken")
"""


def test_processes_sharing_a_key_never_send_a_nonce_out_of_order(kraken, tmp_path):
    # Kraken checks nonces in arrival order: the per-key lock must cover the request too.
    state = str(tmp_path / "nonce")
    env = {**os.environ, "KRAKEN_API_KEY": KEY, "KRAKEN_API_SECRET": SECRET}  # never argv
    procs = [subprocess.Popen([sys.executable, "-c", _CALLS, kraken.url, state], cwd=ROOT,
                              env=env, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
    assert kraken.nonce_errors == 0 and len(kraken.issued) == 45


def test_reprs_hide_credentials_and_tokens(kraken):
    creds = Credentials(KEY, SECRET, "test")
    assert KEY not in repr(creds) and SECRET not in repr(creds) and SECRET not in str(creds)
    helper = TokenHelper(kraken.url, credentials=creds)
    value = helper.fresh()
    assert SECRET not in repr(helper) and KEY not in repr(helper)
    assert value not in repr(helper._current)
