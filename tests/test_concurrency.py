"""Real threads against every map type, each test checking an exact invariant that a race
would break: lost updates, duplicated or missed entries, torn transactions, factories run
twice. ``fast_switch`` makes the GIL switch threads every microsecond so races are likely
on the GIL build; on a free-threaded build they run truly in parallel."""

from __future__ import annotations

import operator
import random
import threading
from collections import Counter
from typing import Any

import pytest

from safemap import DELETE, MISSING, FrozenMap

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fast_switch")]

THREADS = 8


class Token:
    """A unique object, equal only to itself."""

    __slots__ = ("owner", "seq")

    def __init__(self, owner: int, seq: int) -> None:
        self.owner = owner
        self.seq = seq

    def __repr__(self) -> str:
        return f"Token({self.owner}, {self.seq})"


# --------------------------------------------------------------- counters


def test_merge_counter_exact(map_type: type, run_threads: Any) -> None:
    m = map_type()
    n, keys = 4000, 4

    def work(i: int) -> None:
        for j in range(n):
            m.merge(j % keys, 1, operator.add)

    run_threads(work, THREADS)
    assert dict(m.items()) == {k: THREADS * n // keys for k in range(keys)}


def test_compute_increment_exact(map_type: type, run_threads: Any) -> None:
    m = map_type()
    n = 3000

    def work(i: int) -> None:
        for j in range(n):
            m.compute(j % 3, lambda k, old: 1 if old is MISSING else old + 1)
            m.compute_if_present(j % 3, lambda k, old: old)  # a no-op rewrite in between

    run_threads(work, THREADS)
    assert dict(m.items()) == {k: THREADS * n // 3 for k in range(3)}


def test_cas_retry_loop_exact(map_type: type, run_threads: Any) -> None:
    m = map_type()
    n = 2000
    retries = [0] * THREADS

    def work(i: int) -> None:
        for j in range(n):
            key = j % 2
            while True:
                current, found = m.load(key)
                if not found:
                    if not m.load_or_store(key, 1)[1]:
                        break  # we stored the first 1
                    retries[i] += 1
                    continue
                # fresh int objects above the small-int cache: equal, not identical
                if m.compare_and_swap(key, int(str(current)), current + 1):
                    break
                retries[i] += 1

    run_threads(work, THREADS)
    assert dict(m.items()) == {0: THREADS * n // 2, 1: THREADS * n // 2}


def test_swap_never_loses_or_duplicates_a_value(map_type: type, run_threads: Any) -> None:
    """Every token stored by swap is returned by exactly one later swap, or is the final
    value: each swap linearizes at one instant."""
    m = map_type()
    n = 3000
    returned: list[list[Any]] = [[] for _ in range(THREADS)]

    def work(i: int) -> None:
        for j in range(n):
            previous, found = m.swap("k", Token(i, j))
            if found:
                returned[i].append(previous)

    run_threads(work, THREADS)
    final = m["k"]
    seen = Counter(id(t) for lst in returned for t in lst)
    all_returned = [t for lst in returned for t in lst]
    assert len(all_returned) == THREADS * n - 1  # all but the very first swap found a value
    assert max(seen.values()) == 1
    assert id(final) not in seen
    assert {(t.owner, t.seq) for t in all_returned} | {(final.owner, final.seq)} == {
        (i, j) for i in range(THREADS) for j in range(n)
    }


def test_load_or_store_as_mutex(map_type: type, run_threads: Any) -> None:
    """load_or_store + compare_and_delete used as a try-lock: at most one owner at a time,
    and the owner's release always succeeds."""
    m = map_type()
    rounds = 1500
    inside = [0]
    violations: list[int] = []
    acquired = [0] * THREADS

    def work(i: int) -> None:
        for j in range(rounds):
            token = Token(i, j)
            while True:
                holder, loaded = m.load_or_store("lock", token)
                if not loaded:
                    break
            assert holder is token
            inside[0] += 1
            if inside[0] != 1:
                violations.append(inside[0])
            inside[0] -= 1
            acquired[i] += 1
            assert m.compare_and_delete("lock", token) is True

    # A deadlock guard only: eight threads spinning on an actor map's round trips take
    # tens of seconds on a loaded free-threaded machine (3.14t parks a lock's waiter
    # after sched_yield spins, slow when the cores are oversubscribed).
    run_threads(work, THREADS, timeout=240.0)
    assert violations == []
    assert acquired == [rounds] * THREADS
    assert "lock" not in m and len(m) == 0


def test_pop_each_entry_exactly_once(map_type: type, run_threads: Any) -> None:
    n = 8000
    m = map_type({k: Token(-1, k) for k in range(n)})
    expected = {k: m[k] for k in range(n)}
    got: list[list[tuple[int, Any]]] = [[] for _ in range(THREADS)]

    def work(i: int) -> None:
        order = list(range(n))
        random.Random(i).shuffle(order)
        for k in order:
            how = k % 4
            if how == 0:
                value = m.pop(k, None)
                found = value is not None
            elif how == 1:
                value, found = m.load_and_delete(k)
            elif how == 2:
                value = expected[k]
                found = m.compare_and_delete(k, value)
            else:
                box: list[Any] = []
                m.compute_if_present(k, lambda key, old, box=box: box.append(old) or DELETE)
                found = bool(box)
                value = box[0] if box else None
            if found:
                got[i].append((k, value))

    run_threads(work, THREADS)
    flat = [pair for lst in got for pair in lst]
    assert len(flat) == n
    assert sorted(k for k, _ in flat) == list(range(n))
    assert all(value is expected[k] for k, value in flat)
    assert len(m) == 0


def test_popitem_each_entry_exactly_once(map_type: type, run_threads: Any) -> None:
    n = 3000
    m = map_type({k: -k for k in range(n)})
    got: list[list[tuple[int, int]]] = [[] for _ in range(THREADS)]
    empty_len: list[int] = []

    def work(i: int) -> None:
        while True:
            try:
                got[i].append(m.popitem())
            except KeyError:
                empty_len.append(len(m))  # nobody inserts: empty is final
                return

    run_threads(work, THREADS)
    flat = sorted(pair for lst in got for pair in lst)
    assert flat == [(k, -k) for k in range(n)]
    assert empty_len == [0] * THREADS


# ------------------------------------------------- one factory, one object


@pytest.mark.parametrize("method", ["compute_if_absent", "load_or_store", "setdefault", "compute"])
def test_racing_creators_agree_on_one_object(map_type: type, method: str) -> None:
    """Threads race to create the same absent key: the factory runs once per key and every
    thread gets the identical stored object."""
    rounds = 300
    m = map_type()
    calls: Counter[int] = Counter()
    results: list[list[Any]] = [[None] * THREADS for _ in range(rounds)]
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []
    calls_lock = threading.Lock()

    def factory(key: int) -> Any:
        with calls_lock:
            calls[key] += 1
        return Token(-1, key)

    def create(key: int, i: int) -> Any:
        if method == "compute_if_absent":
            return m.compute_if_absent(key, factory)
        if method == "compute":
            return m.compute(key, lambda k, old: factory(k) if old is MISSING else old)
        offered = Token(i, key)
        if method == "load_or_store":
            actual, loaded = m.load_or_store(key, offered)
            if not loaded:
                assert actual is offered
                factory(key)
            return actual
        actual = m.setdefault(key, offered)
        if actual is offered:
            factory(key)  # count the winners
        return actual

    def work(i: int) -> None:
        try:
            for r in range(rounds):
                barrier.wait(30)
                results[r][i] = create(r, i)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "deadlock"
    if errors:
        raise errors[0]
    assert all(calls[r] == 1 for r in range(rounds)), calls
    for r in range(rounds):
        stored = m[r]
        assert all(result is stored for result in results[r])


# ----------------------------------------------------- weakly consistent iteration


def test_iteration_during_churn(map_type: type) -> None:
    """Readers iterate (iter, keys, values, items, range) while writers insert, delete,
    overwrite and transact. Iteration never raises, yields no key twice, yields every
    stable key (present throughout) exactly once, and only values a key really had."""
    stable = {k: ("stable", k, 0) for k in range(200)}
    m = map_type(stable)
    volatile = range(1000, 3000)
    stop = threading.Event()
    passes = 50
    readers, writers = 4, 4
    barrier = threading.Barrier(readers + writers)
    errors: list[BaseException] = []
    lens: list[int] = []

    def check_keys(keys: list[Any]) -> None:
        assert len(keys) == len(set(keys)), "a key was yielded twice"
        missing = set(stable) - set(keys)
        assert not missing, f"stable keys not yielded: {sorted(missing)[:5]}"
        assert set(keys) <= set(stable) | set(volatile)

    def check_value(k: Any, v: Any) -> None:
        if k in stable:
            assert v[:2] == ("stable", k), (k, v)
        else:
            assert v == ("volatile", k) or v == ("txn", k), (k, v)

    def reader(i: int) -> None:
        for p in range(passes):
            kind = (p + i) % 5
            if kind == 0:
                check_keys(list(m))
            elif kind == 1:
                check_keys(list(m.keys()))
            elif kind == 2:
                items = list(m.items())
                check_keys([k for k, _ in items])
                for k, v in items:
                    check_value(k, v)
            elif kind == 3:
                values = list(m.values())
                tags = Counter(v[1] for v in values if v[0] == "stable")
                assert set(tags) == set(stable) and max(tags.values()) == 1
            else:
                seen: list[tuple[Any, Any]] = []
                m.range(lambda k, v, seen=seen: seen.append((k, v)))
                check_keys([k for k, _ in seen])
                for k, v in seen:
                    check_value(k, v)
            n = len(m)
            lens.append(n)
            assert len(stable) <= n <= len(stable) + len(volatile)

    def writer(i: int) -> None:
        rng = random.Random(i)
        gen = 0
        while not stop.is_set():
            gen += 1
            k = rng.choice(volatile)
            op = rng.randrange(8)
            if op == 0:
                m[k] = ("volatile", k)
            elif op == 1:
                m.pop(k, None)
            elif op == 2:
                m.compute(k, lambda key, old: DELETE if old is not MISSING else ("volatile", key))
            elif op == 3:
                m.update({j: ("volatile", j) for j in rng.sample(volatile, 50)})
            elif op == 4:
                m.delete_if(lambda key, v, g=gen: key in volatile and key % 7 == g % 7)
            elif op == 5:
                ks = rng.sample(volatile, 20)

                def move(view: Any, ks: list[int] = ks) -> None:
                    for j in ks:
                        if j in view:
                            del view[j]
                        else:
                            view[j] = ("txn", j)

                m.transaction(move)
            elif op == 6:
                s = rng.randrange(len(stable))
                m[s] = ("stable", s, gen)  # overwrite a stable key: still present
            else:
                m.store(k, ("volatile", k))

    def run(role: Any, i: int) -> None:
        try:
            barrier.wait(30)
            role(i)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            if role is reader:
                done.release()

    done = threading.Semaphore(0)
    threads = [threading.Thread(target=run, args=(reader, i), daemon=True) for i in range(readers)]
    threads += [threading.Thread(target=run, args=(writer, i), daemon=True) for i in range(writers)]
    for t in threads:
        t.start()
    for _ in range(readers):
        assert done.acquire(timeout=90), "a reader is stuck"
    stop.set()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
    assert len(lens) == readers * passes
    final = list(m)
    check_keys(final)
    assert len(m) == len(final)


# ----------------------------------------------------------------- delete_if


def test_delete_if_removes_only_entries_that_still_match(map_type: type) -> None:
    """Every entry starts 'marked'; writers replace some with 'unmarked' values (only if
    still present) while delete_if removes the marked ones. An entry a writer unmarked
    must survive; every other entry must be gone: the final state is exactly determined."""
    for _ in range(8):
        _delete_if_round(map_type, n=3000)


def _delete_if_round(map_type: type, n: int) -> None:
    marked = {k: Token(0, k) for k in range(n)}
    m = map_type(marked)
    unmarked: list[set[int]] = [set() for _ in range(THREADS - 1)]
    barrier = threading.Barrier(THREADS)
    removed: list[int] = []
    errors: list[BaseException] = []
    work = [0]

    def pred(k: Any, v: Any) -> bool:
        work[0] += 1  # a little Python work per entry widens the race window
        return bool(v.owner == 0)

    def remover() -> None:
        barrier.wait(30)
        removed.append(m.delete_if(pred))

    def writer(i: int) -> None:
        barrier.wait(30)
        rng = random.Random(i)
        for k in rng.sample(range(n), n // 3):
            if m.compute_if_present(k, lambda key, old: Token(1, key)) is not None:
                unmarked[i].add(k)

    def run(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(remover,), daemon=True)]
    threads += [
        threading.Thread(target=run, args=(writer, i), daemon=True) for i in range(THREADS - 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
    survivors = set().union(*unmarked)
    final = dict(m.items())
    assert set(final) == survivors, (
        f"{len(set(final) - survivors)} marked entries survived, "
        f"{len(survivors - set(final))} unmarked entries were removed"
    )
    assert all(v.owner == 1 for v in final.values())
    assert removed == [n - len(survivors)]


# --------------------------------------------------------------- transactions


def test_transactions_all_or_nothing_and_snapshots_consistent(map_type: type) -> None:
    """Movers transfer amounts between accounts in transactions, some of which raise after
    half the transfer; observers check through snapshot(), copy(), == and a read-only
    transaction that the total never changes. The final balances equal the initial ones
    plus the committed transfers exactly, and a counter updated by both transactions and
    merge() loses no increment."""
    accounts = 6
    initial = 1000
    m = map_type({a: initial for a in range(accounts)})
    m["counter"] = 0
    movers, observers = 4, 3
    moves = 1000
    committed: list[list[tuple[int, int, int]]] = [[] for _ in range(movers)]
    merges = [0] * observers
    total = accounts * initial
    stop = threading.Event()
    barrier = threading.Barrier(movers + observers)
    errors: list[BaseException] = []
    observations = [0]

    class Abort(Exception):
        pass

    def mover(i: int) -> None:
        rng = random.Random(i)
        for _ in range(moves):
            src, dst = rng.sample(range(accounts), 2)
            amount = rng.randrange(1, 50)
            fail = rng.random() < 0.3

            def transfer(
                view: Any, src: int = src, dst: int = dst, amount: int = amount, fail: bool = fail
            ) -> str:
                view[src] -= amount
                view["counter"] += 1
                if fail:
                    raise Abort
                view[dst] += amount
                return "ok"

            try:
                assert m.transaction(transfer) == "ok"
            except Abort:
                assert fail
            else:
                committed[i].append((src, dst, amount))

    def check(state: Any) -> None:
        assert sum(state[a] for a in range(accounts)) == total, dict(state)
        assert len(state) == accounts + 1

    def observer(i: int) -> None:
        while not stop.is_set():
            snap = m.snapshot()
            assert type(snap) is FrozenMap
            check(snap)
            check(m.copy())
            check(m.transaction(lambda view: dict(view)))
            assert len(m) == accounts + 1
            m.merge("counter", 1, operator.add)
            merges[i] += 1
            observations[0] += 1

    def run(role: Any, i: int) -> None:
        try:
            barrier.wait(30)
            role(i)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
            stop.set()

    threads = [threading.Thread(target=run, args=(mover, i), daemon=True) for i in range(movers)]
    watchers = [
        threading.Thread(target=run, args=(observer, i), daemon=True) for i in range(observers)
    ]
    for t in threads + watchers:
        t.start()
    for t in threads:
        t.join(90)
    stop.set()
    for t in watchers:
        t.join(30)
    assert not any(t.is_alive() for t in threads + watchers), "deadlock"
    if errors:
        raise errors[0]
    assert observations[0] > 0
    expected = {a: initial for a in range(accounts)}
    for log in committed:
        for src, dst, amount in log:
            expected[src] -= amount
            expected[dst] += amount
    final = dict(m.items())
    counter = final.pop("counter")
    assert final == expected
    # every transaction (committed or not) incremented the counter in its view, but only
    # the committed ones landed; every merge landed
    assert counter == sum(len(log) for log in committed) + sum(merges)


def test_transaction_excludes_compute_on_same_keys(map_type: type, run_threads: Any) -> None:
    """A transaction's read-modify-write of a key must not interleave with compute() on
    that key (no lost update in either direction)."""
    m = map_type({"x": 0})
    n = 1500

    def work(i: int) -> None:
        for _ in range(n):
            if i % 2:
                m.transaction(lambda view: view.__setitem__("x", view["x"] + 1))
            else:
                m.compute("x", lambda k, old: old + 1)

    run_threads(work, THREADS)
    assert m["x"] == THREADS * n


def test_clear_and_len_under_concurrency(map_type: type, run_threads: Any) -> None:
    """len() is always a value the map could have had; clear() is atomic."""
    m = map_type()
    width = 64

    def work(i: int) -> None:
        if i == 0:
            for _ in range(300):
                m.clear()
                assert len(m) <= width
        elif i == 1:
            for _ in range(2000):
                n = len(m)
                assert 0 <= n <= width
                snap = m.snapshot()
                assert len(snap) <= width
        else:
            for j in range(2000):
                m[(i * 1000 + j) % width] = j

    run_threads(work, THREADS)
    assert len(m) == len(list(m)) == len(m.snapshot())
