"""Reconnect and resync delays: capped exponential backoff with full jitter."""

from __future__ import annotations

import random

import pytest

from recorder.core.backoff import Backoff


def test_delays_grow_exponentially_up_to_the_cap():
    b = Backoff(0.5, 8.0, random.Random(1))
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for ceiling in ceilings:
        assert 0.5 <= b.next_delay() <= ceiling
    assert b.attempts == len(ceilings)
    # Far past the cap (and past 2**30) the ceiling stays the cap.
    b.attempts = 10_000
    assert all(0.5 <= b.next_delay() <= 8.0 for _ in range(100))


@pytest.mark.parametrize("attempt,ceiling", [(0, 0.5), (1, 1.0), (3, 4.0), (6, 10.0)])
def test_each_attempt_is_jittered_over_its_whole_range(attempt, ceiling):
    """Full jitter: many collectors that lost the same server spread out over
    [initial, ceiling] instead of reconnecting together."""
    rng = random.Random(attempt)
    delays = []
    for _ in range(2000):
        b = Backoff(0.5, 10.0, rng)
        b.attempts = attempt
        delays.append(b.next_delay())
    assert min(delays) >= 0.5 and max(delays) <= ceiling
    if ceiling > 0.5:
        width = ceiling - 0.5
        # Uniform: both ends of the range are reached and the mean sits in the middle.
        assert min(delays) < 0.5 + 0.05 * width and max(delays) > ceiling - 0.05 * width
        assert abs(sum(delays) / len(delays) - (0.5 + ceiling) / 2) < 0.05 * width
    else:
        assert set(delays) == {0.5}


def test_reset_starts_over_from_the_initial_delay():
    b = Backoff(1.0, 60.0, random.Random(3))
    for _ in range(8):
        b.next_delay()
    b.reset()
    assert b.attempts == 0
    assert b.next_delay() == 1.0


def test_cap_below_initial_never_goes_under_initial():
    b = Backoff(2.0, 1.0, random.Random(4))
    assert all(b.next_delay() == 2.0 for _ in range(5))
