"""The private connection: own fills and order lifecycle, on a fresh token every time.

``private_feed.make_private_adapter`` builds the collector's Feed for a config's ``fills``
channel: it checks the credentials once at start-up (so a wrong key fails the process at once), and
before every (re)connect fetches a fresh token and subscribes again with a snapshot. Kraken
re-sends up to 50 past fills in that snapshot; ``PrivateState`` remembers what is already
recorded (seeded from the data directory) so each fill lands in ``fills`` exactly once. Fills
beyond those 50 come from REST ``TradesHistory`` (``reconcile.py``), de-duplicated against
the same memory.

The parsers themselves live in ``private_v1`` (ownTrades, openOrders) and ``private_v2``
(executions); this module holds what they share: the state and the row builders.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recorder.core.schema import TABLES
from recorder.core.secrets import CredentialError
from recorder.exchanges.kraken.common import EXCHANGE, Control, detail, event
from recorder.exchanges.reconcile import SNAPSHOT, FillLedger

if TYPE_CHECKING:
    pass

__all__ = ["CredentialError", "PrivateState", "fill_row",
           "order_row", "recorded_fill_keys"]

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
    per connection, since Kraken restarts them at 1 on each subscription (two connections
    are open at once while one replaces the other).
    """

    def __init__(self, remember: int = REMEMBER,
                 on_invalid_session: Callable[[], None] | None = None,
                 on_subscribed: Callable[[], None] | None = None) -> None:
        self.remember = remember
        self.on_invalid_session = on_invalid_session
        # A subscription's snapshot arrived: the stream is live (starts a reconciliation).
        self.on_subscribed = on_subscribed
        self.ledger = FillLedger(remember)
        self._orders: OrderedDict[str, tuple[str | None, str | None, str | None]] = (
            OrderedDict())
        self.sequences: dict[tuple[int, str], int] = {}
        self.notes: list[tuple[str, str | None, str]] = []  # events raised outside parse
        self.seeded = False

    # -- fills --------------------------------------------------------------------------

    @property
    def _fills(self) -> OrderedDict:
        return self.ledger._fills

    @property
    def duplicates(self) -> int:
        return self.ledger.duplicates

    def seed(self, keys: list[FillKey]) -> None:
        self.ledger.seed(keys)
        self.seeded = True

    def is_new_fill(self, key: FillKey, source: str | int = SNAPSHOT) -> bool:
        """True the first time a fill is seen (and remember it). ``source``: where it came
        from (see FillLedger): a connection's number for a live fill."""
        return self.ledger.is_new(key, source)

    def subscribed(self) -> None:
        if self.on_subscribed is not None:
            self.on_subscribed()

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

    def new_connection(self, conn: int | None = None) -> None:
        """A connection numbered ``conn`` is being opened: the sequences of connections
        older than the one it may replace are forgotten (all of them without a number)."""
        if conn is None:
            self.sequences.clear()
        else:
            for key in [k for k in self.sequences if k[0] < conn - 1]:
                del self.sequences[key]

    def check_sequence(self, channel: str, seq: Any, ts_recv: int,
                       out: dict[str, list[tuple]], conn: int = 0) -> Control | None:
        """Record a gap or disorder in ``events``; ask for a resubscribe on a gap, whose
        snapshot (the last 50 fills) brings back what was missed."""
        if not isinstance(seq, int) or isinstance(seq, bool):
            return None
        last = self.sequences.get((conn, channel))
        self.sequences[(conn, channel)] = seq
        expected = 1 if last is None else last + 1
        if seq == expected or (seq == 1 and last is not None):
            return None  # in order, or a new subscription on this connection
        kind = "sequence_gap" if seq > expected else "sequence_disorder"
        out["events"].append(event(EXCHANGE, ts_recv, kind, channel=channel,
                                   detail=detail(expected=expected, got=seq, missed=(
                                       seq - expected if seq > expected else None))))
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
                out["events"].append(event(EXCHANGE, ts_recv, kind, channel=channel, detail=text))
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
