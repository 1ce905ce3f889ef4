"""The private connection: own fills and order lifecycle, on a fresh token every time.

``make_private_adapter`` builds the collector's Adapter for a config's ``fills`` channel:
it checks the credentials once at start-up (so a wrong key fails the process at once), and
before every (re)connect fetches a fresh token and subscribes again with a snapshot. Kraken
re-sends up to 50 past fills in that snapshot; ``PrivateState`` remembers what is already
recorded (seeded from the data directory) so each fill lands in ``fills`` exactly once.

The parsers themselves live in ``private_v1`` (ownTrades, openOrders) and ``private_v2``
(executions); this module holds what they share: the state and the row builders.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recorder.core.schema import TABLES
from recorder.core.secrets import CredentialError
from recorder.exchanges.kraken.common import EXCHANGE, Control, detail

if TYPE_CHECKING:
    from recorder.capture.collector import Adapter
    from recorder.exchanges.kraken.token import TokenHelper

__all__ = ["CredentialError", "PrivateState", "check_credentials", "fill_row",
           "make_private_adapter", "order_row", "recorded_fill_keys"]

log = logging.getLogger("recorder.private")

# How many fills (and orders) to remember. Kraken's snapshot holds the last 50 fills, so any
# fill it can repeat is among the most recent ones recorded; this bounds memory for weeks.
REMEMBER = 10_000
# The start-up token may serve the first connection if it is this recent (seconds).
STARTUP_TOKEN_MAX_AGE = 10.0


def _builder(table: str) -> Callable[..., tuple]:
    # Rows are built by column name so that columns added to the schema later (e.g. exec_id)
    # are filled where the parser knows them and null otherwise.
    names = [c.name for c in TABLES[table]]

    def build(**values: Any) -> tuple:
        return tuple(values.get(n) for n in names)

    build.__name__ = f"{table}_row"
    return build


fill_row = _builder("fills")
order_row = _builder("orders")
FILL_COLUMNS = frozenset(c.name for c in TABLES["fills"])
ORDER_COLUMNS = frozenset(c.name for c in TABLES["orders"])

FillKey = tuple[str | None, str | None, str | None]  # symbol, trade_id, order_id


def fill_key(symbol: str | None, trade_id: str | None, order_id: str | None) -> FillKey:
    """What makes a fill unique: Kraken's trade id within the pair, and our order."""
    return (symbol, trade_id, order_id)


class PrivateState:
    """What the private parser remembers: recorded fills, known orders, sequence numbers.

    Fills and orders are remembered for the life of the process (bounded); sequence numbers
    only for the current connection, since Kraken restarts them at 1 on each subscription.
    """

    def __init__(self, remember: int = REMEMBER,
                 on_invalid_session: Callable[[], None] | None = None) -> None:
        self.remember = remember
        self.on_invalid_session = on_invalid_session
        self._fills: OrderedDict[FillKey, None] = OrderedDict()
        self._orders: OrderedDict[str, tuple[str | None, str | None, str | None]] = (
            OrderedDict())
        self.sequences: dict[str, int] = {}
        self.notes: list[tuple[str, str | None, str]] = []  # events raised outside parse
        self.seeded = False
        self.duplicates = 0

    # -- fills --------------------------------------------------------------------------

    def seed(self, keys: list[FillKey]) -> None:
        for key in keys:
            self._remember_fill(key)
        self.seeded = True

    def is_new_fill(self, key: FillKey) -> bool:
        """True the first time a fill is seen (and remember it)."""
        if key in self._fills:
            self._fills.move_to_end(key)
            self.duplicates += 1
            return False
        self._remember_fill(key)
        return True

    def _remember_fill(self, key: FillKey) -> None:
        self._fills[key] = None
        if len(self._fills) > self.remember:
            self._fills.popitem(last=False)

    # -- orders -------------------------------------------------------------------------

    def learn_order(self, order_id: str, symbol: str | None, side: str | None,
                    ord_type: str | None) -> None:
        known = self._orders.get(order_id)
        if known is not None:
            symbol, side, ord_type = (symbol or known[0], side or known[1],
                                      ord_type or known[2])
            self._orders.move_to_end(order_id)
        self._orders[order_id] = (symbol, side, ord_type)
        if len(self._orders) > self.remember:
            self._orders.popitem(last=False)

    def order_info(self, order_id: str) -> tuple[str | None, str | None, str | None]:
        """Symbol, side and order type learnt from earlier messages about the order:
        Kraken's updates often carry only what changed."""
        return self._orders.get(order_id, (None, None, None))

    # -- connection ---------------------------------------------------------------------

    def new_connection(self) -> None:
        self.sequences.clear()

    def check_sequence(self, channel: str, seq: Any, ts_recv: int,
                       out: dict[str, list[tuple]]) -> Control | None:
        """Record a gap or disorder in ``events``; ask for a resubscribe on a gap, whose
        snapshot (the last 50 fills) brings back what was missed."""
        if not isinstance(seq, int) or isinstance(seq, bool):
            return None
        last = self.sequences.get(channel)
        self.sequences[channel] = seq
        expected = 1 if last is None else last + 1
        if seq == expected or (seq == 1 and last is not None):
            return None  # in order, or a new subscription on this connection
        kind = "sequence_gap" if seq > expected else "sequence_disorder"
        out["events"].append((EXCHANGE, ts_recv, kind, None, channel,
                              detail(expected=expected, got=seq,
                                     missed=seq - expected if seq > expected else None),
                              None))
        log.warning("%s on %s: expected %d, got %d", kind, channel, expected, seq)
        if kind == "sequence_gap":
            return Control("resubscribe", f"{channel} sequence gap", channel)
        return None

    def invalid_session(self) -> None:
        if self.on_invalid_session is not None:
            self.on_invalid_session()

    def note(self, kind: str, channel: str | None, text: str) -> None:
        self.notes.append((kind, channel, text))

    def flush_notes(self, ts_recv: int, out: dict[str, list[tuple]]) -> None:
        if self.notes:
            for kind, channel, text in self.notes:
                out["events"].append((EXCHANGE, ts_recv, kind, None, channel, text, None))
            self.notes.clear()


def session_control(control: Control | None, state: PrivateState) -> Control | None:
    """Any refusal of the token, whatever form it came in, becomes the subscribe_error the
    collector reconnects on (which fetches a fresh token)."""
    if control is None or control.kind not in ("error", "subscribe_error"):
        return control
    if control.value and "Invalid session" in control.value:
        state.invalid_session()
        return Control("subscribe_error", control.value, control.channel or "fills",
                       control.symbol)
    return control


def recorded_fill_keys(data_root: Path, limit: int = REMEMBER) -> list[FillKey]:
    """The most recent fills already under ``data_root`` (Parquet files and journal
    segments not yet finalized), oldest first."""
    import duckdb

    keys: list[tuple[Any, ...]] = []
    con = duckdb.connect()
    try:
        files = data_root / "fills"
        if files.is_dir() and any(files.rglob("*.parquet")):
            pattern = str(files.resolve() / "**" / "*.parquet").replace("'", "''")
            keys += con.execute(
                "SELECT symbol, trade_id, order_id, epoch_us(ts_exchange) FROM read_parquet("
                f"'{pattern}', hive_partitioning = true, union_by_name = true) "
                "ORDER BY ts_exchange DESC NULLS LAST LIMIT ?", [limit]).fetchall()
        for table in _pending_fills(data_root):
            con.register("_pending_fills", table)
            keys += con.execute("SELECT symbol, trade_id, order_id, epoch_us(ts_exchange) "
                                "FROM _pending_fills").fetchall()
            con.unregister("_pending_fills")
    finally:
        con.close()
    keys.sort(key=lambda k: k[3] if k[3] is not None else -1)
    return [fill_key(s, t, o) for s, t, o, _ in keys[-limit:]]


def _pending_fills(data_root: Path) -> list[Any]:
    try:
        from sinks.journal_readers import pending_batches
    except ImportError:
        return []
    return list(pending_batches(data_root, "fills"))


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
                         check_credentials: bool = True) -> Adapter:
    """The collector's adapter for the config's private channel (``fills``).

    Raises ``CredentialError`` when the credentials are missing, unreadable, or refused by
    Kraken at start-up; other start-up token failures are only logged, and the collector
    retries them with backoff when connecting.
    """
    from recorder.core import secrets
    from recorder.capture.collector import Adapter
    from recorder.exchanges.kraken import private_v1, private_v2
    from recorder.exchanges.kraken.token import TokenError, TokenHelper

    mod = private_v1 if config.api == "v1" else private_v2
    if token_helper is None:
        token_helper = TokenHelper(config.rest_url, credentials=secrets.load(config))
    helper = token_helper
    state = PrivateState(on_invalid_session=helper.invalidate)
    startup: list[tuple[str, float]] = []
    if check_credentials:
        try:
            startup.append((helper.fresh(), time.monotonic()))
        except CredentialError:
            raise
        except TokenError as e:
            log.warning("%s; will retry when connecting", e)
    reqid = [0]

    def connect_requests() -> list[str]:
        if not state.seeded:
            _seed(state, data_root)
        if startup and time.monotonic() - startup[0][1] < STARTUP_TOKEN_MAX_AGE:
            token = startup.pop()[0]
        else:
            startup.clear()
            token = helper.fresh()
        state.new_connection()
        reqid[0] += 10
        return mod.subscribe_requests(token, reqid[0])

    return Adapter(config.auth_url, mod.decode, partial(mod.parse, state=state),
                   connect_requests, mod.ping_request, None, {})


def _seed(state: PrivateState, data_root: Path) -> None:
    try:
        keys = recorded_fill_keys(data_root, state.remember)
    except Exception as e:  # noqa: BLE001 - unreadable history must not stop recording
        log.warning("cannot read the fills recorded under %s (%s): snapshot fills may be "
                    "recorded twice", data_root, e)
        state.note("fills_seed_failed", "fills", detail(error=str(e)[:300]))
        state.seed([])
        return
    state.seed(keys)
    state.note("fills_seeded", "fills", detail(recorded=len(keys)))
