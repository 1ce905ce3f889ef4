"""``[connection] redundancy = 2``: a second connection that carries the trades again, so a
single dropped connection loses none.

The collector keeps the redundant connection beside its recorded one (the same exchange
feed, built for the trade subscriptions only) and reads both. Every trades row from either
goes through one ``RecentKeys`` before the sink: the first copy of a trade is recorded, the
second dropped, whichever connection it came on. Rows are told apart by their content
without the receive time (two copies of one trade differ only there), remembered for
``WINDOW`` seconds: longer than the two connections can drift apart while both are live.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Seconds a trade's key is remembered (two generations of this length are kept).
WINDOW = 30.0
class RecentKeys:
    """Trades recorded in about the last ``window`` to ``2 * window`` seconds, by ``key``
    (the collector's: a row's content without its receive time, what two copies of one
    trade share)."""

    def __init__(self, key: Callable[[tuple], object], window: float = WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.key = key
        self.window = window
        self._clock = clock
        self._current: set = set()
        self._previous: set = set()
        self._turn = clock() + window
        self.dropped = 0

    def fresh(self, rows: list[tuple]) -> list[tuple]:
        """The rows not seen before (and remember them)."""
        now = self._clock()
        if now >= self._turn:
            self._previous, self._current = self._current, set()
            self._turn = now + self.window
        current, previous, key = self._current, self._previous, self.key
        out = []
        for r in rows:
            k = key(r)
            if k in current or k in previous:
                continue
            current.add(k)
            out.append(r)
        self.dropped += len(rows) - len(out)
        return out
