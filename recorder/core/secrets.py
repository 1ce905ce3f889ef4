"""Kraken API credentials: where they come from, and how they are kept out of sight.

Credentials come only from the environment variables a config names, or from a secrets file
that nobody but its owner can read. The secret is never part of a ``repr``, an error message
or a log line: every message here names the variable or the file, never the value.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_KEY_ENV = "KRAKEN_API_KEY"
DEFAULT_SECRET_ENV = "KRAKEN_API_SECRET"
PERMISSION_HINT = ('the key needs the permission "Access WebSockets API" (named "WebSocket '
                   'interface" or "Get WebSocket Token" in some versions of Kraken\'s API key '
                   'settings)')


class CredentialError(Exception):
    """Credentials are missing, unreadable or refused: retrying will not help.

    The CLI turns it into one line on stderr and a non-zero exit.
    """


@dataclass(frozen=True)
class Credentials:
    """An API key and its base64 secret. ``repr`` and ``str`` never show either value."""

    key: str = field(repr=False)
    secret: str = field(repr=False)
    source: str = "?"  # where they came from, for messages: "environment KRAKEN_API_KEY/..."

    def __repr__(self) -> str:
        return f"Credentials(source={self.source!r}, key=<hidden>, secret=<hidden>)"

    __str__ = __repr__

    def secret_bytes(self) -> bytes:
        return base64.b64decode(self.secret, validate=True)


def check_secret(secret: str, where: str) -> None:
    """A Kraken secret is base64 text; fail early with a message that does not quote it."""
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raise CredentialError(f"the API secret in {where} is not valid base64 (a Kraken "
                              "API secret is the base64 text Kraken showed when the key "
                              "was created)") from None
    if not raw:
        raise CredentialError(f"the API secret in {where} is empty")


def from_env(key_env: str = DEFAULT_KEY_ENV, secret_env: str = DEFAULT_SECRET_ENV,
             environ: dict[str, str] | None = None) -> Credentials:
    env = os.environ if environ is None else environ
    missing = [name for name in (key_env, secret_env) if not env.get(name, "").strip()]
    if missing:
        raise CredentialError("environment variable " + " and ".join(missing)
                              + (" is" if len(missing) == 1 else " are")
                              + " not set (it must hold the Kraken API key/secret)")
    where = f"environment variable {secret_env}"
    secret = env[secret_env].strip()
    check_secret(secret, where)
    return Credentials(env[key_env].strip(), secret, f"environment {key_env}/{secret_env}")


def from_file(path: Path | str, key_names: tuple[str, ...] = (),
              secret_names: tuple[str, ...] = ()) -> Credentials:
    """Read a secrets file: TOML (``api_key = "..."``) or ``KEY=VALUE`` lines.

    Accepted names, case-insensitive: those given (typically the config's variable names),
    then ``api_key``/``api_secret``, ``key``/``secret`` and KRAKEN_API_KEY/KRAKEN_API_SECRET.
    """
    path = Path(path).expanduser()
    values = _parse(read_private_text(path), path)
    key = _pick(values, (*key_names, "api_key", "key", DEFAULT_KEY_ENV))
    secret = _pick(values, (*secret_names, "api_secret", "secret", DEFAULT_SECRET_ENV))
    if not key or not secret:
        raise CredentialError(f"secrets file {path}: needs api_key and api_secret "
                              '(TOML: api_key = "..." / KEY=VALUE: api_key=...)')
    check_secret(secret, f"secrets file {path}")
    return Credentials(key, secret, f"secrets file {path}")


def load(config: Any) -> Credentials:
    """The credentials a config names: its secrets file if set, else its env variables."""
    key_env = getattr(config, "api_key_env", None) or DEFAULT_KEY_ENV
    secret_env = getattr(config, "api_secret_env", None) or DEFAULT_SECRET_ENV
    secrets_file = getattr(config, "secrets_file", None)
    if secrets_file:
        path = Path(secrets_file).expanduser()
        cfg_path = getattr(config, "path", None)
        if not path.is_absolute() and cfg_path is not None:
            # Relative to the config, so a job behaves the same from any working directory.
            path = Path(cfg_path).parent / path
        return from_file(path, (key_env,), (secret_env,))
    return from_env(key_env, secret_env)


def read_private_text(path: Path) -> str:
    """The text of a file only its owner can read; ``CredentialError`` (naming the file,
    never its contents) otherwise."""
    path = Path(path).expanduser()
    _check_private(path)
    try:
        return path.read_text()
    except OSError as e:
        raise CredentialError(f"secrets file {path}: cannot read: {e.strerror}") from None


def _check_private(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CredentialError(f"secrets file {path}: no such file") from None
    except OSError as e:
        raise CredentialError(f"secrets file {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialError(f"secrets file {path}: not a regular file")
    if st.st_mode & 0o077:
        raise CredentialError(
            f"secrets file {path} is accessible by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CredentialError(f"secrets file {path} belongs to another user (uid "
                              f"{st.st_uid}); it must be owned by the user running the recorder")


def _parse(text: str, path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        data = None
    if data is not None:
        flat: dict[str, str] = {}
        for k, v in data.items():
            # Also accept one level of table, e.g. [kraken] api_key = "...".
            items = v.items() if isinstance(v, dict) else [(k, v)]
            for kk, vv in items:
                if isinstance(vv, str):
                    flat.setdefault(kk.lower(), vv.strip())
        return flat
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            # The line number only: the line itself may hold the secret.
            raise CredentialError(f"secrets file {path}: line {n} is neither TOML nor KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.strip().lower()] = value
    return out


def _pick(values: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = values.get(name.lower())
        if value:
            return value
    return None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, replacing it atomically.

    The temporary file is created with mode 0600 (no window where the umask applies), then
    renamed over the target, so a reader sees the old file or the new one, never half (the
    token file for Kraken's sample client, the cached pair list).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
