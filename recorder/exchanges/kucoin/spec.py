"""KuCoin spot, as the recorder knows it: what it supports and the hooks the runtime calls.

Cheap to import (config validation and the supervisor read it): no msgspec, no pyarrow, no
network; the hooks import the parsers, REST client and symbol list only when called.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from recorder.exchanges.base import ExchangeSpec, Feed, ReplaySession, Subscription
from recorder.exchanges.kucoin.common import (
    API,
    BOOK_DEPTHS,
    DEFAULT_KEY_ENV,
    DEFAULT_PASSPHRASE_ENV,
    DEFAULT_REST_URL,
    DEFAULT_SECRET_ENV,
    EXCHANGE,
    MAX_CONNECTION_AGE,
    MAX_TOPICS_PER_CONNECTION,
    MAX_TOPICS_PER_MESSAGE,
    OHLC_INTERVALS,
    PRIVATE_CHANNELS,
    PUBLIC_CHANNELS,
    wire,
)

_PRIVATE_MODULE = "recorder.exchanges.kucoin.private"


def _lookup_symbol(name: str, rest_url: str | None) -> str | None:
    from recorder.exchanges.kucoin.symbols import lookup_symbol

    return lookup_symbol(name, rest_url)


def _unknown_symbol_hint() -> str:
    from recorder.exchanges.kucoin.symbols import unknown_symbol_hint

    return f"{unknown_symbol_hint()}; use BASE/QUOTE such as BTC/USDT (or KuCoin's BTC-USDT)"


def _private_available() -> bool:
    try:
        return importlib.util.find_spec(_PRIVATE_MODULE) is not None
    except ModuleNotFoundError:
        return False


def check_subscriptions(api: str, subs: Sequence[Any]) -> list[tuple[int, str, str]]:
    """KuCoin-specific mistakes in one config's subscriptions.

    One connection keeps one book per symbol (a top-N stream and the level2 book of the same
    symbol would overwrite each other's rows in the book keeper), and a topic subscribed
    twice is refused by KuCoin.
    """
    problems: list[tuple[int, str, str]] = []
    seen: dict[tuple[str, Any, str], int] = {}
    for i, s in enumerate(subs):
        channel = getattr(s, "channel", None)
        if channel in PRIVATE_CHANNELS and not _private_available():
            problems.append((i, "channel", f"KuCoin {channel} are not supported by this "
                             "version of the recorder yet"))
            continue
        key_extra = getattr(s, "interval", None) if channel == "ohlc" else None
        for sym in getattr(s, "symbols", ()) or ():
            key = (channel, key_extra, sym)
            if key in seen:
                j = seen[key]
                what = ("a second book (one depth per symbol: level2 or a top-N stream)"
                        if channel == "book" else "the same topic twice")
                problems.append((i, "symbols", f"{sym} is already subscribed by "
                                 f"subscribe[{j}]: one KuCoin connection records {what}; "
                                 "put it in a second config file"))
                break
            seen[key] = i
    return problems


def _public_feed(config: Any, url: str | None = None,
                 subscriptions: Sequence[Subscription] | None = None) -> Feed:
    from recorder.exchanges.kucoin.feed import public_feed

    return public_feed(config, url, subscriptions)


def _private_feed(config: Any, data_root: Any) -> Feed:
    module = importlib.import_module(_PRIVATE_MODULE)
    return module.private_feed(config, data_root)


def _check_credentials(config: Any) -> None:
    """Refuse missing or unreadable credentials at start-up; with a private channel, also
    credentials KuCoin refuses (judged by a private bullet, as the private connection will
    ask one). Only a warning when KuCoin cannot be asked now."""
    from recorder.exchanges.kucoin import credentials

    if credentials.configured(config):
        loaded = credentials.load(config)
        if getattr(config, "private_subscriptions", None):
            from recorder.exchanges.kucoin.private import check_bullet
            from recorder.exchanges.kucoin.rest import KucoinRest

            rest_url = getattr(config, "rest_url", None) or DEFAULT_REST_URL
            check_bullet(KucoinRest(rest_url, loaded))


def _list_symbols() -> Any:
    from recorder.exchanges.kucoin.commands import list_symbols

    return list_symbols()


def _update_symbols(rest_url: str) -> str:
    from recorder.exchanges.kucoin.commands import update_symbols

    return update_symbols(rest_url)


def _fetch_token(config: Any, rest_url: str, timeout: float, retries: int) -> Any:
    from recorder.exchanges.kucoin.commands import fetch_token

    return fetch_token(config, rest_url, timeout, retries)


def tardis_names(symbol: str) -> list[tuple[str | None, str]]:
    """Tardis names KuCoin spot instruments as KuCoin does (BTC-USDT), in every era."""
    return [(None, wire(symbol))]


def _replay_session(endpoint: str) -> ReplaySession:
    from recorder.exchanges.kucoin.replay import replay_session

    return replay_session(endpoint)


SPEC = ExchangeSpec(
    name=EXCHANGE,
    title="KuCoin",
    apis=(API,),
    default_api=API,
    public_channels=PUBLIC_CHANNELS,
    private_channels=PRIVATE_CHANNELS,
    book_depths=BOOK_DEPTHS,
    default_book_depth=None,
    ohlc_intervals=OHLC_INTERVALS,
    # The WebSocket endpoint comes from the bullet answer (or [exchange] url).
    default_urls={API: ("", "")},
    default_rest_url=DEFAULT_REST_URL,
    credential_keys=("api_key_env", "api_secret_env", "api_passphrase_env", "key_version"),
    required_credentials=("api_key_env", "api_secret_env", "api_passphrase_env"),
    default_max_connection_age=MAX_CONNECTION_AGE,
    max_topics_per_message=MAX_TOPICS_PER_MESSAGE,
    max_topics_per_connection=MAX_TOPICS_PER_CONNECTION,
    lookup_symbol=_lookup_symbol,
    unknown_symbol_hint=_unknown_symbol_hint,
    check_subscriptions=check_subscriptions,
    public_feed=_public_feed,
    private_feed=_private_feed,
    check_credentials=_check_credentials,
    # With credentials the level2 books are synced from the signed full-depth snapshot, so
    # they are checked at start-up for public connections too.
    public_uses_credentials=True,
    replay_session=_replay_session,
    list_symbols=_list_symbols,
    update_symbols=_update_symbols,
    wire_name_label="KuCoin name",
    fetch_token=_fetch_token,
    tardis_names=tardis_names,
    default_credential_env=(DEFAULT_KEY_ENV, DEFAULT_SECRET_ENV, DEFAULT_PASSPHRASE_ENV),
)
