"""safemap.Cache's W-TinyLFU policy on seeded traces: the doorkeeper and aging period
(hit counts on a Zipf trace) and the adaptive window (it grows where recency pays and
stays small where frequency does). Single-threaded and seeded, so every count is exact
and the same on every run and build (see docs/cache.md, "Eviction policy")."""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter

import pytest

import safemap


def zipf(alpha: float, n: int, nkeys: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    cdf = list(itertools.accumulate(1.0 / r**alpha for r in range(1, nkeys + 1)))
    return [bisect.bisect_left(cdf, rng.random() * cdf[-1]) for _ in range(n)]


def shifting(size: int, n: int, seed: int = 1) -> list[int]:
    """Phases of 5 x ``size`` requests over ``size // 2`` keys never used before: a
    working set that fits, replaced by a new one. Recency is all that helps."""
    rng = random.Random(seed)
    out: list[int] = []
    base = 0
    while len(out) < n:
        hot = range(base, base + size // 2)
        base += size // 2
        out.extend(rng.choice(hot) for _ in range(5 * size))
    return out[:n]


def hits(c: safemap.Cache[int, int], trace: list[int], maxsize: int) -> int:
    h = 0
    for i, k in enumerate(trace):
        if c.get(k) is None:
            c.store(k, 1)
        else:
            h += 1
        if i % 10_000 == 0:
            assert len(c) <= maxsize
    return h


def test_zipf_hits_with_doorkeeper_longer_aging_wider_sketch() -> None:
    """Zipf 0.8, 1,500 of 30,000 keys: the doorkeeper (one-time keys stay out of the
    counters), the longer aging period and the wider sketch tell rarely used keys apart
    better. Before them: 137,197 hits (LRU: 105,210); with aging every 20 x maxsize
    additions 138,430; every 40 x (a popularity change empties the sketch instead of
    waiting for aging): 140,569."""
    trace = zipf(0.8, 300_000, 30_000)
    c: safemap.Cache[int, int] = safemap.Cache(1500)
    assert hits(c, trace, 1500) >= 140_000


def test_zipf_1_hits_with_aging_every_40_x_maxsize() -> None:
    """Zipf 1.0, 500 of 50,000 keys: a key at the admission boundary is seen about
    twice as often between agings, so its estimate rises above the noise of the
    one-time keys. Aging every 20 x maxsize additions: 114,586 hits; every 40 x:
    116,337 (LRU: 95,121)."""
    trace = zipf(1.0, 200_000, 50_000, seed=3)
    c: safemap.Cache[int, int] = safemap.Cache(500)
    assert hits(c, trace, 500) >= 116_000


def test_window_grows_where_recency_pays() -> None:
    """Each phase brings a new working set: the sketch still rates the last phase's
    keys higher, so a 1% window rejects the new ones; the climber grows the window
    towards the whole cache. Before it: 54.7% hits, with no window to speak of; 74.8%
    with aging every 20 x maxsize additions, 67.7% every 40 x (the last phase's counts
    live longer; phases of 2,500 requests are too short for the popularity change
    detection, which needs two ticks of 2,048). LRU: 90%."""
    trace = shifting(500, 200_000)
    c: safemap.Cache[int, int] = safemap.Cache(500)
    assert c._window() == 5  # 1% of maxsize to start with
    h = hits(c, trace, 500)
    assert c._window() >= 250
    assert h >= 0.65 * len(trace)
    lru: safemap.Cache[int, int] = safemap.Cache(500, policy="lru")
    assert h >= hits(lru, trace, 500) - 0.25 * len(trace)


def test_window_grows_at_once_when_a_refused_working_set_keeps_changing() -> None:
    """At 1,000 entries a popularity change is confirmed after two ticks of 2,048
    events, about 4,000 requests into a phase of 5,000: every other phase the new keys
    are refused by admission (the last phase's counts rate the old keys higher) until
    then, and the climber alone grew the window by 62 entries per 20,000 requests, past
    the working set (500 keys) only after about 400,000 requests: 39,822 hits here,
    window 64. A change confirmed within 16 x maxsize of the previous one (the cache's
    start counting as one), whose confirming tick refused returning keys, now grows the
    window by half of maxsize at once: 50,222 hits, window 636 (without the start
    counting: 48,468; by a quarter: 46,682; LRU: 54,000, each key's first request
    missed: the misses left are the first change's, before the growth)."""
    size = 1000
    trace = shifting(size, 60_000)
    c: safemap.Cache[int, int] = safemap.Cache(size)
    assert hits(c, trace, size) == 50_222
    assert c._window() == 636


def test_stale_victims_lose_ties_at_0_while_working_sets_keep_being_replaced() -> None:
    """At 5,000 entries a change empties the sketch while keys of the new working set
    sit in the window; leaving it unused since, such a key ties at 0 with a key of the
    phase before last, and a tie refused it, so each phase missed those keys again:
    268,705 hits. While changes recur, a tie at 0 now goes to the candidate if the
    victim has been idle 2 x maxsize events: 269,449 hits (LRU: 270,001)."""
    size = 5000
    trace = shifting(size, 300_000)
    c: safemap.Cache[int, int] = safemap.Cache(size)
    h = hits(c, trace, size)
    assert h == 269_449
    lru: safemap.Cache[int, int] = safemap.Cache(size, policy="lru")
    assert 0 < hits(lru, trace, size) - h < 600


def test_a_loop_larger_than_the_cache_keeps_its_residents_on_ties() -> None:
    """A loop over 1.1 x maxsize keys: every key is used as often, so candidates and
    victims tie, and a tie keeps the resident: 87.8% hits over 200,000 requests at
    5,000 entries (LRU: none; admitting every tie: 69.7% on the benchmark's
    1,000,000-request loop at this size). No popularity change recurs here, so the
    stale victims' ties at 0 never go to the candidate either."""
    size = 5000
    span = int(size * 1.1) + 1
    trace = [i % span for i in range(200_000)]
    c: safemap.Cache[int, int] = safemap.Cache(size)
    assert hits(c, trace, size) >= 0.85 * len(trace)


def test_window_stays_small_where_frequency_pays() -> None:
    """On a steady Zipf workload the window stays a small part of the cache (it moves
    by steps that shrink, and each step back when the hit rate dropped): here at most a
    quarter, and a tenth on average, against half or more where recency pays. The path
    is a walk driven by the samples' noise (hit rates within a point of each other):
    with aging every 20 x maxsize additions it peaked at 56 (15 on average, 125,355
    hits), every 40 x at 87 (43 on average, 125,961 hits); with the block sketch the
    walk is the same for 48 of its 50 samples, and its last step, decided by a sample
    slightly better than the one before, goes up to 105 (45 on average, 126,025 hits):
    the bound on the peak is a quarter, the average's stays a tenth."""
    trace = zipf(1.0, 200_000, 20_000)
    c: safemap.Cache[int, int] = safemap.Cache(500)
    sizes = []
    for i in range(0, len(trace), 4000):
        hits(c, trace[i : i + 4000], 500)
        sizes.append(c._window())
    assert min(sizes) >= 1 and max(sizes) <= 500 // 4, sizes
    assert sum(sizes) / len(sizes) <= 500 // 10, sizes


def test_window_keeps_its_bounds_and_the_cache_its_bound() -> None:
    """Alternating workloads move the window back and forth: it stays within
    [1, maxsize - 1] and the cache never holds more than maxsize."""
    c: safemap.Cache[int, int] = safemap.Cache(50)
    for seed in range(6):
        trace = shifting(50, 5000, seed) if seed % 2 else zipf(1.0, 5000, 2000, seed)
        hits(c, [k + 10**6 * seed for k in trace], 50)
        assert 1 <= c._window() <= 49
        assert len(c) <= 50


def reshuffled_zipf(n: int, nkeys: int, phases: int, seed: int = 1) -> list[int]:
    """Zipf 1.0 whose popular keys are replaced by new ones ``phases`` times: the
    frequencies the sketch has learned go stale at each change."""
    rng = random.Random(seed)
    cdf = list(itertools.accumulate(1.0 / r for r in range(1, nkeys + 1)))
    out: list[int] = []
    for p in range(phases):
        ids = list(range(p * nkeys, (p + 1) * nkeys))
        rng.shuffle(ids)
        out += [ids[bisect.bisect_left(cdf, rng.random() * cdf[-1])] for _ in range(n // phases)]
    return out


def test_popularity_that_moves_on_is_followed_at_least_as_well_as_by_lru() -> None:
    """Each phase is 40 x maxsize requests: with the counters halved only every 40 x
    maxsize additions, the last phase's keys kept winning admission and W-TinyLFU fell
    below LRU (118,239 against 122,224 hits); halved every 20 x, it stayed above
    (124,086). Halved every 40 x again, but with the sketch emptied when the hit rate
    falls sharply (a popularity change): 130,188."""
    trace = reshuffled_zipf(200_000, 20_000, 5)
    tiny: safemap.Cache[int, int] = safemap.Cache(1000)
    lru: safemap.Cache[int, int] = safemap.Cache(1000, policy="lru")
    assert hits(tiny, trace, 1000) >= hits(lru, trace, 1000)


@pytest.mark.parametrize("alpha", [0.8, 1.0])
def test_long_zipf_trace_within_2_points_of_best_static(alpha: float) -> None:
    """The issue's target, at a scale a test can run: 10,000 keys, a cache of 10%, and
    40 requests per key (the proportions of benchmarks/bench_cache.py's 4,000,000-request
    table). Within 2 points of the best static cache (the ``maxsize`` most frequent keys
    of the whole trace, loaded up front); this version: 1.94 points (Zipf 0.8) and
    1.54 (Zipf 1.0). On a quarter of
    the trace (10 requests per key) the gap is 3.55 and 2.91 points: a key at the
    admission boundary is then requested too few times to be told from keys half as
    popular, by any online policy (docs/cache.md, "Measured")."""
    n, nkeys, size = 400_000, 10_000, 1000
    trace = zipf(alpha, n, nkeys)
    c: safemap.Cache[int, int] = safemap.Cache(size)
    got = hits(c, trace, size)
    static = sum(x for _, x in Counter(trace).most_common(size))
    assert static - got <= 0.02 * n, (static - got) / n


def test_a_saturated_key_counts_again_after_aging() -> None:
    """A key whose counters are all at their maximum is not counted again until the
    counters are halved (its uses would change nothing); after aging, its uses count
    again. Wrongly kept skipping, its estimate would stay halved however often it is
    used. The cache is filled first, so that its sketch has its final width (a resize
    also ends the skipping) before the key saturates."""
    c: safemap.Cache[int, int] = safemap.Cache({k: k for k in range(100)}, maxsize=100)
    for _ in range(64):  # notes are applied in segments of 16
        assert c[0] == 0
    top = c._frequency(0)
    assert top == 16  # 15 in every counter, plus the doorkeeper's one
    k = 100
    while c._frequency(0) == top:  # one-time keys fill the sketch until it ages
        c.store(k, k)
        k += 1
        assert k < 1_000_000
    aged = c._frequency(0)
    assert aged < top and c[0] == 0  # halved, and still cached (frequent)
    for _ in range(64):
        assert c[0] == 0
    assert c._frequency(0) > aged


def test_skipping_saturated_keys_changes_no_decision() -> None:
    """Skipping the count of a saturated key is exact: the same hits, request for
    request, on a skewed trace whose popular keys saturate and age many times (pinned
    count, the same as before the skip existed)."""
    trace = zipf(1.0, 200_000, 20_000, seed=5)
    c: safemap.Cache[int, int] = safemap.Cache(200)
    assert hits(c, trace, 200) == 109_589


@pytest.mark.parametrize(("policy", "expected"), [("tinylfu", 182_524), ("lru", 179_502)])
def test_a_cache_larger_than_the_cpu_caches_makes_the_same_decisions(
    policy: str, expected: int
) -> None:
    """40,000 entries (from 32,768 a drain first asks the CPU for the lines each access
    note will write, ring_prefetch in sm_cache.c): hints only, so the hits are exactly
    those of the build without them, on a Zipf 0.9 trace over 400,000 keys."""
    c: safemap.Cache[int, int] = safemap.Cache(40_000, policy=policy)
    assert hits(c, zipf(0.9, 300_000, 400_000), 40_000) == expected
