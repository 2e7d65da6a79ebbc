"""safemap.Cache's transaction(fn): the native maps' shared transaction storage, and every
guarantee of docs/cache.md ("Transactions") under it: all or nothing, the view closed
after fn, RecursiveUpdateError from the cache's own methods inside fn, the bound and
on_evict for the commit's evictions, ttl inside the view, exact statistics."""

from __future__ import annotations

import threading
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import safemap
from safemap.native import _core
from safemap.protocol.expiry import ManualClock


def _storage_of(view: Any) -> Any:
    return view._base


# ------------------------------------------------------------------ the storage


def test_the_view_reads_the_shared_native_storage() -> None:
    types = {t.__name__: t for t in _core._types}
    assert "CacheTransactionStorage" in types
    m: safemap.Cache[str, int] = safemap.Cache({"a": 1}, maxsize=8)
    seen: list[Any] = []
    m.transaction(lambda view: seen.append(_storage_of(view)))
    assert type(seen[0]) is types["CacheTransactionStorage"]
    with pytest.raises(TypeError):  # not subclassable, like the other storage types

        class Sub(types["CacheTransactionStorage"]):  # type: ignore[misc]
            pass


def test_view_and_storage_are_unusable_after_fn_returns() -> None:
    m: safemap.Cache[str, int] = safemap.Cache({"a": 1}, maxsize=8)
    kept: list[Any] = []

    def fn(view: Any) -> None:
        kept.append(view)
        view["b"] = 2

    m.transaction(fn)
    view = kept[0]
    storage = _storage_of(view)
    for use in (
        lambda: view["a"],
        lambda: view.__setitem__("c", 3),
        lambda: len(view),
        lambda: storage["a"],
        lambda: storage.__setitem__("c", 3),
        lambda: "a" in storage,
        lambda: len(storage),
        lambda: list(storage),
    ):
        with pytest.raises(RuntimeError):
            use()
    assert dict(m) == {"a": 1, "b": 2}
    m["z"] = 0  # the lock was returned: writes work


def test_the_storage_refuses_another_thread() -> None:
    m: safemap.Cache[str, int] = safemap.Cache({"a": 1}, maxsize=8)
    errors: list[BaseException] = []
    other_done = threading.Event()

    def fn(view: Any) -> None:
        storage = _storage_of(view)

        def other() -> None:
            try:
                storage["a"]
            except BaseException as exc:
                errors.append(exc)
            finally:
                other_done.set()

        t = threading.Thread(target=other, daemon=True)
        t.start()
        t.join(30)
        view["a"] = 2

    m.transaction(fn)
    assert other_done.is_set()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert m["a"] == 2


# ------------------------------------------------------------- all or nothing


def test_the_commit_is_all_or_nothing() -> None:
    m: safemap.Cache[str, int] = safemap.Cache({"a": 1, "b": 2}, maxsize=8)

    def fails(view: Any) -> None:
        view["a"] = 10
        del view["b"]
        view["c"] = 3
        raise ValueError("no")

    with pytest.raises(ValueError):
        m.transaction(fails)
    assert dict(m) == {"a": 1, "b": 2}

    def weigher(key: Any, value: Any) -> int:
        if value == "boom":
            raise ZeroDivisionError
        return 1

    w: safemap.Cache[str, Any] = safemap.Cache({"a": "x"}, maxsize=8, weigher=weigher)

    def bad_commit(view: Any) -> None:
        view["a"] = "y"
        view["b"] = "boom"  # the weigher raises during the commit: rolled back

    with pytest.raises(ZeroDivisionError):
        w.transaction(bad_commit)
    assert dict(w) == {"a": "x"}
    assert w.transaction(lambda view: dict(view)) == {"a": "x"}


def test_the_cache_own_methods_raise_inside_fn() -> None:
    m: safemap.Cache[str, int] = safemap.Cache({"a": 1}, maxsize=8)
    calls = [
        lambda: m.get("a"),
        lambda: m["a"],
        lambda: "a" in m,
        lambda: m.store("b", 2),
        lambda: m.pop("a"),
        lambda: len(m),
        lambda: list(m),
        lambda: m.snapshot(),
        lambda: m.transaction(lambda v: None),
    ]

    def fn(view: Any) -> int:
        for call in calls:
            with pytest.raises(safemap.RecursiveUpdateError):
                call()
        view["c"] = 3
        return len(view)

    assert m.transaction(fn) == 2
    assert dict(m) == {"a": 1, "c": 3}


@settings(max_examples=60, deadline=None)
@given(
    initial=st.dictionaries(st.integers(0, 9), st.integers(), max_size=8),
    ops=st.lists(
        st.tuples(st.sampled_from(["set", "del", "get", "in", "len", "iter"]), st.integers(0, 9)),
        max_size=25,
    ),
    raises=st.booleans(),
)
def test_the_view_behaves_like_a_dict(
    initial: dict[int, int], ops: list[tuple[str, int]], raises: bool
) -> None:
    """An unbounded cache: the view reads and writes like a dict over the cache's contents,
    and the cache ends as that dict (or unchanged if fn raised)."""
    m: safemap.Cache[int, int] = safemap.Cache(initial)
    model = dict(initial)

    def fn(view: Any) -> None:
        for n, (op, key) in enumerate(ops):
            if op == "set":
                view[key] = n
                model[key] = n
            elif op == "del":
                if key in model:
                    del view[key]
                    del model[key]
                else:
                    with pytest.raises(KeyError):
                        del view[key]
            elif op == "get":
                assert view.get(key, "absent") == model.get(key, "absent")
            elif op == "in":
                assert (key in view) == (key in model)
            elif op == "len":
                assert len(view) == len(model)
            else:
                assert sorted(view) == sorted(model)
        if raises:
            raise LookupError

    if raises:
        with pytest.raises(LookupError):
            m.transaction(fn)
        assert dict(m) == initial
    else:
        m.transaction(fn)
        assert dict(m) == model
        assert len(m) == len(model)


def test_statistics_count_the_commit_not_the_view_reads() -> None:
    m: safemap.Cache[str, int] = safemap.Cache({"a": 1, "b": 2, "c": 3}, maxsize=8)
    before = m.stats()

    def fn(view: Any) -> None:
        assert view["a"] == 1 and "zz" not in view and view.get("yy") is None
        assert sorted(view) == ["a", "b", "c"] and len(view) == 3
        view["a"] = 10  # update
        view["d"] = 4  # insert
        del view["b"]  # delete
        view["c"] = view["c"]  # the same value: no write

    m.transaction(fn)
    after = m.stats()
    assert (after.hits, after.misses) == (before.hits, before.misses)
    assert after.inserts - before.inserts == 1
    assert after.updates - before.updates == 1
    assert after.deletes - before.deletes == 1
    assert after.evictions == 0 and after.size == 3


# ------------------------------------------------------------ bound, on_evict


@pytest.mark.parametrize("policy", ["tinylfu", "lru"])
def test_commit_evictions_keep_the_bound_and_call_on_evict_with_no_lock(policy: str) -> None:
    calls: list[tuple[Any, Any, str]] = []
    m: safemap.Cache[Any, Any]

    def on_evict(key: Any, value: Any, cause: str) -> None:
        # No lock held, the transaction is over: the cache's methods work.
        assert m.get(key) is None
        m.pop(("never", key), None)
        calls.append((key, value, cause))

    m = safemap.Cache({i: i for i in range(4)}, maxsize=4, policy=policy, on_evict=on_evict)

    def fn(view: Any) -> None:
        for k in range(10, 20):
            view[k] = k
        assert calls == []  # nothing evicted before the commit

    m.transaction(fn)
    assert len(m) == 4
    assert len(calls) == 10  # 14 entries written in all, 4 kept
    assert {c for _, _, c in calls} == {"size"}
    evicted = [k for k, _, _ in calls]
    assert len(set(evicted)) == len(evicted)  # once per entry
    assert set(evicted) | set(m) == set(range(4)) | set(range(10, 20))
    assert all(k == v for k, v, _ in calls)
    st = m.stats()
    assert st.evictions_size == 10
    assert st.inserts == 14 and st.deletes == 10 and st.size == 4


def test_values_the_commit_drops_are_released_when_it_returns() -> None:
    class V:
        pass

    old, evicted = V(), V()
    refs = [weakref.ref(old), weakref.ref(evicted)]
    m: safemap.Cache[str, Any] = safemap.Cache({"a": old, "b": evicted}, maxsize=2, policy="lru")
    del old, evicted

    def fn(view: Any) -> None:
        view["a"] = 1  # overwrites
        view["c"] = 2  # evicts "b"

    m.transaction(fn)
    assert dict(m) == {"a": 1, "c": 2}
    assert [r() for r in refs] == [None, None]


# --------------------------------------------------------------------------- ttl


def test_ttl_expiry_inside_the_view() -> None:
    clock = ManualClock()
    evicted: list[tuple[Any, Any, str]] = []
    m: safemap.Cache[str, int] = safemap.Cache(
        maxsize=8, ttl=10, timer=clock, on_evict=lambda k, v, c: evicted.append((k, v, c))
    )
    m["old"] = 1
    clock.advance(5)
    m["young"] = 2

    def fn(view: Any) -> dict[str, Any]:
        storage = _storage_of(view)
        before = ("old" in view, len(storage), sorted(storage))
        clock.advance(6)  # "old" expires inside the transaction
        with pytest.raises(KeyError):
            view["old"]
        with pytest.raises(KeyError):
            storage["old"]
        seen = {
            "before": before,
            "in": "old" in view,
            "len": len(storage),
            "keys": sorted(storage),
            "view": dict(view),
        }
        view["old"] = 3  # a write over an expired entry inserts it anew
        return seen

    seen = m.transaction(fn)
    assert seen == {
        "before": (True, 2, ["old", "young"]),
        "in": False,
        "len": 1,
        "keys": ["young"],
        "view": {"young": 2},
    }
    assert dict(m) == {"old": 3, "young": 2}
    assert evicted == [("old", 1, "expired")]
    assert m.stats().evictions_expired == 1


# ------------------------------------------------------------------- threads


def test_transactions_racing_readers_keep_bound_totals_and_counts(
    run_threads: Any, fast_switch: None
) -> None:
    """Movers' transactions move units between accounts (every account changes in each)
    and then insert a new key, which evicts: the accounts were just rewritten by the same
    commit, so under LRU the victim is always an older inserted key. Readers' snapshots,
    iterations and len() never see more than the bound nor half a transaction; on_evict
    runs once per evicted entry and the statistics are exact."""
    accounts, start, spare = 4, 1000, 8
    maxsize = accounts + spare
    evicted: list[Any] = []
    evicted_lock = threading.Lock()

    def on_evict(key: Any, value: Any, cause: str) -> None:
        with evicted_lock:
            evicted.append((key, cause))

    m: safemap.Cache[Any, int] = safemap.Cache(
        {("acct", a): start for a in range(accounts)},
        maxsize=maxsize,
        policy="lru",
        on_evict=on_evict,
    )
    movers, readers, rounds = 2, 2, 1500
    worst: list[int] = []
    torn: list[Any] = []
    movers_left = [movers]
    left_lock = threading.Lock()
    stop = threading.Event()

    def work(i: int) -> None:
        if i < movers:
            try:
                for n in range(rounds):

                    def move(view: Any, n: int = n) -> None:
                        sign = 1 if (n + i) % 2 else -1
                        for a in range(accounts):  # deltas +1, -1, +1, -1: sum 0
                            view[("acct", a)] += sign if a % 2 else -sign
                        view[("new", i, n)] = n

                    m.transaction(move)
            finally:
                with left_lock:
                    movers_left[0] -= 1
                    if movers_left[0] == 0:
                        stop.set()
            return
        w = 0
        while not stop.is_set():
            snap = m.snapshot()
            w = max(w, len(snap), len(m), sum(1 for _ in m))
            accts = [v for k, v in snap.items() if k[0] == "acct"]
            if len(accts) != accounts or sum(accts) != accounts * start:
                torn.append(dict(snap))
            if sum(v for k, v in m.items() if k[0] == "acct") != accounts * start:
                torn.append("iteration")
        worst.append(w)

    run_threads(work, movers + readers, timeout=180)
    assert torn == []
    assert len(worst) == readers and max(worst) <= maxsize
    assert sum(m[("acct", a)] for a in range(accounts)) == accounts * start
    inserted = movers * rounds
    assert len(m) == maxsize
    assert len(evicted) == len(set(evicted)) == inserted - spare
    assert all(k[0] == "new" and cause == "size" for k, cause in evicted)
    st = m.stats()
    assert st.evictions_size == inserted - spare
    assert st.inserts == accounts + inserted
    assert st.deletes == inserted - spare
    assert st.updates == movers * rounds * accounts
