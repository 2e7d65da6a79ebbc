"""safemap.Cache's frequency sketch (4-bit counters in cache-line blocks behind a
doorkeeper, see docs/cache.md, "Eviction policy"), observed through ``_frequency(key)``:
estimates never undercount, counters saturate at 15, aging halves every counter and
empties the doorkeeper. Single-threaded, so every access reaches the policy in order
and every estimate is exact where asserted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import safemap

SIZE = 256


def filled(size: int) -> safemap.Cache[int, int]:
    """A full cache: the sketch has its final width (growing it empties the
    doorkeeper) and nothing is evicted by the reads below."""
    c: safemap.Cache[int, int] = safemap.Cache(size)
    for k in range(size):
        c.store(k, k)
    return c


def read(c: safemap.Cache[int, int], key: int, times: int) -> None:
    for _ in range(times):
        assert c.get(key) == key


def apply_notes(c: safemap.Cache[int, int]) -> None:
    """Every write applies the recorded reads first (a key never stored: a miss)."""
    assert c.get(-1) is None
    c.store(-1, -1)
    del c[-1]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 24), min_size=1, max_size=SIZE))
def test_estimates_never_undercount_a_keys_uses(counts: list[int]) -> None:
    """Key k read counts[k] times: its estimate (the least of its 4 counters, plus one
    once the doorkeeper has seen it) is at least min(uses, 16), collisions only add.
    A counter written in one place and read in another (rows or blocks mixed up
    between increment and estimate) undercounts."""
    c = filled(SIZE)
    for k, n in enumerate(counts):
        read(c, k, n)
    apply_notes(c)
    for k, n in enumerate(counts):
        f = c._frequency(k)
        assert min(n, 16) <= f <= 16, (k, n, f)


def test_counters_saturate_at_15() -> None:
    """100 uses: 15 in every counter (plus the doorkeeper's one), not a counter that
    wrapped around or carried into its neighbour."""
    c = filled(SIZE)
    read(c, 7, 100)
    apply_notes(c)
    assert c._frequency(7) == 16
    read(c, 7, 50)
    apply_notes(c)
    assert c._frequency(7) == 16
    # The neighbours of a saturated key are not lifted past their own uses + 1.
    assert sum(c._frequency(k) for k in range(SIZE) if k != 7) < SIZE


def test_aging_halves_every_counter_and_empties_the_doorkeeper() -> None:
    """New keys (each one counted addition) until the period ends: then every counter
    is halved (15 -> 7, n -> n // 2) and the doorkeeper's +1 is gone."""
    size = 32
    c = filled(size)
    read(c, 3, 40)  # saturated: 15 + 1
    read(c, 5, 9)
    apply_notes(c)
    assert c._frequency(3) == 16
    before = {k: c._frequency(k) for k in range(size)}
    assert before[5] >= 9
    fresh = 10**6
    while c._frequency(3) == 16:
        fresh += 1
        assert fresh < 10**6 + 100 * size, "the counters were never halved"
        c.store(fresh, 0)  # one counted addition; reads no estimate of 3 or 5
    assert c._frequency(3) == 7
    for k in range(size):
        # Keys seen before had the doorkeeper's +1; it is gone, the counters halved.
        if before[k] >= 2:
            assert c._frequency(k) == (before[k] - 1) // 2, k


def test_estimates_of_unseen_keys_stay_low_next_to_frequent_ones() -> None:
    """1,000 keys read 9 times each in a sketch sized for 1,000 entries: most keys
    never used have an estimate of 0 (count-min keeps collisions rare when a key's
    4 counters sit in two blocks), and none reaches the frequent keys' estimate."""
    c = filled(1000)
    for k in range(1000):
        read(c, k, 9)
    apply_notes(c)
    assert all(c._frequency(k) >= 9 for k in range(1000))
    unseen = [c._frequency(k) for k in range(10**6, 10**6 + 2000)]
    assert max(unseen) < 9
    assert sum(f == 0 for f in unseen) >= 0.9 * len(unseen)
