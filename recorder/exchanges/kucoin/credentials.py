"""KuCoin API credentials: key, secret and passphrase, from the environment or a secrets file.

recorder.core.secrets loads Kraken's key pair; it has no passphrase and checks that the
secret is base64, which a KuCoin secret (a UUID-like text) is not. So KuCoin reads its
three values here, by the same rules: the environment variables the config names, or a
secrets file only its owner can read (``recorder.core.secrets.read_private_text``). No
value is ever part of a repr or a message: messages name the variable or the file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.core.secrets import CredentialError, read_private_text
from recorder.exchanges.kucoin.common import (
    DEFAULT_KEY_ENV,
    DEFAULT_KEY_VERSION,
    DEFAULT_PASSPHRASE_ENV,
    DEFAULT_SECRET_ENV,
)
from recorder.exchanges.kucoin.signer import KEY_VERSIONS


@dataclass(frozen=True)
class KucoinCredentials:
    """Key, secret, passphrase and key version. ``repr``/``str`` show none of the values."""

    key: str = field(repr=False)
    secret: str = field(repr=False)
    passphrase: str = field(repr=False)
    key_version: int = DEFAULT_KEY_VERSION
    source: str = "?"  # for messages: "environment KUCOIN_API_KEY/..." or "secrets file X"
    # The names a message should point at for each value (variables or file keys).
    names: tuple[str, str, str] = (DEFAULT_KEY_ENV, DEFAULT_SECRET_ENV, DEFAULT_PASSPHRASE_ENV)

    def __repr__(self) -> str:
        return (f"KucoinCredentials(source={self.source!r}, key_version={self.key_version}, "
                "key=<hidden>, secret=<hidden>, passphrase=<hidden>)")

    __str__ = __repr__


def configured(config: Any) -> bool:
    """Whether the config names credentials at all (they make book snapshots full-depth)."""
    return bool(getattr(config, "secrets_file", None) or getattr(config, "api_key_env", None))


def _env_names(config: Any) -> tuple[str, str, str]:
    return (getattr(config, "api_key_env", None) or DEFAULT_KEY_ENV,
            getattr(config, "api_secret_env", None) or DEFAULT_SECRET_ENV,
            getattr(config, "api_passphrase_env", None) or DEFAULT_PASSPHRASE_ENV)


def _key_version(config: Any) -> int:
    version = getattr(config, "key_version", None)
    version = DEFAULT_KEY_VERSION if version is None else version
    if isinstance(version, bool) or version not in KEY_VERSIONS:
        raise CredentialError(f"credentials.key_version must be 1, 2 or 3, not {version!r} "
                              "(KuCoin's KC-API-KEY-VERSION; keys created since 2021 are 2 "
                              "or 3)")
    return int(version)


def from_env(names: tuple[str, str, str], key_version: int = DEFAULT_KEY_VERSION,
             environ: dict[str, str] | None = None) -> KucoinCredentials:
    """The values of the three variables ``names`` (key, secret, passphrase)."""
    env = os.environ if environ is None else environ
    missing = [n for n in names if not env.get(n, "").strip()]
    if missing:
        raise CredentialError("environment variable " + " and ".join(missing)
                              + (" is" if len(missing) == 1 else " are")
                              + " not set (KuCoin needs the API key, secret and passphrase)")
    key, secret, passphrase = (env[n].strip() for n in names)
    return KucoinCredentials(key, secret, passphrase, key_version,
                             "environment " + "/".join(names), names)


def from_file(path: Path | str, names: tuple[str, str, str] = (DEFAULT_KEY_ENV,
              DEFAULT_SECRET_ENV, DEFAULT_PASSPHRASE_ENV),
              key_version: int = DEFAULT_KEY_VERSION) -> KucoinCredentials:
    """A secrets file: TOML (``api_key = "..."``, optionally in one table) or KEY=VALUE lines.

    Accepted names (case-insensitive): those given (the config's variable names), then
    api_key/api_secret/api_passphrase, key/secret/passphrase and KUCOIN_API_*.
    """
    path = Path(path).expanduser()
    values = _parse(read_private_text(path), path)
    found = []
    for given, generic, short, default in zip(
            names, ("api_key", "api_secret", "api_passphrase"), ("key", "secret", "passphrase"),
            (DEFAULT_KEY_ENV, DEFAULT_SECRET_ENV, DEFAULT_PASSPHRASE_ENV), strict=True):
        found.append(next((values[n.lower()] for n in (given, generic, short, default)
                           if values.get(n.lower())), None))
    if not all(found):
        raise CredentialError(f"secrets file {path}: needs api_key, api_secret and "
                              'api_passphrase (TOML: api_key = "..." / KEY=VALUE: api_key=...)')
    key, secret, passphrase = found
    return KucoinCredentials(key, secret, passphrase, key_version, f"secrets file {path}",
                             ("api_key", "api_secret", "api_passphrase"))


def load(config: Any, environ: dict[str, str] | None = None) -> KucoinCredentials:
    """The credentials a config names: its secrets file if set, else its env variables.

    Config fields read (``getattr``, so a SimpleNamespace will do): api_key_env,
    api_secret_env, api_passphrase_env, key_version (default 2), secrets_file, path.
    """
    version = _key_version(config)
    names = _env_names(config)
    secrets_file = getattr(config, "secrets_file", None)
    if secrets_file:
        path = Path(secrets_file).expanduser()
        cfg_path = getattr(config, "path", None)
        if not path.is_absolute() and cfg_path is not None:
            path = Path(cfg_path).parent / path  # relative to the config, like Kraken's
        return from_file(path, names, version)
    return from_env(names, version, environ)


def _parse(text: str, path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        data = None
    out: dict[str, str] = {}
    if data is not None:
        for k, v in data.items():
            for kk, vv in (v.items() if isinstance(v, dict) else [(k, v)]):
                if isinstance(vv, str):
                    out.setdefault(kk.lower(), vv.strip())
        return out
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").strip().partition("=")
        if not sep or not name.strip():
            # The line number only: the line itself may hold a secret.
            raise CredentialError(f"secrets file {path}: line {n} is neither TOML nor KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.strip().lower()] = value
    return out
