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

from recorder import exchanges
from recorder.core.location import parse_store_url, spool_root
from recorder.exchanges.base import ExchangeSpec

_SECTIONS = {
    "exchange": {"name", "api", "url", "auth_url", "rest_url"},
    "output": {"path", "rotate", "raw", "max_file_mb", "journal_interval", "book_checkpoint",
               "spool", "spool_max_mb", "upload_wait", "catalog"},
    "credentials": {"api_key_env", "api_secret_env", "api_passphrase_env", "key_version",
                    "secrets_file"},
    "connection": {"stale_after", "backoff_initial", "backoff_max", "ping_interval",
                   "resync_timeout", "resync_attempts", "max_connection_age", "backfill",
                   "backfill_max_span", "redundancy", "topics_per_connection",
                   "connections_per_process"},
    "subscribe": {"channel", "symbols", "depth", "interval"},
}
_DURATION_PART = re.compile(r"(\d+)\s*(s|m|h|d)")
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
    # Seconds after which a connection is replaced, make-before-break; 0 = never.
    max_connection_age: float = 0.0
    # Repair every gap in trades from the exchange's REST trade history (recorder/capture/
    # backfill.py), reaching back at most backfill_max_span seconds.
    backfill: bool = True
    backfill_max_span: float = 86_400.0
    # Connections carrying the trades: 2 keeps a second one (recorder/capture/redundancy.py).
    redundancy: int = 1
    # Topics (a channel of a symbol) per public connection: None = the exchange's limit; a
    # lower value spreads a config over more connections (recorder/capture/jobs.py).
    topics_per_connection: int | None = None
    # Public connections of this config sharing one collector process (each in a thread
    # of its own); 1 = a process per connection (docs/performance.md says why 10).
    connections_per_process: int = 10
    api_passphrase_env: str | None = None
    key_version: int | None = None
    # [output] path = "s3://bucket/prefix": output_path is then the local spool of that
    # store (recorder/core/location.py), output_url the store. spool: the spool base.
    output_url: str | None = None
    spool: Path | None = None
    spool_max_mb: int = 10_240
    upload_wait: float = 8.0
    # [output] catalog: an Iceberg table catalog every finished file is committed to
    # (sinks/catalog.py): "sqlite", a SQLAlchemy URI or an http(s):// REST catalog; None: none.
    catalog: str | None = None

    @property
    def spec(self) -> ExchangeSpec:
        return exchanges.get(self.exchange)

    @property
    def public_subscriptions(self) -> tuple[SubscriptionConfig, ...]:
        private = self.spec.private_channels
        return tuple(s for s in self.subscriptions if s.channel not in private)

    @property
    def private_subscriptions(self) -> tuple[SubscriptionConfig, ...]:
        private = self.spec.private_channels
        return tuple(s for s in self.subscriptions if s.channel in private)

    @property
    def name(self) -> str:
        return self.path.stem


def parse_duration(text: str) -> int:
    """'1h' -> 3600; also '30s', '15m', '1d', and combinations such as '23h30m'."""
    text = text.strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(text)
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds == 0:
        raise ValueError(text)
    return seconds


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

    known = exchanges.names()
    name = v.choice(exchange, "exchange.name", known, default=None)
    if name is None:
        v.fail("exchange.name", "missing; allowed: " + ", ".join(known))
    spec = exchanges.get(name)
    v.spec = spec
    api = v.choice(exchange, "exchange.api", spec.apis, default=spec.default_api or spec.apis[0])
    public_url, private_url = spec.default_urls[api]
    url = v.url(exchange, "exchange.url", public_url, optional=not public_url)
    auth_url = v.url(exchange, "exchange.auth_url", private_url, optional=not private_url)
    rest_url = v.url(exchange, "exchange.rest_url", spec.default_rest_url,
                     schemes=("http", "https"))
    v.rest_url = rest_url

    path_text = v.string(output, "output.path", "data")
    try:
        store = parse_store_url(path_text)
    except ValueError as e:
        v.fail("output.path", str(e))
    spool = v.string(output, "output.spool", None)
    spool_max_mb = v.number(output, "output.spool_max_mb", 10_240, integer=True, minimum=1)
    upload_wait = v.number(output, "output.upload_wait", 8.0, minimum=0)
    out_path = spool_root(store, spool) if store else Path(path_text)
    rotate = v.duration(output, "output.rotate", "1h", example='"1h" or "15m"')
    raw = v.boolean(output, "output.raw", False)
    max_file_mb = v.number(output, "output.max_file_mb", 256, integer=True, minimum=1)
    if store and max_file_mb > 4096:  # a server-side copy (CopyObject) takes at most 5 GB
        v.fail("output.max_file_mb", f"at most 4096 with an object store, got {max_file_mb}")
    journal_interval = v.number(output, "output.journal_interval", 1.0, minimum=0.05)
    catalog = v.string(output, "output.catalog", None)
    if catalog is not None:
        problem = catalog_problem(catalog)
        if problem:
            v.fail("output.catalog", problem)
    checkpoint = v.duration(output, "output.book_checkpoint", "1m", example='"1m" or "30s"',
                            off="no checkpoints")

    subs_raw = data.get("subscribe")
    if subs_raw is None:
        v.fail("subscribe", "no [[subscribe]] entries; add at least one, e.g. [[subscribe]] "
               "with channel = \"trade\" and symbols = [\"BTC/USD\"]")
    if not isinstance(subs_raw, list) or not all(isinstance(s, dict) for s in subs_raw):
        v.fail("subscribe", "must be an array of tables ([[subscribe]])")
    subs = tuple(v.subscription(i, s) for i, s in enumerate(subs_raw))
    for i, key, message in spec.check_subscriptions(api, subs):
        v.fail(f"subscribe[{i}].{key}", message)

    has_private = any(s.channel in spec.private_channels for s in subs)
    for k in creds:
        if k != "secrets_file" and k not in spec.credential_keys:
            v.fail(f"credentials.{k}", f"{spec.name} does not use it; allowed: "
                   + ", ".join(sorted((*spec.credential_keys, "secrets_file"))))
    key_env = v.string(creds, "credentials.api_key_env", None)
    secret_env = v.string(creds, "credentials.api_secret_env", None)
    passphrase_env = v.string(creds, "credentials.api_passphrase_env", None)
    key_version = None
    if "key_version" in spec.credential_keys:
        key_version = int(v.choice(creds, "credentials.key_version", (1, 2, 3), default=2))
    secrets_file = v.string(creds, "credentials.secrets_file", None)
    envs = {"api_key_env": key_env, "api_secret_env": secret_env,
            "api_passphrase_env": passphrase_env}
    required = [k for k in spec.required_credentials if k in envs]
    if has_private:
        if not secrets_file and not all(envs[k] for k in required):
            v.fail("credentials", f"the private channel \"fills\" needs credentials: set "
                   f"{' and '.join(required)} (names of environment variables) or "
                   "secrets_file in a [credentials] section")
        if check_env and not secrets_file:
            for k in required:
                if not os.environ.get(envs[k] or ""):
                    v.fail(f"credentials.{k}", f"environment variable {envs[k]} is not set "
                           f"(it must hold the {spec.display_name} API "
                           f"{k.removeprefix('api_').removesuffix('_env')} for the private "
                           "channel)")
    max_age = v.duration(conn, "connection.max_connection_age",
                         _age_text(spec.default_max_connection_age),
                         example='"23h30m" or "3s"', off="never")

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
        max_connection_age=float(max_age),
        backfill=_backfill(v, exchange, conn),
        backfill_max_span=float(v.duration(conn, "connection.backfill_max_span", "24h",
                                           example='"24h" or "30m"')),
        redundancy=_redundancy(v, conn),
        topics_per_connection=_topics_per_connection(v, conn, spec),
        connections_per_process=int(v.number(conn, "connection.connections_per_process", 10,
                                             integer=True, minimum=1)),
        api_passphrase_env=passphrase_env,
        key_version=key_version,
        output_url=store.url if store else None,
        spool=Path(spool).expanduser() if spool else None,
        spool_max_mb=int(spool_max_mb), upload_wait=float(upload_wait),
        catalog=catalog,
    )


def _redundancy(v: _Checker, conn: dict) -> int:
    n = int(v.number(conn, "connection.redundancy", 1, integer=True, minimum=1))
    if n > 2:
        v.fail("connection.redundancy", f"1 or 2 connections carry the trades, got {n}")
    return n


def _topics_per_connection(v: _Checker, conn: dict, spec: Any) -> int | None:
    if conn.get("topics_per_connection") is None:
        return None
    n = int(v.number(conn, "connection.topics_per_connection", 0, integer=True, minimum=1))
    limit = spec.max_topics_per_connection
    if limit and n > limit:
        v.fail("connection.topics_per_connection", f"{spec.display_name} allows at most "
               f"{limit} topics per connection, got {n}")
    return n


def _backfill(v: _Checker, exchange: dict, conn: dict) -> bool:
    """Whether gaps in trades are repaired from the REST history at ``rest_url``. A config
    that points ``url`` at another server (a simulator, a proxy) without saying where its
    REST API is would repair from the real exchange: off, unless asked for."""
    custom_ws = "url" in exchange and "rest_url" not in exchange
    if not custom_ws:
        return v.boolean(conn, "connection.backfill", True)
    if v.boolean(conn, "connection.backfill", False):
        v.fail("connection.backfill", "needs exchange.rest_url when exchange.url is set (the "
               "trade history must come from the server the trades come from)")
    return False


_CATALOG_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "http", "https")


def catalog_problem(value: str) -> str | None:
    """What is wrong with an ``[output] catalog`` value (None: nothing). The same grammar
    as sinks/catalog.py's check_uri, which the core cannot import."""
    from urllib.parse import urlsplit

    if value == "sqlite":
        return None
    u = urlsplit(value)
    scheme = u.scheme.split("+", 1)[0]
    if scheme not in _CATALOG_SCHEMES or (scheme == "sqlite" and
                                          not value.startswith("sqlite:///")):
        return (f"{value!r} is not a catalog; allowed: \"sqlite\" (<data>/_catalog/catalog.db), "
                "\"sqlite:////path/catalog.db\", \"postgresql://user@host/db\", "
                "\"https://rest-catalog/...\"")
    if scheme in ("http", "https", "postgresql", "postgres", "mysql") and not u.netloc:
        return f"{value!r}: the URI needs a host"
    if u.password:
        return ("holds a password; leave it out and set it in the environment (PGPASSWORD "
                "or ~/.pgpass for PostgreSQL, RECORDER_CATALOG_TOKEN for a REST catalog)")
    return None


def _age_text(seconds: float) -> str:
    return f"{int(seconds)}s" if seconds else "0"


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.spec: ExchangeSpec | None = None
        self.rest_url: str | None = None

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
            schemes: tuple[str, ...] = ("ws", "wss"), optional: bool = False) -> str:
        value = self.string(table, key, default or None)
        if value is None and optional:
            return ""
        if not any(value.startswith(s + "://") for s in schemes):
            self.fail(key, f"{value!r} is not a URL; it must start with "
                      + " or ".join(s + "://" for s in schemes))
        return value

    def subscription(self, i: int, s: dict) -> SubscriptionConfig:
        spec = self.spec
        ex = spec.display_name
        channels = spec.channels
        prefix = f"subscribe[{i}]"
        for k in s:
            if k not in _SECTIONS["subscribe"]:
                self.fail(f"{prefix}.{k}", "unknown key; allowed: "
                          + ", ".join(sorted(_SECTIONS["subscribe"])))
        channel = s.get("channel")
        if channel is None:
            self.fail(f"{prefix}.channel", "missing; allowed: " + ", ".join(channels))
        if channel not in channels:
            self.fail(f"{prefix}.channel", f"{channel!r} is not a channel; allowed: "
                      + ", ".join(channels))
        symbols: tuple[str, ...] = ()
        if channel not in spec.private_channels:
            raw = s.get("symbols")
            if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
                self.fail(f"{prefix}.symbols", "must be a non-empty list of pair names, "
                          "e.g. [\"BTC/USD\", \"ETH/USD\"]")
            out = []
            for name in raw:
                symbol = spec.lookup_symbol(name, self.rest_url)
                if symbol is None:
                    self.fail(f"{prefix}.symbols", f"{name!r} is not a pair {ex} lists: "
                              f"{spec.unknown_symbol_hint()}")
                if symbol in out:
                    self.fail(f"{prefix}.symbols", f"{name!r} is listed twice")
                out.append(symbol)
            symbols = tuple(out)
        elif "symbols" in s:
            self.fail(f"{prefix}.symbols", "fills covers the whole account; remove symbols")
        depth = s.get("depth")
        depths = spec.book_depths
        if channel == "book":
            if depth is None:
                depth = spec.default_book_depth
            if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool)
                                      or depth not in depths):
                full = ("; leave depth out for the full book synced by sequence"
                        if spec.default_book_depth is None else "")
                self.fail(f"{prefix}.depth", f"{depth!r} is not a book depth {ex} supports; "
                          "allowed: " + ", ".join(map(str, depths)) + full)
        elif depth is not None:
            self.fail(f"{prefix}.depth", "only the book channel takes a depth")
        interval = s.get("interval")
        intervals = spec.ohlc_intervals
        if channel == "ohlc":
            if interval is None:
                interval = intervals[0]
            if (not isinstance(interval, int) or isinstance(interval, bool)
                    or interval not in intervals):
                self.fail(f"{prefix}.interval", f"{interval!r} is not an ohlc interval {ex} "
                          "supports (minutes); allowed: " + ", ".join(map(str, intervals)))
        elif interval is not None:
            self.fail(f"{prefix}.interval", "only the ohlc channel takes an interval")
        return SubscriptionConfig(channel, symbols, depth, interval)
