"""SyncMap on owned hash tables (src/safemap/native/sm_smap.c, sm_table.c).

SyncMap keeps its keys in two tables of the kind ConcurrentMap's shards own: ``read``
(looked up lock-free; a key's value slot is swapped in place by store/swap/CAS without the
map's mutex) and ``dirty`` (keys stored since the last promotion, under the mutex).  No
object per key: memory is about a dict's.  Checked here: memory and per-key objects,
``__eq__`` calls under equal hashes, no leak over a million operations, and readers
racing in-place writers, deletes, re-inserts, promotions and growth with exact
invariants (every value written is accounted for exactly once).
"""

from __future__ import annotations

import gc
import sys
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from support.leaks import traced_growth

from safemap.native import SyncMap

WAIT = 60.0  # seconds: only ever reached on a deadlock
FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()


def _run(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "deadlock"


def promoted(n: int) -> SyncMap[Any, Any]:
    m: SyncMap[Any, Any] = SyncMap()
    for i in range(n):
        m[i] = i
    list(m)  # iteration promotes: every key is in read
    return m


# ----------------------------------------------------------- memory


def _traced(build: Callable[[], Any]) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        obj = build()
        gc.collect()  # free-threaded: replaced tables are freed once threads are quiescent
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before, obj


@pytest.mark.parametrize("promote", [False, True])
def test_memory_is_about_a_dicts(promote: bool) -> None:
    """The keys live in table entries, not in per-key objects: the map's own memory for
    50,000 entries (keys and values allocated beforehand) is at most 1.3 x a dict's, in
    dirty (before a promotion) and in read (after).  It was ~2 x with a dict of entry
    objects per table."""
    keys = [10**9 + i for i in range(50_000)]

    def build_map() -> Any:
        m: Any = SyncMap()
        for k in keys:
            m[k] = k
        if promote:
            list(m)
        return m

    def build_dict() -> Any:
        d = {}
        for k in keys:
            d[k] = k
        return d

    ours, m = _traced(build_map)
    theirs, _ = _traced(build_dict)
    st = m._stats_raw()
    assert (st["read_size"], st["dirty_size"]) == ((50_000, 0) if promote else (0, 50_000))
    assert ours <= 1.3 * theirs, (ours, theirs)
    assert m.__sizeof__() <= 1.3 * {k: k for k in keys}.__sizeof__()


def test_no_object_per_key() -> None:
    """Storing keys creates no GC-tracked object per key (there used to be one entry
    object per key)."""
    m: Any = SyncMap()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(2000):
        m[i] = i
    list(m)  # promote
    for i in range(2000):
        m[i] = -i  # in place
    after = len(gc.get_objects())
    assert after - before < 100, (before, after)


# ----------------------------------------------------------- adversarial hashes


class Collider:
    """Every instance has the same hash; __eq__ calls are counted."""

    calls = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return 12345

    def __eq__(self, other: object) -> bool:
        Collider.calls += 1
        return isinstance(other, Collider) and other.n == self.n


@pytest.mark.parametrize("promote_every", [0, 1, 37])
def test_equal_hashes_cost_linear_eq_calls(promote_every: int) -> None:
    """n keys with one hash, stored, read (equal copies), replaced in place, deleted and
    missed, with promotions between.  Each operation looks the key up at most in read
    without the lock, then in read and dirty under it, so it calls __eq__ at most 3 x per
    live entry with that hash (plus dict's few revisited slots) -- never more than a few
    dict lookups, however the keys are spread between the two tables."""
    n = 200
    m: Any = SyncMap()
    live = 0
    worst = 0

    def op(f: Callable[[], object]) -> None:
        nonlocal worst
        before = Collider.calls
        f()
        worst = max(worst, Collider.calls - before - 3 * live)

    keys = [Collider(i) for i in range(n)]
    for i, k in enumerate(keys):
        op(lambda k=k: m.__setitem__(k, k.n))
        live += 1
        if promote_every and i % promote_every == 0:
            op(lambda: list(m))
    for k in keys:
        op(lambda k=k: m[Collider(k.n)])
        op(lambda k=k: m.__setitem__(Collider(k.n), -k.n))
    for i in range(n, n + 20):
        op(lambda i=i: Collider(i) in m)
    for k in keys[::2]:
        op(lambda k=k: m.__delitem__(Collider(k.n)))
        live -= 1
    assert worst <= 6, worst
    assert dict(m.items()) == {k: -k.n for k in keys[1::2]}


# ----------------------------------------------------------- no leak


@pytest.mark.usefixtures("frozen_heap")
def test_a_million_operations_leak_nothing() -> None:
    """In-place replacements, inserts into dirty, misses that promote, deletes from read
    and from dirty, growth: the traced memory of the second half of the rounds does not
    grow."""
    m: Any = SyncMap()

    def round_(r: int) -> None:
        for i in range(1000):
            m[i] = (i, r)  # in place once promoted
        for i in range(500):
            m[f"k{i}-{r}"] = i  # insert run-time strings into dirty
        for i in range(0, 500, 2):
            m.get(f"k{i}-{r}")  # misses: promotion
        for i in range(500):
            del m[f"k{i}-{r}"]  # delete from read and from dirty
        for i in range(500):
            m.get(10**9 + i)  # plain misses
        m.compare_and_swap(0, (0, r), (0, r))

    growth = traced_growth(round_, warmup=10, rounds=160)
    # 160 rounds x 3,000 writes: a leak of one object per write would be >= 7 MB
    assert growth < 256 * 1024, growth
    assert len(m) == 1000


# ----------------------------------------------------------- racing


def test_swaps_and_deletes_account_for_every_value() -> None:
    """Writers swap unique values into a few keys (in place while the key is in read,
    under the mutex when a delete has just removed it), a deleter pops them, a reader's
    misses promote re-inserted keys and a grower makes read's table grow and rebuild.
    Exact invariant: every value written is returned exactly once -- by the swap that
    replaced it, by the pop that removed it, or as a final value.  A swap into a removed
    entry would lose its value; a value both swapped out and popped would appear twice."""
    keys = [f"key-{i}" for i in range(4)]
    m: Any = SyncMap()
    rounds = 6000 if FREE_THREADED else 2000
    out: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(5, timeout=WAIT)
    stop = threading.Event()

    def writer(w: int) -> None:
        try:
            start.wait()
            for i in range(rounds):
                old, had = m.swap("".join(keys[i % len(keys)]), w * 10**7 + i)
                if had:
                    out[w].append(old)
        except BaseException as exc:
            errors.append(exc)

    def deleter() -> None:
        try:
            start.wait()
            i = 0
            while not stop.is_set():
                old, had = m.load_and_delete(keys[i % len(keys)])
                if had:
                    out[2].append(old)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            start.wait()
            while not stop.is_set():
                for k in keys:
                    v = m.get("".join(k))
                    if v is not None and not isinstance(v, int):
                        raise AssertionError((k, v))
        except BaseException as exc:
            errors.append(exc)

    def grower() -> None:
        try:
            start.wait()
            r = 0
            while not stop.is_set():
                for j in range(64):
                    m[(r, j)] = j
                for j in range(64):
                    m.get((r, j))  # misses: promotions that grow read
                for j in range(64):
                    del m[(r, j)]
                r += 1
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    others = [threading.Thread(target=f) for f in (deleter, reader, grower)]
    for t in others:
        t.start()
    _run(writers)
    stop.set()
    for t in others:
        t.join(WAIT)
    assert not any(t.is_alive() for t in others), "deadlock"
    assert errors == []
    final = [v for k, v in m.items() if k in keys]
    returned = out[0] + out[1] + out[2] + final
    written = [w * 10**7 + i for w in range(2) for i in range(rounds)]
    assert len(returned) == len(set(returned)), "a value was returned twice"
    assert sorted(returned) == written, "a value was lost"
    assert len(m) == len(final)


def test_cas_increments_are_exact_while_keys_move() -> None:
    """Threads increment counters with compare_and_swap loops (in place in read) while a
    churner inserts keys, reads them (promotions: read's table is rebuilt under the
    in-place writers), deletes them, and readers iterate.  No increment is lost, every
    iteration yields each counter exactly once, and reads by equal copies never miss."""
    counters = [10**6 + i for i in range(8)]
    m: Any = SyncMap()
    for k in counters:
        m[k] = 0
    list(m)
    per_thread = 1500 if FREE_THREADED else 500
    errors: list[BaseException] = []
    stop = threading.Event()
    start = threading.Barrier(5, timeout=WAIT)

    def incrementer(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                k = counters[(i + t) % len(counters)]
                while True:
                    cur = m[k]
                    if m.compare_and_swap(k, cur, cur + 1):
                        break
        except BaseException as exc:
            errors.append(exc)

    def churner() -> None:
        try:
            start.wait()
            r = 0
            while not stop.is_set():
                batch = [f"c{r}-{j}" for j in range(50)]
                for k in batch:
                    m[k] = r
                for k in batch:
                    if m.get("".join(k)) != r:
                        raise AssertionError(k)
                for k in batch:
                    del m[k]
                r += 1
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            start.wait()
            while not stop.is_set():
                for k in counters:
                    if not isinstance(m[int(str(k))], int):
                        raise AssertionError(k)
                seen = [k for k in m if isinstance(k, int)]
                if sorted(seen) != counters:
                    raise AssertionError(("iteration", seen))
        except BaseException as exc:
            errors.append(exc)

    incs = [threading.Thread(target=incrementer, args=(t,)) for t in range(2)]
    others = [threading.Thread(target=churner)] + [
        threading.Thread(target=reader) for _ in range(2)
    ]
    for t in others:
        t.start()
    _run(incs)
    stop.set()
    for t in others:
        t.join(WAIT)
    assert not any(t.is_alive() for t in others), "deadlock"
    assert errors == []
    assert sum(m[k] for k in counters) == 2 * per_thread
    assert len(m) == len(counters)


@pytest.mark.parametrize(
    "write",
    [
        lambda m: m.__setitem__(0, "w"),
        lambda m: m.swap(0, "w"),
        lambda m: m.compare_and_swap(0, 0, "w"),
    ],
    ids=["store", "swap", "compare_and_swap"],
)
def test_compute_freezes_in_place_writers(write: Callable[[Any], object]) -> None:
    """While compute()'s callback runs, an in-place writer of a key in read (which needs
    no mutex) must wait: the callback's own read of the key still sees the value it was
    given, and the write lands after compute (its result is overwritten, not lost)."""
    m: Any = promoted(2)
    inside, written = threading.Event(), threading.Event()
    seen: list[Any] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            assert inside.wait(WAIT)
            write(m)
            written.set()
        except BaseException as exc:
            errors.append(exc)

    def fn(k: Any, v: Any) -> Any:
        inside.set()
        written.wait(0.3)  # a writer that did not wait would be done by now
        seen.append((v, m.get(0), written.is_set()))
        return 0  # the same value: only a frozen writer keeps "w" out of the slot

    t = threading.Thread(target=writer)
    t.start()
    m.compute(0, fn)
    t.join(WAIT)
    assert not t.is_alive(), "deadlock"
    assert errors == []
    assert seen == [(0, 0, False)]
    assert m[0] == "w"
