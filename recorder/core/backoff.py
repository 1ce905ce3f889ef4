"""Reconnect delays: capped exponential backoff with full jitter."""

from __future__ import annotations

import random


class Backoff:
    """Delay before the next attempt: uniform in [initial, min(cap, initial * 2**n)].

    Jitter spreads the reconnects of many collectors after a shared outage; the cap keeps a
    weeks-long job retrying at a bounded pace forever.
    """

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial, self.cap = initial, cap
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return self._rng.uniform(self.initial, max(self.initial, ceiling))

    def reset(self) -> None:
        self.attempts = 0
