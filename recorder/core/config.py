"""Subscription configs (TOML): load, validate completely, and explain every mistake.

Every error names the file, the key and what is allowed, so that a capture job fails at
start-up instead of an hour later.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.exchanges.kraken.common import BOOK_DEPTHS, CHANNELS, OHLC_INTERVALS, PRIVATE_CHANNELS
from recorder.exchanges.kraken.pair_list import lookup_pair, unknown_pair_hint

DEFAULT_URLS = {
    "v1": ("wss://ws.kraken.com", "wss://ws-auth.kraken.com"),
    "v2": ("wss://ws.kraken.com/v2", "wss://ws-auth.kraken.com/v2"),
}
DEFAULT_REST_URL = "https://api.kraken.com"

_SECTIONS = {
    "exchange": {"name", "api", "url", "auth_url", "rest_url"},
    "output": {"path", "rotate", "raw", "max_file_mb", "journal_interval", "book_checkpoint"},
    "credentials": {"api_key_env", "api_secret_env", "secrets_file"},
    "connection": {"stale_after", "backoff_initial", "backoff_max", "ping_interval",
                   "resync_timeout", "resync_attempts"},
    "subscribe": {"channel", "symbols", "depth", "interval"},
}
_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(Exception):
    """A config mistake, with the file and key it concerns."""

    def __init__(self, path: str | Path, key: str | None, message: str) -> None:
        # One line per mistake, whatever a message quotes (a TOML parser error, a value).
        message = " ".join(part.strip() for part in message.splitlines() if part.strip())
        self.path, self.key, self.message = str(path), key, message
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + message)


@dataclass(frozen=True)
class SubscriptionConfig:
    channel: str
    symbols: tuple[str, ...]  # canonical names (BTC/USD)
    depth: int | None = None
    interval: int | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    exchange: str
    api: str
    url: str
    auth_url: str
    rest_url: str
    output_path: Path
    rotate_seconds: int
    raw: bool
    max_file_mb: int
    journal_interval: float
    api_key_env: str | None
    api_secret_env: str | None
    secrets_file: Path | None
    stale_after: float
    backoff_initial: float
    backoff_max: float
    ping_interval: float
    resync_timeout: float = 10.0
    resync_attempts: int = 5
    # Seconds between book checkpoints (the book_checkpoints table); 0 = none.
    book_checkpoint_seconds: int = 60
    subscriptions: tuple[SubscriptionConfig, ...] = field(default_factory=tuple)

    @property
    def public_subscriptions(self) -> tuple[SubscriptionConfig, ...]:
        return tuple(s for s in self.subscriptions if s.channel not in PRIVATE_CHANNELS)

    @property
    def private_subscriptions(self) -> tuple[SubscriptionConfig, ...]:
        return tuple(s for s in self.subscriptions if s.channel in PRIVATE_CHANNELS)

    @property
    def name(self) -> str:
        return self.path.stem


def parse_duration(text: str) -> int:
    """'1h' -> 3600; also '30s', '15m', '1d'."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValueError(text)
    return int(m.group(1)) * _UNITS[m.group(2)]


def load_config(path: str | Path, *, check_env: bool = True) -> Config:
    """Read and validate one config file; raise ConfigError on the first mistake found."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file") from None
    except OSError as e:
        raise ConfigError(path, None, f"cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, None, f"not valid TOML: {e}") from None
    return _validate(path, data, check_env)


def _validate(path: Path, data: dict[str, Any], check_env: bool) -> Config:
    v = _Checker(path)
    for key in data:
        if key not in _SECTIONS:
            v.fail(key, f"unknown section; allowed: {', '.join(sorted(_SECTIONS))}")
    exchange = v.table(data, "exchange", required=True)
    output = v.table(data, "output")
    creds = v.table(data, "credentials")
    conn = v.table(data, "connection")

    name = v.choice(exchange, "exchange.name", ("kraken",), default=None)
    if name is None:
        v.fail("exchange.name", "missing; allowed: kraken")
    api = v.choice(exchange, "exchange.api", ("v1", "v2"), default="v2")
    public_url, private_url = DEFAULT_URLS[api]
    url = v.url(exchange, "exchange.url", public_url)
    auth_url = v.url(exchange, "exchange.auth_url", private_url)
    rest_url = v.url(exchange, "exchange.rest_url", DEFAULT_REST_URL, schemes=("http", "https"))

    out_path = Path(v.string(output, "output.path", "data"))
    rotate = v.duration(output, "output.rotate", "1h", example='"1h" or "15m"')
    raw = v.boolean(output, "output.raw", False)
    max_file_mb = v.number(output, "output.max_file_mb", 256, integer=True, minimum=1)
    journal_interval = v.number(output, "output.journal_interval", 1.0, minimum=0.05)
    checkpoint = v.duration(output, "output.book_checkpoint", "1m", example='"1m" or "30s"',
                            off="no checkpoints")

    subs_raw = data.get("subscribe")
    if subs_raw is None:
        v.fail("subscribe", "no [[subscribe]] entries; add at least one, e.g. [[subscribe]] "
               "with channel = \"trade\" and symbols = [\"BTC/USD\"]")
    if not isinstance(subs_raw, list) or not all(isinstance(s, dict) for s in subs_raw):
        v.fail("subscribe", "must be an array of tables ([[subscribe]])")
    subs = tuple(v.subscription(i, s) for i, s in enumerate(subs_raw))
    _check_combinations(v, api, subs)

    has_private = any(s.channel in PRIVATE_CHANNELS for s in subs)
    key_env = v.string(creds, "credentials.api_key_env", None)
    secret_env = v.string(creds, "credentials.api_secret_env", None)
    secrets_file = v.string(creds, "credentials.secrets_file", None)
    if has_private:
        if not secrets_file and not (key_env and secret_env):
            v.fail("credentials", "the private channel \"fills\" needs credentials: set "
                   "api_key_env and api_secret_env (names of environment variables) or "
                   "secrets_file in a [credentials] section")
        if check_env and not secrets_file:
            for key, env in (("credentials.api_key_env", key_env),
                             ("credentials.api_secret_env", secret_env)):
                if not os.environ.get(env or ""):
                    v.fail(key, f"environment variable {env} is not set (it must hold the "
                           "Kraken API key/secret for the private channel)")

    return Config(
        path=path, exchange=name, api=api, url=url, auth_url=auth_url, rest_url=rest_url,
        output_path=out_path, rotate_seconds=rotate, raw=raw, max_file_mb=int(max_file_mb),
        journal_interval=float(journal_interval), api_key_env=key_env,
        api_secret_env=secret_env, secrets_file=Path(secrets_file) if secrets_file else None,
        stale_after=v.number(conn, "connection.stale_after", 10.0, minimum=1),
        backoff_initial=v.number(conn, "connection.backoff_initial", 0.5, minimum=0.01),
        backoff_max=v.number(conn, "connection.backoff_max", 30.0, minimum=0.1),
        ping_interval=v.number(conn, "connection.ping_interval", 30.0, minimum=1),
        resync_timeout=v.number(conn, "connection.resync_timeout", 10.0, minimum=0.5),
        resync_attempts=int(v.number(conn, "connection.resync_attempts", 5, integer=True,
                                     minimum=1)),
        book_checkpoint_seconds=checkpoint,
        subscriptions=subs,
    )


def _check_combinations(v: _Checker, api: str, subs: tuple[SubscriptionConfig, ...]) -> None:
    # Kraken allows one depth per book symbol per connection ("Already subscribed"), and on
    # v2 a single ticker stream per symbol, which is either bbo (spread) or trades (ticker).
    seen: dict[tuple[str, str], int] = {}
    for i, s in enumerate(subs):
        for sym in s.symbols:
            kind = s.channel
            if kind == "ohlc":
                kind = f"ohlc-{s.interval}"
            if api == "v2" and kind in ("spread", "ticker"):
                kind = "ticker-stream"
            if (kind, sym) in seen:
                j = seen[(kind, sym)]
                what = {"book": "a second book depth", "ticker-stream":
                        "both spread and ticker (one v2 ticker stream per symbol)"}.get(
                            s.channel if kind != "ticker-stream" else kind,
                            "the same channel twice")
                v.fail(f"subscribe[{i}].symbols",
                       f"{sym} is already subscribed by subscribe[{j}]: Kraken refuses {what} "
                       "on one connection; put it in a second config file")
            seen[(kind, sym)] = i


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> None:
        raise ConfigError(self.path, key, message)

    def table(self, data: dict, key: str, required: bool = False) -> dict:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(key, f"missing section [{key}]")
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"must be a table ([{key}])")
        for k in value:
            if k not in _SECTIONS[key]:
                self.fail(f"{key}.{k}", "unknown key; allowed: "
                          + ", ".join(sorted(_SECTIONS[key])))
        return value

    def _get(self, table: dict, key: str) -> Any:
        return table.get(key.rsplit(".", 1)[-1])

    def string(self, table: dict, key: str, default: str | None) -> str | None:
        value = self._get(table, key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def duration(self, table: dict, key: str, default: str, *, example: str,
                 off: str | None = None) -> int:
        """Seconds of a duration such as "1h"; with ``off``, "0" is allowed and means that."""
        text = self.string(table, key, default)
        if off is not None and text.strip() == "0":
            return 0
        try:
            return parse_duration(text)
        except ValueError:
            zero = f', or "0" for {off}' if off else ""
            self.fail(key, f"{text!r} is not a duration; use a number with s, m, h or d, e.g. "
                      f"{example}{zero}")

    def boolean(self, table: dict, key: str, default: bool) -> bool:
        value = self._get(table, key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value

    def number(self, table: dict, key: str, default: float, *, integer: bool = False,
               minimum: float | None = None) -> float:
        value = self._get(table, key)
        if value is None:
            return default
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if not ok or isinstance(value, bool):
            self.fail(key, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be at least {minimum}, got {value!r}")
        return value

    def choice(self, table: dict, key: str, allowed: tuple, default: Any) -> Any:
        value = self._get(table, key)
        if value is None:
            return default
        if value not in allowed:
            self.fail(key, f"{value!r} is not supported; allowed: "
                      + ", ".join(str(a) for a in allowed))
        return value

    def url(self, table: dict, key: str, default: str,
            schemes: tuple[str, ...] = ("ws", "wss")) -> str:
        value = self.string(table, key, default)
        if not any(value.startswith(s + "://") for s in schemes):
            self.fail(key, f"{value!r} is not a URL; it must start with "
                      + " or ".join(s + "://" for s in schemes))
        return value

    def subscription(self, i: int, s: dict) -> SubscriptionConfig:
        prefix = f"subscribe[{i}]"
        for k in s:
            if k not in _SECTIONS["subscribe"]:
                self.fail(f"{prefix}.{k}", "unknown key; allowed: "
                          + ", ".join(sorted(_SECTIONS["subscribe"])))
        channel = s.get("channel")
        if channel is None:
            self.fail(f"{prefix}.channel", "missing; allowed: " + ", ".join(CHANNELS))
        if channel not in CHANNELS:
            self.fail(f"{prefix}.channel", f"{channel!r} is not a channel; allowed: "
                      + ", ".join(CHANNELS))
        symbols: tuple[str, ...] = ()
        if channel not in PRIVATE_CHANNELS:
            raw = s.get("symbols")
            if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
                self.fail(f"{prefix}.symbols", "must be a non-empty list of pair names, "
                          "e.g. [\"BTC/USD\", \"ETH/USD\"]")
            out = []
            for name in raw:
                pair = lookup_pair(name)
                if pair is None:
                    self.fail(f"{prefix}.symbols", f"{name!r} is not a pair Kraken lists: "
                              f"{unknown_pair_hint()}; use BASE/QUOTE such as BTC/USD, "
                              "ETH/EUR or XBT/USD")
                if pair.symbol in out:
                    self.fail(f"{prefix}.symbols", f"{name!r} is listed twice")
                out.append(pair.symbol)
            symbols = tuple(out)
        elif "symbols" in s:
            self.fail(f"{prefix}.symbols", "fills covers the whole account; remove symbols")
        depth = s.get("depth")
        if channel == "book":
            if depth is None:
                depth = 10
            if not isinstance(depth, int) or isinstance(depth, bool) or depth not in BOOK_DEPTHS:
                self.fail(f"{prefix}.depth", f"{depth!r} is not a book depth Kraken supports; "
                          "allowed: " + ", ".join(map(str, BOOK_DEPTHS)))
        elif depth is not None:
            self.fail(f"{prefix}.depth", "only the book channel takes a depth")
        interval = s.get("interval")
        if channel == "ohlc":
            if interval is None:
                interval = 1
            if (not isinstance(interval, int) or isinstance(interval, bool)
                    or interval not in OHLC_INTERVALS):
                self.fail(f"{prefix}.interval", f"{interval!r} is not an ohlc interval Kraken "
                          "supports (minutes); allowed: " + ", ".join(map(str, OHLC_INTERVALS)))
        elif interval is not None:
            self.fail(f"{prefix}.interval", "only the ohlc channel takes an interval")
        return SubscriptionConfig(channel, symbols, depth, interval)
