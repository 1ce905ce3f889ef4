"""Credentials: only from the named environment variables or a private secrets file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from recorder.core import secrets
from recorder.core.secrets import CredentialError
from tests.sentinel import SENTINEL_KEY, SENTINEL_SECRET, write_secrets_file

KEY, SECRET = SENTINEL_KEY, SENTINEL_SECRET


@dataclass
class Cfg:
    path: Path
    api_key_env: str | None = None
    api_secret_env: str | None = None
    secrets_file: Path | None = None


def _file(tmp_path: Path, text: str, mode: int = 0o600, name: str = "kraken.secrets") -> Path:
    # Registered: the session scan of the temp folder leaves this file (and only it) out.
    return write_secrets_file(tmp_path / name, text, mode)


def test_from_the_environment_variables_the_config_names(monkeypatch, tmp_path):
    monkeypatch.setenv("MY_KEY", KEY)
    monkeypatch.setenv("MY_SECRET", SECRET)
    creds = secrets.load(Cfg(tmp_path / "c.toml", "MY_KEY", "MY_SECRET"))
    assert (creds.key, creds.secret) == (KEY, SECRET)
    assert SECRET not in repr(creds) and KEY not in repr(creds) and SECRET not in f"{creds}"


def test_missing_environment_variable_is_named(monkeypatch, tmp_path):
    monkeypatch.delenv("NOPE_SECRET", raising=False)
    monkeypatch.setenv("MY_KEY", KEY)
    with pytest.raises(CredentialError, match="NOPE_SECRET is not set"):
        secrets.load(Cfg(tmp_path / "c.toml", "MY_KEY", "NOPE_SECRET"))


def test_a_secret_that_is_not_base64_is_refused_without_quoting_it(monkeypatch):
    monkeypatch.setenv("K", KEY)
    monkeypatch.setenv("S", "not base64 at all!!")
    with pytest.raises(CredentialError, match="not valid base64") as info:
        secrets.from_env("K", "S")
    assert "not base64 at all" not in str(info.value)


@pytest.mark.parametrize("text", [
    f'api_key = "{KEY}"\napi_secret = "{SECRET}"\n',
    f'[kraken]\napi_key = "{KEY}"\napi_secret = "{SECRET}"\n',
    f"# Kraken\nKRAKEN_API_KEY={KEY}\nexport KRAKEN_API_SECRET={SECRET}\n",
    f"api_key='{KEY}'\napi_secret = {SECRET}\n",
], ids=["toml", "toml-table", "key-value-export", "key-value-quotes"])  # ids: not the secret
def test_secrets_file_toml_or_key_value(tmp_path, text):
    path = _file(tmp_path, text)
    creds = secrets.from_file(path)
    assert (creds.key, creds.secret) == (KEY, SECRET)


def test_secrets_file_uses_the_configured_names_relative_to_the_config(tmp_path):
    _file(tmp_path, f"TRADER_KEY={KEY}\nTRADER_SECRET={SECRET}\n", name="s.env")
    cfg = Cfg(tmp_path / "job.toml", "TRADER_KEY", "TRADER_SECRET", Path("s.env"))
    creds = secrets.load(cfg)
    assert (creds.key, creds.secret) == (KEY, SECRET)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_secrets_file_readable_by_others_is_refused(tmp_path, mode):
    path = _file(tmp_path, f'api_key = "{KEY}"\napi_secret = "{SECRET}"\n', mode)
    with pytest.raises(CredentialError, match="chmod 600") as info:
        secrets.from_file(path)
    assert SECRET not in str(info.value)


def test_secrets_file_errors_never_quote_a_line(tmp_path):
    path = _file(tmp_path, f"api_key {KEY}\n{SECRET}\n")
    with pytest.raises(CredentialError, match="line 1") as info:
        secrets.from_file(path)
    assert SECRET not in str(info.value) and KEY not in str(info.value)
    missing = _file(tmp_path, f'api_key = "{KEY}"\n', name="half")
    with pytest.raises(CredentialError, match="needs api_key and api_secret"):
        secrets.from_file(missing)
    with pytest.raises(CredentialError, match="no such file"):
        secrets.from_file(tmp_path / "absent")


def test_unreadable_secrets_file(tmp_path, monkeypatch):
    path = _file(tmp_path, "x", 0o600)
    real_read_text = Path.read_text

    def denied(self, *args, **kwargs):
        # What a file of another user gives (root would read a mode-000 file anyway).
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(CredentialError, match="cannot read: Permission denied"):
        secrets.from_file(path)


def _simulate(*args: str, env: dict[str, str] | None = None):
    import os
    import socket
    import subprocess
    import sys

    # A port this test holds: a secret that passes validation ends at "cannot listen"
    # instead of a running simulator.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        return subprocess.run([sys.executable, "-m", "recorder.simulator", "--port", port,
                               *args], env={**os.environ, **(env or {})},
                              capture_output=True, text=True, timeout=30)


def test_simulator_secret_file_must_be_private_and_base64(tmp_path):
    path = write_secrets_file(tmp_path / "sim.secret", SECRET + "\n", 0o644)
    proc = _simulate("--api-secret-file", str(path))
    assert proc.returncode == 2 and "chmod 600" in proc.stderr
    path.chmod(0o600)
    proc = _simulate("--api-secret-file", str(path))
    assert proc.returncode == 2 and "cannot listen" in proc.stderr
    path.write_text("not base64!")
    proc = _simulate("--api-secret-file", str(path))
    assert proc.returncode == 2 and "must be non-empty base64" in proc.stderr
    proc = _simulate(env={"RECORDER_SIM_API_SECRET": "not base64!"})
    assert proc.returncode == 2 and "RECORDER_SIM_API_SECRET" in proc.stderr


def test_simulator_process_passes_the_pair_by_environment_only():
    import psutil

    from recorder.exchanges.kraken.token import TokenHelper
    from recorder.simulator.testing import SimulatorProcess

    with SimulatorProcess(["--rate", "10"], api_key=KEY, api_secret=SECRET) as sim:
        title = " ".join(psutil.Process(sim.proc.pid).cmdline())
        assert "--api-secret" not in title and "--api-key" not in title
        assert TokenHelper(sim.urls["rest"], KEY, SECRET).fresh()  # the simulator has it
