"""Kraken, as the recorder knows it: what it supports and the hooks the runtime calls.

Cheap to import (config validation and the supervisor read it): the hooks import the
parsers, REST and token modules only when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recorder.exchanges.base import ExchangeSpec, Feed, ReplaySession, Subscription
from recorder.exchanges.kraken.common import (
    BOOK_DEPTHS,
    OHLC_INTERVALS,
    PRIVATE_CHANNELS,
    PUBLIC_CHANNELS,
)


def _lookup_symbol(name: str, rest_url: str | None) -> str | None:
    from recorder.exchanges.kraken.pair_list import lookup_pair, lookup_remote

    pair = lookup_pair(name)
    if pair is None and rest_url:
        pair = lookup_remote(name, rest_url)
    return pair.symbol if pair is not None else None


def _unknown_symbol_hint() -> str:
    from recorder.exchanges.kraken.pair_list import unknown_pair_hint

    return (f"{unknown_pair_hint()}; use BASE/QUOTE such as BTC/USD, ETH/EUR or XBT/USD")


def _check_subscriptions(api: str, subs: Sequence[Any]) -> list[tuple[int, str, str]]:
    # Kraken allows one depth per book symbol per connection ("Already subscribed"), and on
    # v2 a single ticker stream per symbol, which is either bbo (spread) or trades (ticker).
    problems: list[tuple[int, str, str]] = []
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
                problems.append((i, "symbols", f"{sym} is already subscribed by subscribe[{j}]: "
                                 f"Kraken refuses {what} on one connection; put it in a second "
                                 "config file"))
                return problems
            seen[(kind, sym)] = i
    return problems


def _public_feed(config: Any, url: str | None = None,
                 subscriptions: Sequence[Subscription] | None = None) -> Feed:
    from recorder.exchanges.kraken.feed import public_feed

    return public_feed(config, url, subscriptions)


def _private_feed(config: Any, data_root: Any) -> Feed:
    from recorder.exchanges.kraken.private_feed import make_private_adapter

    return make_private_adapter(config, data_root)


def _check_credentials(config: Any) -> None:
    from recorder.exchanges.kraken.private_feed import check_credentials

    check_credentials(config)


def _list_symbols() -> Any:
    from recorder.exchanges.kraken.commands import list_symbols

    return list_symbols()


def _update_symbols(rest_url: str) -> str:
    from recorder.exchanges.kraken.commands import update_symbols

    return update_symbols(rest_url)


def _fetch_token(config: Any, rest_url: str, timeout: float, retries: int) -> Any:
    from recorder.exchanges.kraken.commands import fetch_token

    return fetch_token(config, rest_url, timeout, retries)


# Tardis moved its Kraken capture from WS v1 to v2 on this date (tardis-node's
# KRAKEN_V2_API_SWITCH_DATE) and names instruments as the API of the day does: XBT/USD
# before it, BTC/USD from it on.
TARDIS_KRAKEN_V2_SINCE = "2026-07-10"


def _tardis_names(symbol: str) -> list[tuple[str | None, str]]:
    from recorder.exchanges.kraken.pairs import v1_name

    return [(TARDIS_KRAKEN_V2_SINCE, v1_name(symbol)), (None, symbol)]


def _replay_session(endpoint: str) -> ReplaySession:
    from recorder.exchanges.kraken.replay import replay_session

    return replay_session(endpoint)


SPEC = ExchangeSpec(
    name="kraken",
    apis=("v1", "v2"),
    default_api="v2",
    public_channels=PUBLIC_CHANNELS,
    private_channels=PRIVATE_CHANNELS,
    book_depths=BOOK_DEPTHS,
    default_book_depth=10,
    ohlc_intervals=OHLC_INTERVALS,
    default_urls={"v1": ("wss://ws.kraken.com", "wss://ws-auth.kraken.com"),
                  "v2": ("wss://ws.kraken.com/v2", "wss://ws-auth.kraken.com/v2")},
    default_rest_url="https://api.kraken.com",
    lookup_symbol=_lookup_symbol,
    unknown_symbol_hint=_unknown_symbol_hint,
    check_subscriptions=_check_subscriptions,
    public_feed=_public_feed,
    private_feed=_private_feed,
    check_credentials=_check_credentials,
    replay_session=_replay_session,
    list_symbols=_list_symbols,
    update_symbols=_update_symbols,
    wire_name_label="v1 name",
    tardis_names=_tardis_names,
    fetch_token=_fetch_token,
    default_credential_env=("KRAKEN_API_KEY", "KRAKEN_API_SECRET"),
)
