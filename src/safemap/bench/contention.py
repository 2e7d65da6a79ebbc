"""Contention micro-cases: an atomic counter on one hot key, iteration alongside writers,
a snapshot per request alongside writers, and cache-aside reads of popular keys.

- **Counter** (after xsync's ``TestMapParallelComputes`` and the JDK's ``merge`` counter
  idiom): every thread runs ``merge("hits", 1, operator.add)`` on the same key. The final
  value must equal the number of increments performed; the difference is the number of
  lost updates.
- **IterateWhileWriting**: ``keys`` stable entries ``k -> k`` (``k >= 0``) are never
  removed. Operation ``i`` of a thread, by ``i % 16``: ``0``: iterate ``items()`` fully;
  odd ``1..13``: ``store(-1 - i, i)`` (a volatile key, disjoint per thread); even
  ``2..14``: ``delete(-1 - (i - 1))`` (the key stored just before); ``15``: overwrite a
  stable key with its own value. Every iteration must yield each stable key exactly
  once (the protocol's weakly consistent iteration) and must not raise; at the end only
  the stable keys remain (plus a volatile key whose delete had not run when the thread
  stopped).
- **SnapshotPerRequest** (the pattern of a service that hands each request a consistent
  view of shared state, e.g. a routing or configuration table): ``keys`` entries with
  ``value % keys == key``. Operation ``i`` of a thread, by ``i % 8``: ``0``: overwrite key
  ``k = i % keys`` with ``k + keys * i`` (the invariant holds for every value written);
  otherwise a request: take ``snapshot()`` and read 8 keys from it. Every snapshot must
  hold exactly ``keys`` entries, and every value read must satisfy the invariant.
- **CacheAside** (the commonest reason a map is shared: a cache filled on demand, as with
  Caffeine's ``get(key, mappingFunction)``): the map starts empty; each operation reads a
  key drawn from a Zipf distribution over ``keys`` (a few keys take most reads) and, on a
  miss, loads ``f(k) = 3k + 1`` and stores it with ``load_or_store`` (a value stored
  meanwhile wins). Every value read or returned must be ``f(k)``; at the end every key
  present holds ``f(k)`` (a bounded cache may have evicted some).
"""

from __future__ import annotations

import operator
import random
from collections.abc import Sequence
from typing import Any

from .keys import draw_indices
from .protocol import ABSENT, BenchMap, direct
from .results import WorkloadInfo
from .workload import Run, ThreadState, Verdict, Workload, compare_state, contents

__all__ = [
    "CacheAside",
    "Counter",
    "IterateWhileWriting",
    "SnapshotPerRequest",
    "contention_workloads",
]

COUNTER_KEY = "hits"


class Counter(Workload):
    """All threads increment one key with ``merge(k, 1, operator.add)``."""

    def __init__(self) -> None:
        self.info = WorkloadInfo(
            name="Counter",
            family="contention",
            anchor="xsync TestMapParallelComputes / JDK merge counter idiom, one hot key",
            description='op: merge("hits", 1, operator.add); final value must equal the '
            "number of increments",
            profile="every thread increments one hot key",
            ops=("merge",),
            known_state=True,
            bounded="duration",
        )

    def setup(self, m: BenchMap, threads: int) -> None:
        m.store(COUNTER_KEY, 0)

    def worker(self, m: BenchMap, state: ThreadState, threads: int) -> Run:
        merge, add = m.merge, operator.add

        def run(first: int, count: int) -> None:
            for _ in range(count):
                merge(COUNTER_KEY, 1, add)

        return run

    def verify(self, m: BenchMap, states: Sequence[ThreadState], threads: int) -> Verdict:
        increments = sum(st.ops for st in states)
        value, _ = m.load(COUNTER_KEY)
        if value == increments:
            return Verdict(known_state=True)
        problem = f"the counter reads {value} after {increments} increments"
        lost = increments - value if isinstance(value, int) else increments
        return Verdict(known_state=True, lost=max(lost, 0), problems=[problem])


class IterateWhileWriting(Workload):
    """Full ``items()`` iterations interleaved with stores and deletes by every thread."""

    PERIOD = 16

    def __init__(self, keys: int = 1000) -> None:
        self.keys = keys
        self.info = WorkloadInfo(
            name="IterateWhileWriting",
            family="contention",
            anchor="the protocol's weakly consistent iteration (JDK ConcurrentHashMap "
            "iterators), alongside writers",
            description=f"{keys:,} stable keys; per 16 ops: 1 full items() iteration "
            "(each stable key exactly once), 7 stores and 7 deletes of per-thread volatile "
            "keys, 1 overwrite of a stable key",
            profile="full iterations alongside inserts and deletes",
            ops=("items", "store", "delete"),
            known_state=True,
            bounded="duration",
        )

    def setup(self, m: BenchMap, threads: int) -> None:
        for k in range(self.keys):
            m.store(k, k)

    def worker(self, m: BenchMap, state: ThreadState, threads: int) -> Run:
        items, t, pop = m.items, (d := direct(m)).target, d.pop
        n = self.keys
        want_sum = n * (n - 1) // 2

        def run(first: int, count: int) -> None:
            bad = 0
            for i in range(first, first + count):
                r = i % 16
                if r == 0:
                    seen = total = 0
                    for k, v in items():
                        if k >= 0:
                            seen += 1
                            total += k
                            if v != k:
                                bad += 1
                    if seen != n or total != want_sum:
                        bad += 1
                elif r == 15:
                    k = i % n
                    t[k] = k
                elif r & 1:
                    t[-1 - i] = i
                else:
                    pop(-i, None)  # the key -1 - (i - 1) stored by the previous operation
            state.anomalies += bad

        return run

    def verify(self, m: BenchMap, states: Sequence[ThreadState], threads: int) -> Verdict:
        expected: dict[Any, Any] = {k: k for k in range(self.keys)}
        for st in states:
            last = st.first + st.ops - 1
            if st.ops and last % 2 == 1 and last % 16 != 15:
                expected[-1 - last] = last  # stored; its delete did not run
        return compare_state(m, expected)


class SnapshotPerRequest(Workload):
    """Requests that each read a snapshot, alongside overwrites by every thread."""

    PERIOD = 8
    READS = 8

    def __init__(self, keys: int = 1000) -> None:
        self.keys = keys
        self.info = WorkloadInfo(
            name="SnapshotPerRequest",
            family="contention",
            anchor="a snapshot per request (a consistent view handed to each request) "
            "alongside writers",
            description=f"{keys:,} keys with value % keys == key; per 8 ops: 1 overwrite "
            "keeping the invariant, 7 requests that each take snapshot() and read 8 keys "
            "(exactly keys entries, every value satisfies the invariant)",
            profile="a consistent snapshot per request alongside writers",
            ops=("snapshot", "store"),
            known_state=True,
            bounded="duration",
        )

    def setup(self, m: BenchMap, threads: int) -> None:
        for k in range(self.keys):
            m.store(k, k)

    def worker(self, m: BenchMap, state: ThreadState, threads: int) -> Run:
        snapshot, t = m.snapshot, direct(m).target
        n, reads, period = self.keys, self.READS, self.PERIOD

        def run(first: int, count: int) -> None:
            bad = 0
            for i in range(first, first + count):
                k = i % n
                if i % period == 0:
                    t[k] = k + n * i
                    continue
                snap = snapshot()
                if len(snap) != n:
                    bad += 1
                for j in range(k, k + reads):
                    key = j % n
                    if snap[key] % n != key:
                        bad += 1
            state.anomalies += bad

        return run

    def verify(self, m: BenchMap, states: Sequence[ThreadState], threads: int) -> Verdict:
        # Threads overwrite the same keys concurrently, so the final value of a key is
        # one of several; what is known: every key is there and keeps the invariant.
        expected = set(range(self.keys))
        actual = contents(m)
        problems = []
        if set(actual) != expected:
            problems.append(f"{len(expected ^ set(actual))} keys missing or unexpected")
        wrong = [k for k, v in actual.items() if not isinstance(v, int) or v % self.keys != k]
        if wrong:
            problems.append(f"{len(wrong)} keys hold a value breaking the invariant")
        return Verdict(known_state=True, lost=len(wrong), problems=problems)


class CacheAside(Workload):
    """Zipf-distributed reads that load and ``load_or_store`` a missing key."""

    DRAWS = 4096  # key indices drawn per thread before the run (cycled)

    def __init__(self, keys: int = 1000) -> None:
        self.keys = keys
        self.info = WorkloadInfo(
            name="CacheAside",
            family="contention",
            anchor="the cache-aside pattern (Caffeine's get(key, mappingFunction)); "
            f"Zipf-distributed popularity over {keys} keys",
            description="op: load(k) (get(k, ABSENT)); on a miss load_or_store(k, 3k + 1) "
            "(setdefault); every value read must be 3k + 1",
            profile="popular keys hit, the rest are loaded once",
            ops=("load", "load_or_store"),
            known_state=True,
            bounded="duration",
        )

    def setup(self, m: BenchMap, threads: int) -> None:
        pass  # starts empty: the first reads load

    def worker(self, m: BenchMap, state: ThreadState, threads: int) -> Run:
        calls = direct(m)  # load: get(k, ABSENT); load_or_store: setdefault
        get, setdefault = calls.get, calls.setdefault
        draws = draw_indices(self.keys, self.DRAWS, "zipf", random.Random(state.tid))
        period = len(draws)

        def run(first: int, count: int) -> None:
            bad = 0
            for i in range(first, first + count):
                k = draws[i % period]
                value = get(k, ABSENT)
                if value is ABSENT:
                    value = setdefault(k, 3 * k + 1)
                if value != 3 * k + 1:
                    bad += 1
            state.anomalies += bad

        return run

    def verify(self, m: BenchMap, states: Sequence[ThreadState], threads: int) -> Verdict:
        actual = contents(m)
        problems = []
        extra = [k for k in actual if not isinstance(k, int) or not 0 <= k < self.keys]
        if extra:
            problems.append(f"{len(extra)} unexpected keys")
        wrong = [k for k, v in actual.items() if isinstance(k, int) and v != 3 * k + 1]
        if wrong:
            problems.append(f"{len(wrong)} keys hold a value other than the loaded one")
        return Verdict(known_state=True, lost=len(wrong), problems=problems)


def contention_workloads(keys: int = 1000) -> list[Workload]:
    return [Counter(), IterateWhileWriting(keys), SnapshotPerRequest(keys), CacheAside(keys)]
