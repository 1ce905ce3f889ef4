"""The seam between the capture runtime and an exchange package.

An exchange package (``recorder/exchanges/<name>/``) describes itself with an
``ExchangeSpec``: what it supports (channels, depths, intervals, endpoints, limits,
credential fields, refusal texts) as data, plus a few hooks. The capture runtime owns the
lifecycle (connect, ready gate, subscribe, receive, ping and pong deadline, stale watchdog,
reconnect with backoff, resync scheduling, connection rotation) and calls the hooks; it
never names an exchange.

Per connection, the runtime drives a ``Feed``:

- ``prepare()`` runs before every (re)connect and may call REST (Kraken's private token,
  KuCoin's bullet): it returns a ``ConnectPlan`` (the URL, the requests to send once the
  connection is ready, the ping cadence the exchange dictates, and REST answers to keep in
  ``raw`` so a renormalize or replay can reproduce the session);
- ``decode``/``parse`` turn each frame into rows (tuples in the column order of
  ``recorder.core.schema.TABLES``) and return a ``Control`` for non-data frames;
- ``book_rule`` is the book integrity strategy (Kraken: CRC32 over the top of
  the book; KuCoin: sequence continuity);
- a broken book is resynced either by WebSocket requests (``book_resync``) or by a REST
  snapshot fetched off the receive loop (``fetch_snapshot``), whose answer is handed back
  to ``parse`` as a frame and recorded in ``raw`` like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class ExchangeError(Exception):
    """The exchange could not be asked or refused for now (network, rate limit, its own
    trouble): retrying later may help. The message says where and why, never a secret."""


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One symbol a config may name, for ``recorder pairs``."""

    symbol: str  # canonical BASE/QUOTE
    wire_name: str  # as the exchange spells it (Kraken v1 wsname, KuCoin BTC-USDT)
    price_decimals: int | None
    qty_decimals: int | None
    source: str  # bundled | cached | bundled+cached


@dataclass(slots=True)
class Control:
    """What the runtime must know about a non-data frame.

    kind: ``heartbeat``, ``pong``, ``welcome`` (the connection is ready for requests),
    ``status`` (value = system status; "online" or anything else), ``subscribed``,
    ``unsubscribed``, ``subscribe_error`` (value = the exchange's error text), ``error``,
    ``resubscribe`` (value = why: reconnect to get fresh state), ``resync`` (symbol: its
    book must be fetched again; value = why, e.g. ``sequence_gap``; the parser recorded the
    event), ``snapshot_needed`` (symbol: its first book snapshot must be fetched, e.g. a
    KuCoin level2 book synced from REST).
    """

    kind: str
    value: str | None = None
    channel: str | None = None
    symbol: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One configured subscription, as the runtime hands it to an exchange package."""

    channel: str  # trade | book | spread | ohlc | ticker | fills
    symbols: tuple[str, ...]  # canonical names
    depth: int | None = None
    interval: int | None = None


@dataclass
class ConnectPlan:
    """What ``Feed.prepare`` decided for one (re)connect."""

    url: str
    # Sent once the connection is ready (after the welcome when ``ready_kind`` is set).
    requests: list[str]
    # A Control kind that must arrive before any request is sent (KuCoin: "welcome").
    ready_kind: str | None = None
    ready_timeout: float = 10.0
    # Application pings: every ``ping_interval`` seconds (None: the config's
    # ``[connection] ping_interval``); with ``pong_timeout``, no pong in time = dead.
    ping_interval: float | None = None
    pong_timeout: float | None = None
    # Uplink limit: requests (and pings) sent at most this many per second (None: at once).
    # KuCoin allows 100 client messages per 10 s.
    max_messages_per_second: float | None = None
    # Acknowledgements (``subscribed`` controls) that mean every request was accepted: a
    # rotation switches over to the new connection once they have all arrived.
    acks_expected: int = 0
    # REST answers that shaped this connection, kept in ``raw`` as (endpoint, text).
    raw_records: list[tuple[str, str]] = field(default_factory=list)
    # Rows the preparation produced, recorded with the connection's (e.g. fills found by a
    # reconciliation against the exchange's REST history, and its events row).
    rows: dict[str, list[tuple]] = field(default_factory=dict)
    # This connection's own parser (fresh per-connection state, e.g. KuCoin's level2 sync),
    # used instead of ``Feed.parse`` when set: a replacement connection opened while the old
    # one still records must not share its parsing state.
    parse: Callable[[Any, int, int, dict], Control | None] | None = None


@dataclass(frozen=True, slots=True)
class IntegrityFailure:
    """A book known to be wrong: ``kind`` is the events kind (``checksum_mismatch``,
    ``sequence_gap``), ``detail`` what the exchange said against what was computed."""

    symbol: str
    kind: str
    detail: dict
    update_id: int


class BookRule(Protocol):
    """An exchange's book integrity rule; the runtime's book keeper applies it after every
    message (recorder/capture/book.py)."""

    # The events kind of a failure (``checksum_mismatch``, ``sequence_gap``).
    failure_kind: str
    # Text kept per level for ``verify``: ``price_bytes(price) + qty_bytes(qty)`` (both
    # None: nothing to keep). The price's part is remembered per price text.
    price_bytes: Callable[[str], bytes] | None
    qty_bytes: Callable[[str], bytes] | None

    def max_depth(self, first_row: tuple) -> int | None:
        """Levels kept per side of a book that starts with this snapshot row (None: all)."""

    def verify(self, book: Any, first_row: tuple) -> bool | None | dict:
        """After one message: True (verified), None (nothing to compare), or a dict
        describing the mismatch (the book is known to be wrong until a fresh snapshot)."""


class RateLimited(ExchangeError):
    """The exchange said to slow down (Kraken's EGeneral:Too many requests, KuCoin's
    429000): the caller waits at least ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class TradeHistory:
    """An exchange's public trade history, read to repair a gap in a live trade stream
    (the capture runtime's backfill, recorder/capture/backfill.py, drives it)."""

    # What events name as the source, e.g. "GET /0/public/Trades".
    endpoint: str
    # (symbol, since_us) -> pages of ``trades`` rows (``source`` "rest"), oldest first,
    # starting at or before the first trade at ``since_us`` when the history reaches that
    # far back; each ``next()`` is one REST call. Raises ExchangeError (RateLimited).
    fetch: Callable[[str, int], Any]
    # A trade's identity, the same for its live row and its history row (a trade id, or
    # time, price, quantity and side where the stream carries no id).
    key: Callable[[tuple], Any]
    # Keys are integers that grow with every trade of a symbol (Kraken's trade ids,
    # KuCoin's sequence): a span is then bounded by keys, not only by times.
    ordered: bool = False
    # The history holds only the most recent ``window`` trades (KuCoin: 100); None: it
    # reaches back any distance (Kraken pages through it with a cursor).
    window: int | None = None
    # Seconds between two calls (the exchange's public rate limit).
    min_interval: float = 1.0


@dataclass
class CandleHistory:
    """An exchange's OHLC history, read to repair the candles of a gap."""

    endpoint: str  # e.g. "GET /0/public/OHLC"
    # (symbol, interval in minutes, since_us) -> pages of ``ohlc`` rows (``source`` "rest",
    # ``ts_exchange`` null), oldest first, one row per interval, from the interval that
    # holds ``since_us`` on. Raises ExchangeError (RateLimited).
    fetch: Callable[[str, int, int], Any]
    # Intervals one answer holds at most (Kraken keeps only the last 720).
    window: int | None = None
    min_interval: float = 1.0


@dataclass
class Feed:
    """One connection's exchange behaviour, as the collector drives it."""

    exchange: str
    url: str  # the endpoint named in events and logs until a plan names another
    decode: Callable[[bytes], Any]
    parse: Callable[[Any, int, int, dict], Control | None]
    prepare: Callable[[], ConnectPlan]
    ping: Callable[[int], str | None]
    book_rule: BookRule
    book_resync: Callable[[str, int, int], list[str]] | None = None
    # (symbol, depth) -> (endpoint, frame text): a REST snapshot, fetched on a worker thread.
    fetch_snapshot: Callable[[str, int], tuple[str, str]] | None = None
    book_depths: dict[str, int] = field(default_factory=dict)
    refused_for_now: Callable[[str | None], bool] = lambda why: False
    session_invalid: Callable[[str | None], bool] = lambda why: False
    # Per table, a function of a row giving the key that tells two deliveries of the same
    # row apart (a rotation's overlap is de-duplicated with it); none: rows are kept.
    dedupe_keys: dict[str, Callable[[tuple], Any]] = field(default_factory=dict)
    # Work the exchange does off the receive loop (e.g. fills reconciled against its REST
    # history on a worker thread): called on the receive loop at every tick while a
    # connection is open (at least every 0.2 s) with the recorded row buffer, to start work
    # that is due and append the rows finished work produced; called once more with
    # ``stopping`` true when the collector stops (it may wait a few seconds for work under
    # way, so that its rows are recorded). It must not raise.
    poll: Callable[[dict[str, list[tuple]], bool], None] | None = None
    # The public trade history, when the exchange has one and this connection records
    # trades: the runtime repairs every gap in ``trades`` from it (symbols: those it
    # records trades of).
    trade_history: TradeHistory | None = None
    trade_symbols: tuple[str, ...] = ()
    # Likewise for ``ohlc``: its history and the (symbol, interval) pairs it records.
    candle_history: CandleHistory | None = None
    candle_lanes: tuple[tuple[str, int], ...] = ()


@dataclass
class ReplaySession:
    """Parsing state for ``recorder renormalize``: one per recorded connection."""

    decode: Callable[[bytes], Any]
    parse: Callable[[Any, int, int, dict], Any]
    book_rule: BookRule


@dataclass(frozen=True)
class ExchangeSpec:
    """Everything the runtime, the config loader and the commands know of an exchange."""

    name: str
    apis: tuple[str, ...]
    public_channels: tuple[str, ...]
    private_channels: tuple[str, ...]
    # Allowed ``depth`` values of the book channel; ``default_book_depth`` None means the
    # full incremental book when no depth is given.
    book_depths: tuple[int, ...]
    default_book_depth: int | None
    ohlc_intervals: tuple[int, ...]  # minutes
    # api -> (public WebSocket, private WebSocket); the REST base.
    default_urls: dict[str, tuple[str, str]]
    default_rest_url: str
    default_api: str = ""  # empty: the first of ``apis``
    # [credentials] keys this exchange reads (besides secrets_file), and which are required.
    credential_keys: tuple[str, ...] = ("api_key_env", "api_secret_env")
    required_credentials: tuple[str, ...] = ("api_key_env", "api_secret_env")
    # Seconds after which a connection is replaced (make-before-break); 0 = never.
    default_max_connection_age: float = 0.0
    # Topics (channel x symbol) per subscribe message and per connection; None = no limit.
    max_topics_per_message: int | None = None
    max_topics_per_connection: int | None = None
    # Hooks.
    # A config's symbol name -> the canonical name, or None if unknown; ``rest_url`` allows
    # one look-up at the exchange before a name is refused.
    lookup_symbol: Callable[[str, str | None], str | None] = lambda name, rest: None
    unknown_symbol_hint: Callable[[], str] = lambda: ""
    # Extra validation of the subscriptions of one config: a message per mistake, as
    # (subscription index, key, message).
    check_subscriptions: Callable[[str, Sequence[Any]], list[tuple[int, str, str]]] = (
        lambda api, subs: [])
    public_feed: Callable[..., Feed] | None = None  # (config, url, subscriptions) -> Feed
    private_feed: Callable[..., Feed] | None = None  # (config, data_root) -> Feed
    # Refuse bad credentials at start-up (raises CredentialError).
    check_credentials: Callable[[Any], None] | None = None
    # Public channels use credentials when a config has them (KuCoin's full-depth book
    # snapshots): they are checked at start-up for public connections too.
    public_uses_credentials: bool = False
    replay_session: Callable[[str], ReplaySession] | None = None  # endpoint -> session
    # ``recorder pairs``: the known symbols and a line about the cache; ``--update`` fetches
    # the exchange's list from a REST base into the cache and returns what it did. Both
    # raise ExchangeError.
    list_symbols: Callable[[], tuple[list[SymbolInfo], str]] | None = None
    update_symbols: Callable[[str], str] | None = None
    wire_name_label: str = "wire name"
    # ``recorder token``: (config or None, rest_url, timeout, retries) -> (token, seconds it
    # stays usable or None). Raises CredentialError (fix the input) or ExchangeError.
    fetch_token: Callable[[Any, str, float, int], tuple[str, float | None]] | None = None
    # Tardis-compatible exports: how Tardis names a canonical symbol, as eras of
    # (until date "YYYY-MM-DD" exclusive, or None for "from then on", name).
    tardis_names: Callable[[str], list[tuple[str | None, str]]] | None = None
    # Environment variables ``recorder token`` reads when no config is given.
    default_credential_env: tuple[str, ...] = ()
    # How messages spell the exchange (empty: ``name`` capitalized, e.g. "Kraken").
    title: str = ""

    @property
    def channels(self) -> tuple[str, ...]:
        return self.public_channels + self.private_channels

    @property
    def display_name(self) -> str:
        return self.title or self.name.capitalize()

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.apis)})"


def split_subscriptions(subs: Sequence[Subscription],
                        per_connection: int | None) -> list[list[Subscription]]:
    """Spread subscriptions over as few connections as ``per_connection`` topics allow
    (a topic is one channel of one symbol); a subscription is split by symbols if needed."""
    if not per_connection:
        return [list(subs)] if subs else []
    groups: list[list[Subscription]] = [[]]
    room = per_connection
    for sub in subs:
        symbols = list(sub.symbols) or [""]
        while symbols:
            if room == 0:
                groups.append([])
                room = per_connection
            take, symbols = symbols[:room], symbols[room:]
            groups[-1].append(Subscription(sub.channel, tuple(s for s in take if s),
                                           sub.depth, sub.interval))
            room -= len(take)
    return [g for g in groups if g]
