"""Go's ``sync.Map`` benchmark set (``src/sync/map_bench_test.go``), all 24 benchmarks.

Each follows Go's definition exactly: the same setup (``LoadOrStore(i, i)`` or
``Store(i, i)`` for the listed keys), the same "prime" (``Load(i % hits)`` for
``2 * hits`` iterations after filling), and the same per-operation body, with Go's
per-goroutine counter ``i`` starting at ``tid * N`` (see :mod:`.workload`). Go's
``b.Fatalf`` checks (a ``LoadOrStore`` that must load, or must store) are counted as
anomalies instead of aborting. Keys and values are Python ints, as Go's are ``int``.
``Load``, ``Store``, ``LoadOrStore``, ``LoadAndDelete``, ``Delete`` and ``Clear`` are
called through each map's single call (``get``, ``m[k] = v``, ``setdefault``, ``pop``,
``clear``: :class:`.protocol.Direct`), so that the bare ``dict`` is a true limit.

Where the final state follows from which operations ran, :meth:`GoBench.verify` computes
it from each thread's executed range and compares it with the map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .protocol import ABSENT, BenchMap, direct
from .results import WorkloadInfo
from .workload import Run, ThreadState, Verdict, Workload, compare_state, contents

__all__ = ["GO_WORKLOADS", "GoBench"]

ANCHOR = "Go src/sync/map_bench_test.go (same setup, prime and per-goroutine key offsets)"

Body = Callable[[BenchMap, ThreadState], Run]
Expected = Callable[[Sequence[ThreadState], int], dict[Any, Any]]
Check = Callable[[BenchMap, Sequence[ThreadState], int], list[str]]

MAP_SIZE = 1024  # Go's mapSize (Range, AdversarialDelete)


class GoBench(Workload):
    """One Go benchmark: setup, body, and (when known) the expected final state."""

    def __init__(
        self,
        name: str,
        *,
        description: str,
        profile: str,
        ops: Sequence[str],
        body: Body,
        setup: tuple[str, int, bool] | None = None,
        expected: Expected | None = None,
        check: Check | None = None,
    ) -> None:
        self.info = WorkloadInfo(
            name=name,
            family="go-sync-map",
            anchor=ANCHOR,
            description=description,
            profile=profile,
            ops=tuple(ops),
            known_state=expected is not None,
            bounded="duration",
        )
        self._setup = setup  # (method, number of keys 0..n-1, prime?)
        self._body = body
        self._expected = expected
        self._check = check

    def setup(self, m: BenchMap, threads: int) -> None:
        if self._setup is None:
            return
        method, n, prime = self._setup
        put = m.load_or_store if method == "load_or_store" else m.store
        for i in range(n):
            put(i, i)
        if prime:
            for i in range(2 * n):
                m.load(i % n)

    def worker(self, m: BenchMap, state: ThreadState, threads: int) -> Run:
        return self._body(m, state)

    def verify(self, m: BenchMap, states: Sequence[ThreadState], threads: int) -> Verdict:
        if self._expected is not None:
            verdict = compare_state(m, self._expected(states, threads))
        else:
            verdict = Verdict(known_state=False)
        if self._check is not None:
            verdict.problems.extend(self._check(m, states, threads))
        return verdict


# ---------------------------------------------------------------- bodies


def _load_mostly(hits: int, misses: int) -> Body:
    n = hits + misses

    def body(m: BenchMap, st: ThreadState) -> Run:
        get = direct(m).get

        def run(first: int, count: int) -> None:
            bad = 0
            for i in range(first, first + count):
                k = i % n
                v = get(k, ABSENT)
                if (v is not ABSENT) != (k < hits) or (v is not ABSENT and v != k):
                    bad += 1
            st.anomalies += bad

        return run

    return body


def _load_or_store_balanced(m: BenchMap, st: ThreadState) -> Run:
    hits, misses = 128, 128
    setdefault = direct(m).setdefault

    def run(first: int, count: int) -> None:
        bad = 0
        for i in range(first, first + count):
            j = i % (hits + misses)
            if j < hits:
                # Go: b.Fatalf("unexpected miss for %v", j): key j holds j, so a call that
                # stored returns i instead (when i == j, the final state tells)
                if setdefault(j, i) != j:
                    bad += 1
            elif setdefault(i, i) != i:  # Go: b.Fatalf("failed to store %v: existing ...")
                bad += 1
        st.anomalies += bad

    return run


def _load_or_store_unique(m: BenchMap, st: ThreadState) -> Run:
    setdefault = direct(m).setdefault

    def run(first: int, count: int) -> None:
        bad = 0
        for i in range(first, first + count):
            if setdefault(i, i) != i:  # key i is new: the call must store i
                bad += 1
        st.anomalies += bad

    return run


def _load_or_store_collision(m: BenchMap, st: ThreadState) -> Run:
    setdefault = direct(m).setdefault

    def run(first: int, count: int) -> None:
        bad = 0
        for _ in range(count):
            if setdefault(0, 0) != 0:
                bad += 1
        st.anomalies += bad

    return run


def _load_and_delete_balanced(m: BenchMap, st: ThreadState) -> Run:
    hits, misses = 128, 128
    pop = direct(m).pop
    st.data["deleted"] = 0

    def run(first: int, count: int) -> None:
        bad = deleted = 0
        for i in range(first, first + count):
            j = i % (hits + misses)
            if j < hits:
                if pop(j, ABSENT) is not ABSENT:
                    deleted += 1
            elif pop(i, ABSENT) is not ABSENT:  # key i was never stored
                bad += 1
        st.anomalies += bad
        st.data["deleted"] += deleted

    return run


def _load_and_delete_unique(m: BenchMap, st: ThreadState) -> Run:
    pop = direct(m).pop

    def run(first: int, count: int) -> None:
        bad = 0
        for i in range(first, first + count):
            if pop(i, ABSENT) is not ABSENT:
                bad += 1
        st.anomalies += bad

    return run


def _load_and_delete_collision(m: BenchMap, st: ThreadState) -> Run:
    d = direct(m)
    pop, t = d.pop, d.target

    def run(first: int, count: int) -> None:
        for _ in range(count):
            if pop(0, ABSENT) is not ABSENT:
                t[0] = 0

    return run


def _range(m: BenchMap, st: ThreadState) -> Run:
    rng = m.range

    def visit(_k: Any, _v: Any) -> bool:
        return True

    def run(first: int, count: int) -> None:
        for _ in range(count):
            rng(visit)

    return run


def _adversarial_alloc(m: BenchMap, st: ThreadState) -> Run:
    d = direct(m)
    get, setdefault = d.get, d.setdefault
    st.data.update(stores=0, loads_since_store=0)

    def run(first: int, count: int) -> None:
        stores = st.data["stores"]
        since = st.data["loads_since_store"]
        bad = 0
        for i in range(first, first + count):
            if get(i, ABSENT) is not ABSENT:  # key i is stored only after its load
                bad += 1
            since += 1
            if since > stores:
                setdefault(i, stores)
                since = 0
                stores += 1
        st.data.update(stores=stores, loads_since_store=since)
        st.anomalies += bad

    return run


def _adversarial_delete(m: BenchMap, st: ThreadState) -> Run:
    d = direct(m)
    get, pop, t, rng = d.get, d.pop, d.target, m.range

    def delete_first(k: Any, _v: Any) -> bool:
        pop(k, None)
        return False

    def run(first: int, count: int) -> None:
        for i in range(first, first + count):
            get(i, None)
            if i % MAP_SIZE == 0:
                rng(delete_first)
                t[i] = i

    return run


def _delete_collision(m: BenchMap, st: ThreadState) -> Run:
    pop = direct(m).pop

    def run(first: int, count: int) -> None:
        for _ in range(count):
            pop(0, None)

    return run


def _swap_collision(m: BenchMap, st: ThreadState) -> Run:
    swap = m.swap

    def run(first: int, count: int) -> None:
        bad = 0
        for _ in range(count):
            if not swap(0, 0)[1]:
                bad += 1
        st.anomalies += bad

    return run


def _swap_mostly(hits: int, misses: int) -> Body:
    n = hits + misses

    def body(m: BenchMap, st: ThreadState) -> Run:
        swap, pop = m.swap, direct(m).pop

        def run(first: int, count: int) -> None:
            bad = 0
            for i in range(first, first + count):
                if i % n < hits:
                    v = i % n
                    if not swap(v, v)[1]:
                        bad += 1
                else:
                    if swap(i, i)[1]:
                        bad += 1
                    pop(i, None)
            st.anomalies += bad

        return run

    return body


def _cas_collision(m: BenchMap, st: ThreadState) -> Run:
    cas = m.compare_and_swap

    def run(first: int, count: int) -> None:
        bad = 0
        for _ in range(count):
            # Only the thread that swapped 0 -> 42 can swap it back: that must succeed.
            if cas(0, 0, 42) and not cas(0, 42, 0):
                bad += 1
        st.anomalies += bad

    return run


def _cas_no_existing_key(m: BenchMap, st: ThreadState) -> Run:
    cas, pop = m.compare_and_swap, direct(m).pop

    def run(first: int, count: int) -> None:
        bad = 0
        for i in range(first, first + count):
            if cas(i, 0, 0):
                bad += 1
                pop(i, None)
        st.anomalies += bad

    return run


def _cas_value_not_equal(m: BenchMap, st: ThreadState) -> Run:
    cas = m.compare_and_swap

    def run(first: int, count: int) -> None:
        bad = 0
        for _ in range(count):
            if cas(0, 1, 2):
                bad += 1
        st.anomalies += bad

    return run


def _cas_mostly(hits: int, misses: int) -> Body:
    n = hits + misses

    def body(m: BenchMap, st: ThreadState) -> Run:
        cas = m.compare_and_swap

        def run(first: int, count: int) -> None:
            bad = 0
            for i in range(first, first + count):
                hit = i % n < hits
                v = i % n if hit else i
                if cas(v, v, v) != hit:
                    bad += 1
            st.anomalies += bad

        return run

    return body


def _cad_collision(m: BenchMap, st: ThreadState) -> Run:
    cad, t = m.compare_and_delete, direct(m).target

    def run(first: int, count: int) -> None:
        for _ in range(count):
            if cad(0, 0):
                t[0] = 0

    return run


def _cad_mostly(hits: int, misses: int) -> Body:
    n = hits + misses

    def body(m: BenchMap, st: ThreadState) -> Run:
        cad, t = m.compare_and_delete, direct(m).target

        def run(first: int, count: int) -> None:
            bad = 0
            for i in range(first, first + count):
                hit = i % n < hits
                v = i % n if hit else i
                if cad(v, v):
                    if not hit:  # key i never existed
                        bad += 1
                    t[v] = v
            st.anomalies += bad

        return run

    return body


def _clear(m: BenchMap, st: ThreadState) -> Run:
    d = direct(m)
    clear, t = d.clear, d.target

    def run(first: int, count: int) -> None:
        for i in range(first, first + count):
            k = v = i % 256
            clear()
            t[k] = v

    return run


# ------------------------------------------------------- expected states


def _identity(n: int) -> Expected:
    def expected(states: Sequence[ThreadState], threads: int) -> dict[Any, Any]:
        return {i: i for i in range(n)}

    return expected


def _empty(states: Sequence[ThreadState], threads: int) -> dict[Any, Any]:
    return {}


def _load_or_store_balanced_state(states: Sequence[ThreadState], threads: int) -> dict[Any, Any]:
    state = {i: i for i in range(128)}
    for st in states:
        state.update((i, i) for i in st.executed() if i % 256 >= 128)
    return state


def _load_or_store_unique_state(states: Sequence[ThreadState], threads: int) -> dict[Any, Any]:
    return {i: i for st in states for i in st.executed()}


def _load_and_delete_balanced_state(states: Sequence[ThreadState], threads: int) -> dict[Any, Any]:
    touched = {i % 256 for st in states for i in st.executed()[:256] if i % 256 < 128}
    return {k: k for k in range(128) if k not in touched}


def _load_and_delete_balanced_check(
    m: BenchMap, states: Sequence[ThreadState], threads: int
) -> list[str]:
    remaining = sum(1 for k in contents(m) if isinstance(k, int) and 0 <= k < 128)
    deleted = sum(st.data.get("deleted", 0) for st in states)
    if deleted != 128 - remaining:
        return [
            f"{deleted} successful load_and_delete calls removed {128 - remaining} keys: "
            "a key was deleted twice"
        ]
    return []


def _adversarial_alloc_state(states: Sequence[ThreadState], threads: int) -> dict[Any, Any]:
    state: dict[Any, Any] = {}
    for st in states:
        stores = since = 0
        for i in st.executed():
            since += 1
            if since > stores:
                state[i] = stores
                since = 0
                stores += 1
    return state


def _clear_check(m: BenchMap, states: Sequence[ThreadState], threads: int) -> list[str]:
    entries = contents(m)
    problems = []
    if len(entries) > threads:
        problems.append(f"{len(entries)} entries after Clear+Store by {threads} threads")
    if any(k != v for k, v in entries.items()):
        problems.append("an entry holds a value stored under another key")
    return problems


# ---------------------------------------------------------------- the set

_HITS_OR_I = "v = i % 1024 if i % 1024 < hits else i"

GO_WORKLOADS: tuple[GoBench, ...] = (
    GoBench(
        "LoadMostlyHits",
        description="setup: LoadOrStore(i, i) for i < 1023, prime; op: Load(i % 1024) "
        "(1023 of 1024 hit)",
        profile="reads only, on keys all threads share",
        ops=("load",),
        setup=("load_or_store", 1023, True),
        body=_load_mostly(1023, 1),
        expected=_identity(1023),
    ),
    GoBench(
        "LoadMostlyMisses",
        description="setup: LoadOrStore(0, 0), prime; op: Load(i % 1024) (1 of 1024 hits)",
        profile="reads only, nearly all misses",
        ops=("load",),
        setup=("load_or_store", 1, True),
        body=_load_mostly(1, 1023),
        expected=_identity(1),
    ),
    GoBench(
        "LoadOrStoreBalanced",
        description="setup: keys 0..127, prime; op: j = i % 256; j < 128: LoadOrStore(j, i) "
        "must load, else LoadOrStore(i, i) must store (the map grows)",
        profile="half reads of shared keys, half inserts of per-thread keys",
        ops=("load_or_store",),
        setup=("load_or_store", 128, True),
        body=_load_or_store_balanced,
        expected=_load_or_store_balanced_state,
    ),
    GoBench(
        "LoadOrStoreUnique",
        description="no setup; op: LoadOrStore(i, i), always a new key (the map grows)",
        profile="inserts only, and keys are disjoint per thread",
        ops=("load_or_store",),
        body=_load_or_store_unique,
        expected=_load_or_store_unique_state,
    ),
    GoBench(
        "LoadOrStoreCollision",
        description="setup: LoadOrStore(0, 0); op: LoadOrStore(0, 0) (every thread, one key)",
        profile="every thread hits one key, which is always present",
        ops=("load_or_store",),
        setup=("load_or_store", 1, False),
        body=_load_or_store_collision,
        expected=_identity(1),
    ),
    GoBench(
        "LoadAndDeleteBalanced",
        description="setup: keys 0..127, prime; op: j = i % 256; j < 128: LoadAndDelete(j) "
        "else LoadAndDelete(i)",
        profile="deletes, half of shared keys and half misses",
        ops=("load_and_delete",),
        setup=("load_or_store", 128, True),
        body=_load_and_delete_balanced,
        expected=_load_and_delete_balanced_state,
        check=_load_and_delete_balanced_check,
    ),
    GoBench(
        "LoadAndDeleteUnique",
        description="no setup; op: LoadAndDelete(i) (always a miss)",
        profile="deletes of absent, per-thread keys",
        ops=("load_and_delete",),
        body=_load_and_delete_unique,
        expected=_empty,
    ),
    GoBench(
        "LoadAndDeleteCollision",
        description="setup: LoadOrStore(0, 0); op: if LoadAndDelete(0) loaded: Store(0, 0)",
        profile="every thread deletes and re-stores one key",
        ops=("load_and_delete", "store"),
        setup=("load_or_store", 1, False),
        body=_load_and_delete_collision,
        expected=_identity(1),
    ),
    GoBench(
        "Range",
        description="setup: Store(i, i) for i < 1024; op: a full Range with a no-op callback",
        profile="full iterations of a 1,024-entry map, no writes",
        ops=("range",),
        setup=("store", MAP_SIZE, False),
        body=_range,
        expected=_identity(MAP_SIZE),
    ),
    GoBench(
        "AdversarialAlloc",
        description="no setup; op: Load(i) (a miss); after 1, 2, 3, ... loads: "
        "LoadOrStore(i, stores), stores += 1",
        profile="reads with ever rarer inserts of per-thread keys",
        ops=("load", "load_or_store"),
        body=_adversarial_alloc,
        expected=_adversarial_alloc_state,
    ),
    GoBench(
        "AdversarialDelete",
        description="setup: Store(i, i) for i < 1024; op: Load(i); if i % 1024 == 0: a Range "
        "that Deletes the first key and stops, then Store(i, i)",
        profile="reads with periodic delete-by-iteration and inserts",
        ops=("load", "range", "delete", "store"),
        setup=("store", MAP_SIZE, False),
        body=_adversarial_delete,
    ),
    GoBench(
        "DeleteCollision",
        description="setup: LoadOrStore(0, 0); op: Delete(0)",
        profile="every thread deletes one key",
        ops=("delete",),
        setup=("load_or_store", 1, False),
        body=_delete_collision,
        expected=_empty,
    ),
    GoBench(
        "SwapCollision",
        description="setup: LoadOrStore(0, 0); op: Swap(0, 0)",
        profile="every thread overwrites one key",
        ops=("swap",),
        setup=("load_or_store", 1, False),
        body=_swap_collision,
        expected=_identity(1),
    ),
    GoBench(
        "SwapMostlyHits",
        description="setup: LoadOrStore(i, i) for i < 1023, prime; op: if i % 1024 < 1023: "
        "Swap(v, v) with v = i % 1024, else Swap(i, i); Delete(i)",
        profile="overwrites of keys all threads share",
        ops=("swap", "delete"),
        setup=("load_or_store", 1023, True),
        body=_swap_mostly(1023, 1),
        expected=_identity(1023),
    ),
    GoBench(
        "SwapMostlyMisses",
        description="setup: LoadOrStore(0, 0), prime; op: if i % 1024 < 1: Swap(0, 0), "
        "else Swap(i, i); Delete(i)",
        profile="insert-then-delete of per-thread keys",
        ops=("swap", "delete"),
        setup=("load_or_store", 1, True),
        body=_swap_mostly(1, 1023),
        expected=_identity(1),
    ),
    GoBench(
        "CompareAndSwapCollision",
        description="setup: LoadOrStore(0, 0); op: if CompareAndSwap(0, 0, 42): "
        "CompareAndSwap(0, 42, 0) (which must succeed)",
        profile="every thread compare-and-swaps one key",
        ops=("compare_and_swap",),
        setup=("load_or_store", 1, False),
        body=_cas_collision,
        expected=_identity(1),
    ),
    GoBench(
        "CompareAndSwapNoExistingKey",
        description="no setup; op: if CompareAndSwap(i, 0, 0): Delete(i) (never succeeds)",
        profile="compare-and-swaps of absent, per-thread keys",
        ops=("compare_and_swap", "delete"),
        body=_cas_no_existing_key,
        expected=_empty,
    ),
    GoBench(
        "CompareAndSwapValueNotEqual",
        description="setup: Store(0, 0); op: CompareAndSwap(0, 1, 2) (always fails)",
        profile="failing compare-and-swaps on one key",
        ops=("compare_and_swap",),
        setup=("store", 1, False),
        body=_cas_value_not_equal,
        expected=_identity(1),
    ),
    GoBench(
        "CompareAndSwapMostlyHits",
        description=f"setup: LoadOrStore(i, i) for i < 1023, prime; op: {_HITS_OR_I} "
        "(hits = 1023); CompareAndSwap(v, v, v)",
        profile="compare-and-swaps that succeed, on keys all threads share",
        ops=("compare_and_swap",),
        setup=("load_or_store", 1023, True),
        body=_cas_mostly(1023, 1),
        expected=_identity(1023),
    ),
    GoBench(
        "CompareAndSwapMostlyMisses",
        description=f"setup: LoadOrStore(0, 0), prime; op: {_HITS_OR_I} (hits = 1); "
        "CompareAndSwap(v, v, v)",
        profile="compare-and-swaps of absent, per-thread keys",
        ops=("compare_and_swap",),
        setup=("load_or_store", 1, True),
        body=_cas_mostly(1, 1023),
        expected=_identity(1),
    ),
    GoBench(
        "CompareAndDeleteCollision",
        description="setup: LoadOrStore(0, 0); op: if CompareAndDelete(0, 0): Store(0, 0)",
        profile="every thread compare-and-deletes and re-stores one key",
        ops=("compare_and_delete", "store"),
        setup=("load_or_store", 1, False),
        body=_cad_collision,
        expected=_identity(1),
    ),
    GoBench(
        "CompareAndDeleteMostlyHits",
        description=f"setup: LoadOrStore(i, i) for i < 1023, prime; op: {_HITS_OR_I} "
        "(hits = 1023); if CompareAndDelete(v, v): Store(v, v)",
        profile="delete-and-restore of keys all threads share",
        ops=("compare_and_delete", "store"),
        setup=("load_or_store", 1023, True),
        body=_cad_mostly(1023, 1),
        expected=_identity(1023),
    ),
    GoBench(
        "CompareAndDeleteMostlyMisses",
        description=f"setup: LoadOrStore(0, 0), prime; op: {_HITS_OR_I} (hits = 1); "
        "if CompareAndDelete(v, v): Store(v, v)",
        profile="compare-and-deletes of absent, per-thread keys",
        ops=("compare_and_delete", "store"),
        setup=("load_or_store", 1, True),
        body=_cad_mostly(1, 1023),
        expected=_identity(1),
    ),
    GoBench(
        "Clear",
        description="no setup; op: k = v = i % 256; Clear(); Store(k, v)",
        profile="whole-map clears between single stores",
        ops=("clear", "store"),
        body=_clear,
        check=_clear_check,
    ),
)
