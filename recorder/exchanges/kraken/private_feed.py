"""The private feed: own fills and order lifecycle, on a fresh token for every connection.

``make_private_adapter`` builds the collector's Feed for a config's ``fills`` channel (the
parsing state and its helpers are in recorder/exchanges/kraken/private.py). After every
(re)connect, once the subscription's snapshot arrived, and then every 15 minutes, the fills
since the last reconciliation are read from REST ``TradesHistory`` on a worker thread
(``Feed.poll``), so that no fill is lost to an outage longer than the snapshot's 50 fills
or to a stop of the job (recorder/exchanges/reconcile.py).
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recorder.core.events import detail
from recorder.core.secrets import CredentialError
from recorder.exchanges.kraken.common import EXCHANGE
from recorder.exchanges.kraken.private import STARTUP_TOKEN_MAX_AGE, PrivateState
from recorder.exchanges.reconcile import Reconciler, recorded_history

if TYPE_CHECKING:
    from recorder.exchanges.base import Feed
    from recorder.exchanges.kraken.token import TokenHelper

log = logging.getLogger("recorder.private")


def check_credentials(config: Any) -> None:
    """Fail now, with ``CredentialError``, if the config's credentials are missing,
    unreadable or refused by Kraken; only warn if Kraken cannot be asked right now.

    For ``recorder run``: before it starts one process per connection, so that a wrong key
    stops the whole job at once instead of only its private connection."""
    from recorder.core import secrets
    from recorder.exchanges.kraken.token import TokenError, TokenHelper

    helper = TokenHelper(config.rest_url, credentials=secrets.load(config))
    try:
        helper.fresh()
    except TokenError as e:
        log.warning("%s; the private connection will retry", e)


def make_private_adapter(config: Any, data_root: Path, *,
                         token_helper: TokenHelper | None = None,
                         check_credentials: bool = True) -> Feed:
    """The collector's feed for the config's private channel (``fills``).

    Raises ``CredentialError`` when the credentials are missing, unreadable, or refused by
    Kraken at start-up; other start-up token failures are only logged, and the collector
    retries them with backoff when connecting.
    """
    from recorder.core import secrets
    from recorder.exchanges.base import ConnectPlan, Feed
    from recorder.exchanges.kraken import private_v1, private_v2
    from recorder.exchanges.kraken.book_rule import RULE
    from recorder.exchanges.kraken.feed import refused_for_now, session_invalid
    from recorder.exchanges.kraken.reconcile import SOURCE, TradesHistory
    from recorder.exchanges.kraken.rest import PrivateClient
    from recorder.exchanges.kraken.token import TokenError, TokenHelper

    mod = private_v1 if config.api == "v1" else private_v2
    credentials = secrets.load(config)
    if token_helper is None:
        token_helper = TokenHelper(config.rest_url, credentials=credentials)
    helper = token_helper
    state = PrivateState(on_invalid_session=helper.invalidate)
    history = TradesHistory(PrivateClient(config.rest_url, credentials), state, config.api,
                            config.rest_url)
    reconciler = Reconciler(EXCHANGE, SOURCE, history.fetch, history.record)
    state.on_subscribed = reconciler.subscribed
    startup: list[tuple[str, float]] = []
    if check_credentials:
        try:
            startup.append((helper.fresh(), time.monotonic()))
        except CredentialError:
            raise
        except TokenError as e:
            log.warning("%s; will retry when connecting", e)
    reqid = [0]
    conn = [0]

    def prepare() -> ConnectPlan:
        if not state.seeded:
            _seed(state, data_root, reconciler)
        if startup and time.monotonic() - startup[0][1] < STARTUP_TOKEN_MAX_AGE:
            token = startup.pop()[0]
        else:
            startup.clear()
            token = helper.fresh()
        conn[0] += 1
        state.new_connection(conn[0])
        reconciler.connecting()
        reqid[0] += 10
        return ConnectPlan(config.auth_url, mod.subscribe_requests(token, reqid[0]),
                           acks_expected=1, parse=partial(mod.parse, state=state,
                                                          conn=conn[0]))

    return Feed(EXCHANGE, config.auth_url, mod.decode, partial(mod.parse, state=state),
                prepare, mod.ping_request, RULE, refused_for_now=refused_for_now,
                session_invalid=session_invalid, poll=reconciler.poll)


def _seed(state: PrivateState, data_root: Path, reconciler: Reconciler | None = None) -> None:
    """Load what the data directory holds: recorded fills (for de-duplication) and where
    the last reconciliation left off."""
    try:
        history = recorded_history(data_root, EXCHANGE, state.remember)
    except Exception as e:  # noqa: BLE001 - unreadable history must not stop recording
        log.warning("cannot read the fills recorded under %s (%s): snapshot fills may be "
                    "recorded twice", data_root, e)
        state.note("fills_seed_failed", "fills", detail(error=str(e)[:300]))
        state.seed([])
        return
    state.seed(history.keys)
    if reconciler is not None:
        reconciler.restore(history)
    state.note("fills_seeded", "fills", detail(recorded=len(history.keys)))
