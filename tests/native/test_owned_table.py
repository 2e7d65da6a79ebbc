"""ConcurrentMap's own hash table (src/safemap/native/sm_table.c).

Each shard owns an open-addressing table: lock-free readers (on free-threaded 3.14 they
compare exact str/int/bytes/tuple keys in C and take values with a re-checked try-incref),
writers under the shard lock, nothing released under the lock, tables rebuilt when used +
removed slots pass 2/3, and per-shard entry counts summed by len().
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.leaks import traced_growth

from safemap import DELETE
from safemap.native import ConcurrentMap

WAIT = 60.0  # seconds: only ever reached on a deadlock
FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()


def fresh(k: Any) -> Any:
    """An object equal to k (same type) that is, where the type allows it, a different
    object: what a key built at run time looks like to the map."""
    if isinstance(k, bool) or k is None:
        return k
    if isinstance(k, int):
        return int(str(k))
    if isinstance(k, float):
        return float(repr(k))
    if isinstance(k, str):
        return "".join(list(k))
    if isinstance(k, bytes):
        return bytes(bytearray(k))
    if isinstance(k, tuple):
        return tuple(fresh(x) for x in k)
    return k


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


def _eq_calls(m: Any, n: int, probe_fresh: bool, deletes: int) -> tuple[int, int]:
    """Total __eq__ calls of inserts, deletes, hits and misses, and the largest excess of
    one operation's calls over the live entries it could have compared with."""
    Collider.calls = 0
    worst = 0
    live = 0

    def op(f: Callable[[], object], passed: int) -> None:
        nonlocal worst
        before = Collider.calls
        f()
        worst = max(worst, Collider.calls - before - passed)

    keys = [Collider(i) for i in range(n)]
    for k in keys:
        op(lambda k=k: m.__setitem__(k, k.n), live)
        live += 1
    for k in keys[n - deletes :] + keys[:deletes]:
        op(lambda k=k: m.__delitem__(Collider(k.n)), live)
        live -= 1
    for k in keys[deletes : n - deletes]:
        probe = Collider(k.n) if probe_fresh else k
        op(lambda probe=probe: m[probe], live)
    for i in range(n, n + 20):  # misses compare with every live entry
        op(lambda i=i: Collider(i) in m, live)
    return Collider.calls, worst


@pytest.mark.parametrize("shards", [1, 8])
@pytest.mark.parametrize("probe_fresh", [False, True])
@pytest.mark.parametrize("deletes", [0, 50])
def test_equal_hashes_cost_no_more_eq_calls_than_dict(
    shards: int, probe_fresh: bool, deletes: int
) -> None:
    """n keys with one hash.  The table probes in dict's order, so an insert, delete, hit
    or miss calls __eq__ at most once per live entry with that hash, plus the few slots
    that order visits twice before it covers the table -- exactly dict's worst case.
    A rebuild keeps insertion order, hence each collision chain's order, so the totals
    are dict's too, deletes included."""
    n = 300
    ours, worst = _eq_calls(ConcurrentMap(shards=shards), n, probe_fresh, deletes)
    theirs, dict_worst = _eq_calls({}, n, probe_fresh, deletes)
    assert worst <= max(dict_worst, 2), (worst, dict_worst)
    assert ours <= theirs, (ours, theirs)


# ----------------------------------------------------------- key comparison in C

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-5, max_value=300),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.text(max_size=6),
    st.text(alphabet="a\u00e9\u4e00\U0001f600", max_size=4),
    st.binary(max_size=6),
)
keys = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.tuples(inner), max_leaves=4)
ops = st.lists(
    st.tuples(st.sampled_from(["set", "del", "get", "in"]), keys, st.integers(0, 9)),
    max_size=60,
)


@settings(
    max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(ops)
def test_lookups_match_dict_for_mixed_equal_keys(program: list[tuple[str, Any, int]]) -> None:
    """Plain keys (exact str/int/bytes and tuples of them) are compared in C; keys of other
    types (floats, bools, tuples holding them) through ==.  Equal keys of different types
    (1, 1.0, True; (1, 'a') and (1.0, 'a')) must find each other exactly as in a dict,
    whichever was stored first and whether the probe is the stored object or a copy."""
    m = ConcurrentMap(shards=2)
    d: dict[Any, int] = {}
    for op, k, v in program:
        probe = fresh(k)
        if op == "set":
            m[probe] = v
            d[probe] = v
        elif op == "del":
            assert (probe in m) == (probe in d)
            if probe in d:
                del m[probe]
                del d[probe]
        elif op == "get":
            assert m.get(probe, "absent") == d.get(probe, "absent")
        else:
            assert (probe in m) == (probe in d)
        assert len(m) == len(d)
    assert dict(m.items()) == d
    for k in d:
        assert m[fresh(k)] == d[k]


def test_big_ints_and_runtime_strings_found_by_equal_copies() -> None:
    m = ConcurrentMap()
    ks: list[Any] = [10**6 + i for i in range(500)] + [f"key-{i}" for i in range(500)]
    ks += [str(i).encode() * 3 for i in range(100)] + [
        (i, f"t{i}", (i * 7, b"x")) for i in range(100)
    ]
    ks += [2**100 + i for i in range(50)] + [-(2**65) - i for i in range(50)]
    for i, k in enumerate(ks):
        m[k] = i
    for i, k in enumerate(ks):
        probe = fresh(k)
        assert probe is not k or (isinstance(k, int) and -5 <= k <= 256)
        assert m[probe] == i
        assert m.get(fresh(k)) == i
    assert fresh(2**100 + 50) not in m
    assert "key-500" not in m


# ----------------------------------------------------------- reader restarts


class Mutator:
    """A stored key whose __eq__, called by a lock-free reader, replaces the entry."""

    def __init__(self, n: int, m: Any, armed: bool) -> None:
        self.n, self.m, self.armed = n, m, armed

    def __hash__(self) -> int:
        return 99

    def __eq__(self, other: object) -> bool:
        if self.armed:
            self.armed = False
            del self.m[self]
            self.m[Mutator(self.n, self.m, False)] = "after"
            for i in range(40):  # grow the shard: the reader's table is replaced
                self.m[("grow", i)] = i
        return isinstance(other, Mutator) and other.n == self.n


def test_read_restarts_when_a_key_eq_changes_the_table() -> None:
    """The stored key's __eq__ (run by a read, with no lock held) deletes the entry,
    reinserts it with another value and grows the table: the read restarts on the new
    table and returns the value present when it finished (as dict does)."""
    for shards in (1, 4):
        m: Any = ConcurrentMap(shards=shards)
        m[Mutator(1, m, True)] = "before"
        assert m[Mutator(1, m, False)] == "after"
        assert len(m) == 41
        assert m.get(Mutator(1, m, False)) == "after"


# ----------------------------------------------------------- release after the lock


class DelWriter:
    """A key whose stored copy writes to the map when the map drops it."""

    def __init__(self, m: Any, n: int, stored: bool, errors: list[BaseException]) -> None:
        self.m, self.n, self.stored, self.errors = m, n, stored, errors

    def __hash__(self) -> int:
        return self.n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DelWriter) and other.n == self.n

    def __del__(self) -> None:
        if self.stored:
            try:
                self.m[("del", self.n)] = True
            except BaseException as exc:  # recorded: the test asserts there is none
                self.errors.append(exc)


def _txn_delete(m: Any, k: Any) -> None:
    def fn(view: Any) -> None:
        del view[k]

    m.transaction(fn)


REMOVERS: dict[str, Callable[[Any, Any], object]] = {
    "compute": lambda m, k: m.compute(k, lambda key, v: DELETE),
    "compute_if_present": lambda m, k: m.compute_if_present(k, lambda key, v: DELETE),
    "merge": lambda m, k: m.merge(k, 0, lambda old, new: DELETE),
    "compare_and_delete": lambda m, k: m.compare_and_delete(k, 0),
    "transaction": _txn_delete,
    "clear": lambda m, k: m.clear(),
}


@pytest.mark.parametrize("kind", sorted(REMOVERS))
def test_removed_key_released_after_the_lock(kind: str) -> None:
    """Every way of removing an entry releases the stored key with no shard lock held, so
    a __del__ of the key that writes to the map lands (it used to be released inside the
    table change for the compute family, compare_and_delete and transactions, and the
    write failed with RecursiveUpdateError)."""
    m: Any = ConcurrentMap(shards=1)
    errors: list[BaseException] = []
    m[DelWriter(m, 1, True, errors)] = 0  # only the map references the stored key
    REMOVERS[kind](m, DelWriter(m, 1, False, errors))
    gc.collect()
    assert errors == []
    assert m.get(("del", 1)) is True
    assert DelWriter(m, 1, False, errors) not in m
    assert len(m) == 1 == len(list(m))


# ----------------------------------------------------------- table size


def test_removed_slots_do_not_accumulate() -> None:
    """Inserting fresh keys and deleting old ones forever keeps the table bounded: a
    rebuild drops removed slots once used + removed passes 2/3 of the table."""
    m: Any = ConcurrentMap(shards=1)
    for i in range(1000):
        m[i] = i
    base = m.__sizeof__()
    for i in range(1000, 60_000):
        m[i] = i
        del m[i - 1000]
        assert m.__sizeof__() <= 2 * base
    assert len(m) == 1000
    assert sorted(m) == list(range(59_000, 60_000))
    m.clear()
    assert len(m) == 0 and m.__sizeof__() < base


def test_sizeof_counts_the_tables() -> None:
    """__sizeof__ counts each shard's table: an index of int32 slots and 2/3 as many
    (hash, key, value) entries, sized as a dict sizes itself (whose index slots are
    narrower below 2**16 entries)."""
    m = ConcurrentMap(shards=1)
    empty = m.__sizeof__()
    d = {}
    for i in range(10_000):
        m[i] = None
        d[i] = None
    grown = m.__sizeof__() - empty
    assert 10_000 * 3 * 8 <= grown <= d.__sizeof__() * 1.15


def test_deeply_nested_maps_are_freed_without_recursion() -> None:
    """A chain of maps, each the only value of the previous one, is freed iteratively
    (the trashcan), not by recursing once per level."""
    head: Any = ConcurrentMap(shards=1)
    cur = head
    for _ in range(200_000):
        nxt: Any = ConcurrentMap(shards=1)
        cur["next"] = nxt
        cur = nxt
    del head, cur, nxt  # must not overflow the C stack
    gc.collect()


# ----------------------------------------------------------- readers racing writers


class Custom:
    """A non-plain key: compared through __eq__ holding a reference."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return hash(("c", self.n))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Custom) and other.n == self.n


def _run(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "deadlock"


def test_readers_racing_writers_see_only_values_of_their_key() -> None:
    """Writers replace the values of stable keys, delete and reinsert churn keys and grow
    and rebuild the tables; readers look stable keys up by equal copies (big ints, run-time
    strings, bytes, tuples, custom keys) and iterate.  Exact invariants: a stable key is
    never missed, every value read belongs to its key, an iteration yields each stable key
    exactly once, and the final contents are exact."""
    m: Any = ConcurrentMap(shards=4)
    stable: list[Any] = [10**9 + i for i in range(40)] + [f"s{i}" * 3 for i in range(40)]
    stable += [f"b{i}".encode() for i in range(20)] + [(i, f"t{i}") for i in range(20)]
    stable += [Custom(i) for i in range(20)]
    for k in stable:
        m[k] = (k, 0)
    rounds = 300 if not FREE_THREADED else 600
    errors: list[BaseException] = []
    reads = [0] * 3
    stop = threading.Event()

    def writer(w: int) -> None:
        try:
            for r in range(rounds):
                for k in stable[w::2]:
                    m[k] = (k, r)
                base = (w, r)
                for i in range(60):  # grow
                    m[(base, i)] = i
                for i in range(60):  # and leave removed slots behind
                    del m[(base, i)]
                m.compute(stable[w], lambda key, v: (key, -1))
                m.swap(stable[w + 2], (stable[w + 2], -2))
        except BaseException as exc:
            errors.append(exc)

    def reader(i: int) -> None:
        try:
            n = 0
            while not stop.is_set():
                for k in stable:
                    v = m[fresh(k) if not isinstance(k, Custom) else Custom(k.n)]
                    if v[0] != k:
                        raise AssertionError((k, v))
                    n += 1
                seen = [k for k in m if not (isinstance(k, tuple) and isinstance(k[0], tuple))]
                if len(seen) != len(stable) or set(map(repr, seen)) != set(map(repr, stable)):
                    raise AssertionError("iteration lost or repeated a stable key")
            reads[i] = n
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    readers = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in readers:
        t.start()
    _run(writers)
    stop.set()
    for t in readers:
        t.join(WAIT)
    assert not any(t.is_alive() for t in readers), "deadlock"
    assert errors == []
    assert all(n > 0 for n in reads)
    assert len(m) == len(stable)
    snap = m.snapshot()
    assert len(snap) == len(stable)
    for k in stable:
        assert snap[k][0] == k


def test_len_is_exact_while_keys_move_between_shards() -> None:
    """A writer keeps the map at n or n + 1 entries (insert one key, then delete another,
    in different shards); len() sums the shards' counts at one instant, so it never
    reports n - 1 or n + 2."""
    m: Any = ConcurrentMap(shards=8)
    n = 100
    for i in range(n):
        m[i] = i
    a, b = 10**6, 10**6 + 1  # keys in different shards
    probe: Any = ConcurrentMap(shards=8)
    probe[a] = 0
    sa = [s.entries for s in probe._collect_stats().shards].index(1)
    while True:
        probe.clear()
        probe[b] = 0
        if [s.entries for s in probe._collect_stats().shards].index(1) != sa:
            break
        b += 1
    m[a] = 0
    n += 1
    stop = threading.Event()
    bad: list[int] = []
    errors: list[BaseException] = []

    def mover() -> None:
        try:
            for _ in range(20_000):
                m[b] = 0
                del m[a]
                m[a] = 0
                del m[b]
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def counter() -> None:
        try:
            while not stop.is_set():
                c = len(m)
                if c not in (n, n + 1):
                    bad.append(c)
        except BaseException as exc:
            errors.append(exc)

    _run([threading.Thread(target=mover)] + [threading.Thread(target=counter) for _ in range(2)])
    assert errors == [] and bad == []
    assert len(m) == n


# ----------------------------------------------------------- no leak


@pytest.mark.usefixtures("frozen_heap")
def test_a_million_table_operations_leak_nothing() -> None:
    """Inserts, replacements, deletes, growth and rebuilds over a million operations: the
    traced memory of the second half of the rounds does not grow."""
    m: Any = ConcurrentMap(shards=4)

    def round_(r: int) -> None:
        for i in range(1000):
            m[i + r % 7] = (i, r)  # replace (and insert the first time)
        for i in range(500):
            m[f"k{i}-{r}"] = i  # insert fresh run-time strings: grow
        for i in range(500):
            del m[f"k{i}-{r}"]  # delete them again: removed slots, rebuilds
        for i in range(1000):
            m.get(10**9 + i)  # misses

    growth = traced_growth(round_, warmup=20, rounds=150)
    # 150 rounds x 3,000 operations: a leak of one object per write would be >= 7 MB
    assert growth < 256 * 1024, growth


class Chained:
    """Keys in one collision chain: a read compares with __eq__ (holding a reference to the
    stored key) every key before its own.  A stored key that the map drops runs Python code
    in __del__ (a quiescent state on free-threaded builds), wherever its last reference
    goes: possibly in a reader that just finished comparing it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return 4242

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Chained) and other.n == self.n

    def __del__(self) -> None:
        sum(range(20))  # Python code: the reader may pass a quiescent state here


def test_readers_comparing_colliding_keys_while_writers_churn_them() -> None:
    """Readers look up colliding keys by equal copies while a writer deletes and reinserts
    the keys before them in the chain (fresh objects each time, so the reader's reference
    may be the last one) and grows and rebuilds the table: every read of a stable key
    finds it, with its own value, and no read raises."""
    m: Any = ConcurrentMap(shards=1)
    churn = 8
    for i in range(churn):
        m[Chained(i)] = ("churn", i)
    stable = list(range(churn, churn + 4))
    for i in stable:
        m[Chained(i)] = ("stable", i)
    errors: list[BaseException] = []
    stop = threading.Event()
    reads = [0, 0]
    start = threading.Barrier(3, timeout=WAIT)

    def writer() -> None:
        try:
            start.wait()
            for r in range(4000 if FREE_THREADED else 400):
                i = r % churn
                del m[Chained(i)]
                m[Chained(i)] = ("churn", i)
                if r % 50 == 0:  # grow, then leave removed entries: rebuilds
                    for j in range(100):
                        m[("grow", j)] = j
                    for j in range(100):
                        del m[("grow", j)]
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def reader(t: int) -> None:
        try:
            start.wait()
            n = 0
            while not stop.is_set() or n == 0:
                for i in stable:
                    v = m.get(Chained(i))
                    if v != ("stable", i):
                        raise AssertionError((i, v))
                    n += 1
            reads[t] = n
        except BaseException as exc:
            errors.append(exc)

    _run(
        [threading.Thread(target=writer)]
        + [threading.Thread(target=reader, args=(t,)) for t in range(2)]
    )
    assert errors == []
    assert all(reads)
    assert len(m) == churn + len(stable)
