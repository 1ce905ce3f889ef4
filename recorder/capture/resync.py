"""Book resyncs in flight: which symbols wait for a fresh snapshot, and when to ask again.

A resync is an unsubscribe and subscribe of one symbol's book. Kraken may refuse the
subscribe ("Exceeded msg rate") or never answer; without a retry the symbol would stay
unverified until the next reconnect. Each attempt waits ``timeout`` seconds for the
snapshot; a refusal is retried sooner, after a capped, jittered backoff. After ``attempts``
attempts the collector reconnects, which brings fresh snapshots of everything.

Pure bookkeeping with an injected clock: the collector sends the requests and records the
events.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from recorder.core.backoff import Backoff


@dataclass(slots=True)
class PendingResync:
    symbol: str
    depth: int
    backoff: Backoff
    attempts: int = 0  # requests sent so far
    due: float = 0.0  # monotonic time of the next step (send, or give up on this attempt)
    reqid: int | None = None  # of the subscribe in flight; a refusal names it
    why: str = "mismatch"  # why the next send happens: mismatch | refused | timeout


@dataclass
class ResyncTracker:
    timeout: float
    attempts: int
    backoff_initial: float
    backoff_max: float
    rng: random.Random | None = None
    pending: dict[str, PendingResync] = field(default_factory=dict)

    def begin(self, symbol: str, depth: int, now: float) -> PendingResync:
        """A symbol's book is wrong: ask for a snapshot now (an ongoing resync goes on)."""
        entry = self.pending.get(symbol)
        if entry is None:
            entry = self.pending[symbol] = PendingResync(
                symbol, depth, Backoff(self.backoff_initial, self.backoff_max, self.rng),
                due=now)
        return entry

    def due(self, now: float) -> list[PendingResync]:
        """Entries whose next step has come: send again, or give up (see ``exhausted``)."""
        out = [e for e in self.pending.values() if e.due <= now]
        for e in out:
            if e.reqid is not None:  # waited for a snapshot that did not come
                e.why, e.reqid = "timeout", None
        return out

    def exhausted(self, entry: PendingResync) -> bool:
        return entry.attempts >= self.attempts

    def sent(self, entry: PendingResync, reqid: int, now: float) -> None:
        entry.attempts += 1
        entry.reqid = reqid
        entry.due = now + self.timeout

    def refused(self, reqid: int | None, now: float) -> PendingResync | None:
        """Kraken refused the subscribe ``reqid``: retry after a backoff delay."""
        if reqid is None:
            return None
        for entry in self.pending.values():
            if entry.reqid == reqid:
                entry.reqid = None
                entry.why = "refused"
                entry.due = now + entry.backoff.next_delay()
                return entry
        return None

    def done(self, symbol: str) -> PendingResync | None:
        """The fresh snapshot arrived."""
        return self.pending.pop(symbol, None)

    def clear(self) -> None:
        """A new connection subscribes everything afresh."""
        self.pending.clear()
