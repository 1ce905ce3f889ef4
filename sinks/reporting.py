"""Problems the sink meets: logged, handed to ``on_problem``, and recorded in ``events``.

Gaps are data (design principle 1): anything that changed or delayed what was stored
becomes an ``events`` row, not only a log line. The rows are queued here and the writer
thread stores them, so a reporting thread never blocks on the sink's own back-pressure.

The queue is bounded (``max_events``): past it, an event is not queued but counted by
kind, and ``take`` adds one ``events_dropped`` row with those counts. That happens when the
writer cannot store anything for a long time (a disk that stays full) while problems keep
coming, e.g. a flood of unconvertible values; it is never silent.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

from recorder.core.schema import TABLES

log = logging.getLogger("sinks")

OnProblem = Callable[[str, dict], None]
_EVENT_COLUMNS = [c.name for c in TABLES["events"]]


def event_row(exchange: str, ts_us: int, kind: str, detail: dict, *,
              symbol: str | None = None, channel: str | None = None) -> tuple:
    values = {"exchange": exchange, "ts_recv": ts_us, "kind": kind, "symbol": symbol,
              "channel": channel, "detail": json.dumps(detail, separators=(",", ":"))}
    return tuple(values.get(name) for name in _EVENT_COLUMNS)


MAX_EVENTS = 10_000  # a few MB of queued event rows at most


class Reporter:
    def __init__(self, exchange: str, on_problem: OnProblem | None,
                 clock: Callable[[], float] = time.time, max_events: int = MAX_EVENTS) -> None:
        self.exchange = exchange
        self.on_problem = on_problem
        self.clock = clock
        self.max_events = max_events
        self.events: deque[tuple] = deque()  # drained by the writer thread (``take``)
        self.counts: dict[str, int] = defaultdict(int)
        self.dropped: dict[str, int] = defaultdict(int)  # not queued: the queue was full
        self._dropped_since: int | None = None
        self._lock = threading.Lock()

    def problem(self, kind: str, detail: dict, *, level: int = logging.WARNING,
                event: bool = True, symbol: str | None = None, channel: str | None = None,
                ts_us: int | None = None) -> None:
        with self._lock:
            self.counts[kind] += 1
        log.log(level, "%s: %s", kind, detail)
        if event:
            ts = ts_us if ts_us is not None else int(self.clock() * 1_000_000)
            with self._lock:
                if len(self.events) < self.max_events:
                    self.events.append(event_row(self.exchange, ts, kind, detail,
                                                 symbol=symbol, channel=channel))
                else:
                    self.dropped[kind] += 1
                    if self._dropped_since is None:
                        self._dropped_since = ts
        if self.on_problem is not None:
            try:
                self.on_problem(kind, detail)
            except Exception:  # noqa: BLE001 - a broken callback must not stop recording
                log.exception("on_problem callback failed for %s", kind)

    def take(self) -> list[tuple]:
        """Every queued event row, oldest first, plus an ``events_dropped`` row (counts by
        kind, stamped with the first drop) if the queue overflowed since the last take."""
        with self._lock:
            rows = list(self.events)
            self.events.clear()
            dropped, since = dict(self.dropped), self._dropped_since
            self.dropped.clear()
            self._dropped_since = None
        if dropped:
            log.error("events_dropped: %s (the event queue held %d rows)", dropped,
                      self.max_events)
            rows.append(event_row(self.exchange, since or int(self.clock() * 1_000_000),
                                  "events_dropped",
                                  {"count": sum(dropped.values()), "kinds": dropped}))
        return rows
