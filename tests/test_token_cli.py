"""``recorder token``: prints or writes a token, never the secret; clear errors, exit codes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import KEY, OTHER_SECRET, SECRET, FakeKraken
from tests.sentinel import assert_clean

ROOT = Path(__file__).resolve().parents[1]


def _token_cmd(*args: str, env: dict[str, str] | None = None, umask: int | None = None
               ) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KRAKEN_")}
    full_env.update(env or {})
    pre = (lambda: os.umask(umask)) if umask is not None else None
    # The installed command itself (recorder/cli/main.py registers it), as a real process.
    return subprocess.run([sys.executable, "-m", "recorder", "token", *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=30,
                          preexec_fn=pre)


@pytest.fixture(scope="module")
def kraken():
    with FakeKraken() as k:
        yield k


def _env(secret: str = SECRET) -> dict[str, str]:
    return {"KRAKEN_API_KEY": KEY, "KRAKEN_API_SECRET": secret}


def test_prints_the_token_from_environment_credentials(kraken):
    proc = _token_cmd("--rest-url", kraken.url, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == kraken.issued[-1]
    assert_clean([proc.stdout, proc.stderr], where="the token command's output")


def test_write_creates_an_owner_only_file_whatever_the_umask(kraken, tmp_path):
    target = tmp_path / "WS_Token"
    target.write_text("old")
    target.chmod(0o644)
    proc = _token_cmd("--rest-url", kraken.url, "--write", str(target), env=_env(), umask=0)
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == kraken.issued[-1]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert proc.stdout == "" and "wrote a WebSocket token" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["WS_Token"]


def test_config_credentials_and_rest_url(kraken, tmp_path):
    cfg = tmp_path / "private.toml"
    cfg.write_text(f'[exchange]\nname = "kraken"\nrest_url = "{kraken.url}"\n'
                   '[credentials]\napi_key_env = "TRADER_KEY"\napi_secret_env = "TRADER_SECRET"\n'
                   '[[subscribe]]\nchannel = "fills"\n')
    proc = _token_cmd(str(cfg), env={"TRADER_KEY": KEY, "TRADER_SECRET": SECRET})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == kraken.issued[-1]


def test_wrong_secret_is_a_clear_error_and_a_nonzero_exit(kraken):
    proc = _token_cmd("--rest-url", kraken.url, env=_env(OTHER_SECRET))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Invalid signature" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_clean([proc.stdout, proc.stderr], where="the token command's output")


def test_missing_permission_names_it(kraken):
    kraken.script = ["EGeneral:Permission denied"]
    proc = _token_cmd("--rest-url", kraken.url, env=_env())
    assert proc.returncode == 2 and "Access WebSockets API" in proc.stderr


def test_missing_credentials_and_bad_url(kraken):
    proc = _token_cmd("--rest-url", kraken.url)
    assert proc.returncode == 2 and "KRAKEN_API_KEY and KRAKEN_API_SECRET are not set" in (
        proc.stderr)
    proc = _token_cmd("--rest-url", "ftp://x", env=_env())
    assert proc.returncode == 2 and "not an http" in proc.stderr


def test_unreachable_rest_is_exit_1(tmp_path):
    proc = _token_cmd("--rest-url", "http://127.0.0.1:9", "--retries", "0", env=_env())
    assert proc.returncode == 1 and "cannot reach" in proc.stderr


def test_the_installed_console_script(kraken, tmp_path):
    # The `recorder` entry point of pyproject.toml, next to this interpreter in the venv.
    script = Path(sys.executable).with_name("recorder")
    assert script.is_file(), f"{script} missing: install the project (pip install -e .)"
    target = tmp_path / "WS_Token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRAKEN_")}
    proc = subprocess.run([str(script), "token", "--rest-url", kraken.url, "--write",
                           str(target)], env={**env, **_env()}, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == kraken.issued[-1]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    proc = subprocess.run([str(script), "token", "--rest-url", kraken.url], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "are not set" in proc.stderr
