"""Problems the sink meets: logged, handed to ``on_problem``, and recorded in ``events``.

Gaps are data (design principle 1): anything that changed or delayed what was stored
becomes an ``events`` row, not only a log line. The rows are queued here and the writer
thread stores them, so a reporting thread never blocks on the sink's own back-pressure.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

from recorder.schema import TABLES

log = logging.getLogger("sinks")

OnProblem = Callable[[str, dict], None]
_EVENT_COLUMNS = [c.name for c in TABLES["events"]]


def event_row(exchange: str, ts_us: int, kind: str, detail: dict, *,
              symbol: str | None = None, channel: str | None = None) -> tuple:
    values = {"exchange": exchange, "ts_recv": ts_us, "kind": kind, "symbol": symbol,
              "channel": channel, "detail": json.dumps(detail, separators=(",", ":"))}
    return tuple(values.get(name) for name in _EVENT_COLUMNS)


class Reporter:
    def __init__(self, exchange: str, on_problem: OnProblem | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.exchange = exchange
        self.on_problem = on_problem
        self.clock = clock
        self.events: deque[tuple] = deque()  # drained by the writer thread
        self.counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def problem(self, kind: str, detail: dict, *, level: int = logging.WARNING,
                event: bool = True, symbol: str | None = None, channel: str | None = None,
                ts_us: int | None = None) -> None:
        with self._lock:
            self.counts[kind] += 1
        log.log(level, "%s: %s", kind, detail)
        if event:
            ts = ts_us if ts_us is not None else int(self.clock() * 1_000_000)
            self.events.append(event_row(self.exchange, ts, kind, detail, symbol=symbol,
                                         channel=channel))
        if self.on_problem is not None:
            try:
                self.on_problem(kind, detail)
            except Exception:  # noqa: BLE001 - a broken callback must not stop recording
                log.exception("on_problem callback failed for %s", kind)
