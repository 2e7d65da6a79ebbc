"""Robustness of every map type: hostile keys, callbacks that raise, block or re-enter the
map, unhashable keys, ``None`` values, pickling and copying, sentinels, identity and the
release of removed objects (``docs/protocol.md``, "The guarantees")."""

from __future__ import annotations

import copy
import functools
import gc
import operator
import pickle
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest

import safemap
from safemap import DELETE, MISSING, FrozenMap, RecursiveUpdateError

WAIT = 20.0  # seconds a liveness check waits before declaring a thread blocked


class Boom(Exception):
    """Raised on purpose by keys and callbacks."""


def contents(m: Any) -> dict[Any, Any]:
    return dict(m.items())


def run_in_thread(
    fn: Callable[[], Any],
    timeout: float = WAIT,
    what: str = "the other thread is blocked (a lock is held while user code runs?)",
) -> Any:
    """Run ``fn`` in another thread; fail if it is still blocked after ``timeout``."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), what
    if errors:
        raise errors[0]
    return result[0]


GUARD = 45.0


def deadlock_guarded(test: Callable[..., None]) -> Callable[..., None]:
    """Run the test body in a worker thread. A self-deadlock inside a native map blocks in
    C code where pytest-timeout's signal cannot reach it; in a worker thread it becomes a
    clean failure of this test (the stuck daemon thread only holds this test's map)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        run_in_thread(
            lambda: test(*args, **kwargs),
            timeout=GUARD,
            what="deadlock: the map call re-entered from user code never returned",
        )

    return wrapper


# --------------------------------------------------------------- hostile keys


class BadHash:
    """Hashes to 42 until ``fail`` is set; then ``__hash__`` raises ``self.error``."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.error = Boom("hash")

    def __hash__(self) -> int:
        if self.fail:
            raise self.error
        return 42

    def __eq__(self, other: object) -> bool:
        return self is other


class BadEq:
    """Every instance hashes to 42; comparing two distinct instances raises if either
    has ``fail`` set."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.error = Boom("eq")

    def __hash__(self) -> int:
        return 42

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if isinstance(other, BadEq) and (self.fail or other.fail):
            raise (self if self.fail else other).error
        return False


# (name, operation) pairs: each operation touches exactly one key ``k``.
KEY_OPS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("getitem", lambda m, k: m[k]),
    ("setitem", lambda m, k: m.__setitem__(k, "v")),
    ("delitem", lambda m, k: m.__delitem__(k)),
    ("contains", lambda m, k: k in m),
    ("get", lambda m, k: m.get(k)),
    ("get-default", lambda m, k: m.get(k, "d")),
    ("pop", lambda m, k: m.pop(k)),
    ("pop-default", lambda m, k: m.pop(k, "d")),
    ("setdefault", lambda m, k: m.setdefault(k, "v")),
    ("update-mapping", lambda m, k: m.update({k: "v"}) if hash_ok(k) else m.update([(k, "v")])),
    ("update-pairs", lambda m, k: m.update([(k, "v")])),
    ("load", lambda m, k: m.load(k)),
    ("store", lambda m, k: m.store(k, "v")),
    ("load_or_store", lambda m, k: m.load_or_store(k, "v")),
    ("load_and_delete", lambda m, k: m.load_and_delete(k)),
    ("delete", lambda m, k: m.delete(k)),
    ("swap", lambda m, k: m.swap(k, "v")),
    ("compare_and_swap", lambda m, k: m.compare_and_swap(k, "old", "v")),
    ("compare_and_delete", lambda m, k: m.compare_and_delete(k, "old")),
    ("compute", lambda m, k: m.compute(k, lambda key, old: "v")),
    ("compute-delete", lambda m, k: m.compute(k, lambda key, old: DELETE)),
    ("compute_if_absent", lambda m, k: m.compute_if_absent(k, lambda key: "v")),
    ("compute_if_present", lambda m, k: m.compute_if_present(k, lambda key, old: "v")),
    ("merge", lambda m, k: m.merge(k, "v", operator.add)),
    ("keys-contains", lambda m, k: k in m.keys()),  # noqa: SIM118
    ("items-contains", lambda m, k: (k, "old") in m.items()),
]
KEY_OP_IDS = [name for name, _ in KEY_OPS]
KEY_OP_FNS = [op for _, op in KEY_OPS]


def hash_ok(key: Any) -> bool:
    try:
        hash(key)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("op", KEY_OP_FNS, ids=KEY_OP_IDS)
@deadlock_guarded
def test_key_hash_raises_on_new_key(map_type: type, op: Callable[[Any, Any], Any]) -> None:
    m = map_type({"a": 1, 42: 2})
    before = contents(m)
    key = BadHash(fail=True)
    with pytest.raises(Boom) as info:
        op(m, key)
    assert info.value is key.error
    assert contents(m) == before


@pytest.mark.parametrize("op", KEY_OP_FNS, ids=KEY_OP_IDS)
@deadlock_guarded
def test_key_hash_raises_on_stored_key(map_type: type, op: Callable[[Any, Any], Any]) -> None:
    key = BadHash(fail=False)
    m = map_type({"a": 1})
    m[key] = "old"
    key.fail = True
    with pytest.raises(Boom) as info:
        op(m, key)
    assert info.value is key.error
    key.fail = False
    assert len(m) == 2 and m["a"] == 1 and m[key] == "old"


@pytest.mark.parametrize("op", KEY_OP_FNS, ids=KEY_OP_IDS)
@deadlock_guarded
def test_key_eq_raises(map_type: type, op: Callable[[Any, Any], Any]) -> None:
    stored = BadEq(fail=False)
    m = map_type({"a": 1})
    m[stored] = "old"
    probe = BadEq(fail=True)
    with pytest.raises(Boom) as info:
        op(m, probe)
    assert info.value is probe.error
    assert len(m) == 2 and m["a"] == 1 and m[stored] == "old"
    assert contents(m) == {"a": 1, stored: "old"}


# ----------------------------------------------------------- re-entrant keys


class HookKey:
    """Hashes to 7; equal to HookKeys of the same name. The first ``__eq__`` (or, for
    ``hook_on="hash"``, the first ``__hash__``) after ``arm()`` runs the hook once."""

    def __init__(self, name: str, hook_on: str = "eq") -> None:
        self.name = name
        self.hook_on = hook_on
        self.hook: Callable[[], None] | None = None

    def arm(self, hook: Callable[[], None]) -> None:
        self.hook = hook

    def _fire(self) -> None:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()

    def __hash__(self) -> int:
        if self.hook_on == "hash":
            self._fire()
        return 7

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HookKey):
            return NotImplemented
        if self.hook_on == "eq":
            self._fire()
            other._fire()
        return self.name == other.name

    def __repr__(self) -> str:
        return f"HookKey({self.name!r})"


# Outer operations on a probe key equal to no stored key, and what they do to the map.
READ_OPS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("contains", lambda m, k: k in m),
    ("get", lambda m, k: m.get(k)),
    ("load", lambda m, k: m.load(k)),
    ("getitem-missing", lambda m, k: m.get(k, None)),
    ("compare_and_delete-absent", lambda m, k: m.compare_and_delete(k, 0)),
    ("pop-default-absent", lambda m, k: m.pop(k, None)),
]
WRITE_OPS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("setitem", lambda m, k: m.__setitem__(k, "new")),
    ("store", lambda m, k: m.store(k, "new")),
    ("setdefault", lambda m, k: m.setdefault(k, "new")),
    ("load_or_store", lambda m, k: m.load_or_store(k, "new")),
    ("swap", lambda m, k: m.swap(k, "new")),
    ("compute", lambda m, k: m.compute(k, lambda key, old: "new")),
    ("compute_if_absent", lambda m, k: m.compute_if_absent(k, lambda key: "new")),
    ("merge", lambda m, k: m.merge(k, "new", operator.add)),
    ("update", lambda m, k: m.update({k: "new"})),
]
ALL_OPS = READ_OPS + WRITE_OPS
WRITES = {name for name, _ in WRITE_OPS}


def reentry_map(map_type: type, hook_on: str = "eq") -> tuple[Any, HookKey, HookKey]:
    m = map_type({"x": 1, "y": 2})
    stored = HookKey("stored", hook_on)
    m[stored] = "s"
    probe = HookKey("probe", hook_on)
    return m, stored, probe


@pytest.mark.timeout(60)
@pytest.mark.parametrize("hook_on", ["eq", "hash"])
@pytest.mark.parametrize("op", [op for _, op in ALL_OPS], ids=[n for n, _ in ALL_OPS])
@deadlock_guarded
def test_key_reading_the_map_from_eq_or_hash(
    map_type: type, op: Callable[[Any, Any], Any], hook_on: str
) -> None:
    """Reads from a key's __eq__/__hash__ neither deadlock nor break atomicity: allowed."""
    m, stored, probe = reentry_map(map_type, hook_on)
    seen: dict[str, Any] = {}

    def hook() -> None:
        seen["get"] = m.get("x")
        seen["in"] = "y" in m
        seen["load"] = m.load("nothing")
        seen["len"] = len(m)
        seen["keys"] = sorted(k for k in m if isinstance(k, str))
        seen["snapshot"] = m.snapshot()["y"]

    (stored if hook_on == "eq" else probe).arm(hook)
    op(m, probe)
    assert seen == {
        "get": 1,
        "in": True,
        "load": (None, False),
        "len": 3,
        "keys": ["x", "y"],
        "snapshot": 2,
    }
    expected = {"x": 1, "y": 2, stored: "s"}
    name = next(n for n, f in ALL_OPS if f is op)
    if name in WRITES:
        expected[probe] = "new"
    assert contents(m) == expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize("hook_on", ["eq", "hash"])
@pytest.mark.parametrize("op", [op for _, op in ALL_OPS], ids=[n for n, _ in ALL_OPS])
@deadlock_guarded
def test_key_writing_the_map_from_eq_or_hash(
    map_type: type, op: Callable[[Any, Any], Any], hook_on: str
) -> None:
    """A write from a key's __eq__/__hash__ either raises RecursiveUpdateError in that
    (inner) call, leaving the map unchanged by it, or succeeds; never another error, a
    deadlock or a lost or partial update."""
    m, stored, probe = reentry_map(map_type, hook_on)
    outcome: dict[str, Any] = {}

    def hook() -> None:
        try:
            m["w"] = "inner"
        except RecursiveUpdateError as exc:
            outcome["raised"] = exc
        except BaseException as exc:  # pragma: no cover - reported below
            outcome["wrong"] = exc
        else:
            outcome["ok"] = True

    (stored if hook_on == "eq" else probe).arm(hook)
    op(m, probe)
    assert "wrong" not in outcome, f"expected RecursiveUpdateError, got {outcome['wrong']!r}"
    assert len(outcome) == 1, "the hook did not run"
    expected: dict[Any, Any] = {"x": 1, "y": 2, stored: "s"}
    if "ok" in outcome:
        expected["w"] = "inner"
    name = next(n for n, f in ALL_OPS if f is op)
    if name in WRITES:
        expected[probe] = "new"
    assert contents(m) == expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize("op", [op for _, op in ALL_OPS], ids=[n for n, _ in ALL_OPS])
@deadlock_guarded
def test_key_eq_write_error_propagates_and_leaves_map_unchanged(
    map_type: type, op: Callable[[Any, Any], Any]
) -> None:
    """When the inner write raises RecursiveUpdateError and __eq__ lets it propagate, the
    outer call raises it too and the map is exactly as before the outer call."""
    m, stored, probe = reentry_map(map_type)
    ran: list[bool] = []

    def hook() -> None:
        ran.append(True)
        m["w"] = "inner"

    stored.arm(hook)
    try:
        op(m, probe)
    except RecursiveUpdateError:
        assert contents(m) == {"x": 1, "y": 2, stored: "s"}
    else:  # the implementation allows this write: both writes landed
        assert m["w"] == "inner"
    assert ran == [True]


# ---------------------------------------------------------- compute callbacks


def compute_family(m: Any, method: str, key: Any, cb: Callable[..., Any]) -> Any:
    """Call ``method`` with a callback that delegates to ``cb()`` for the new value."""
    if method == "compute":
        return m.compute(key, lambda k, old: cb())
    if method == "compute_if_absent":
        return m.compute_if_absent(key, lambda k: cb())
    if method == "compute_if_present":
        return m.compute_if_present(key, lambda k, old: cb())
    if method == "merge":
        return m.merge(key, "unused", lambda old, v: cb())
    raise AssertionError(method)


COMPUTE_METHODS = ["compute", "compute_if_absent", "compute_if_present", "merge"]


def key_for(method: str) -> str:
    """A key for which ``method`` calls its callback in ``compute_map()``."""
    return "absent" if method == "compute_if_absent" else "k"


def compute_map(map_type: type) -> Any:
    return map_type({"k": 10, "other": 20})


@pytest.mark.parametrize("method", COMPUTE_METHODS)
@pytest.mark.parametrize("exc_type", [Boom, KeyError, KeyboardInterrupt, SystemExit])
def test_compute_callback_raising_leaves_map_unchanged_and_usable(
    map_type: type, method: str, exc_type: type[BaseException]
) -> None:
    m = compute_map(map_type)
    error = exc_type("from callback")

    def cb() -> Any:
        raise error

    with pytest.raises(exc_type) as info:
        compute_family(m, method, key_for(method), cb)
    assert info.value is error
    assert contents(m) == {"k": 10, "other": 20}
    # the map's lock was released: another thread can write
    run_in_thread(lambda: m.store("after", 1))
    assert m["after"] == 1


# Writes that change the map, attempted from inside a compute callback.
INNER_WRITES: list[tuple[str, Callable[[Any], Any]]] = [
    ("setitem-same-key", lambda m: m.__setitem__("k", 99)),
    ("setitem-other-key", lambda m: m.__setitem__("new", 99)),
    ("store", lambda m: m.store("new", 99)),
    ("delitem", lambda m: m.__delitem__("other")),
    ("pop", lambda m: m.pop("other")),
    ("delete", lambda m: m.delete("other")),
    ("load_and_delete", lambda m: m.load_and_delete("other")),
    ("popitem", lambda m: m.popitem()),
    ("clear", lambda m: m.clear()),
    ("update", lambda m: m.update({"new": 99})),
    ("setdefault-absent", lambda m: m.setdefault("new", 99)),
    ("load_or_store-absent", lambda m: m.load_or_store("new", 99)),
    ("swap", lambda m: m.swap("other", 99)),
    ("compare_and_swap", lambda m: m.compare_and_swap("other", 20, 99)),
    ("compare_and_delete", lambda m: m.compare_and_delete("other", 20)),
    ("compute", lambda m: m.compute("new", lambda k, old: 99)),
    ("compute-same-key", lambda m: m.compute("k", lambda k, old: 99)),
    ("compute_if_absent", lambda m: m.compute_if_absent("new", lambda k: 99)),
    ("compute_if_present", lambda m: m.compute_if_present("other", lambda k, old: 99)),
    ("merge", lambda m: m.merge("other", 1, operator.add)),
    ("delete_if", lambda m: m.delete_if(lambda k, v: k == "other")),
    ("transaction", lambda m: m.transaction(lambda view: view.__setitem__("new", 99))),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", COMPUTE_METHODS)
@pytest.mark.parametrize("write", [w for _, w in INNER_WRITES], ids=[n for n, _ in INNER_WRITES])
@deadlock_guarded
def test_compute_callback_writing_raises_recursive_update_error(
    map_type: type, method: str, write: Callable[[Any], Any]
) -> None:
    m = compute_map(map_type)
    before = contents(m)
    caught: list[BaseException] = []

    def cb() -> Any:
        try:
            write(m)
        except RecursiveUpdateError as exc:
            caught.append(exc)
        return "result"

    assert compute_family(m, method, key_for(method), cb) == "result"
    assert len(caught) == 1, "the write from inside the callback did not raise"
    assert isinstance(caught[0], RuntimeError)
    assert contents(m) == {**before, key_for(method): "result"}  # the inner write left no trace


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", COMPUTE_METHODS)
@pytest.mark.parametrize("write", [w for _, w in INNER_WRITES], ids=[n for n, _ in INNER_WRITES])
@deadlock_guarded
def test_compute_callback_write_error_propagates_map_unchanged(
    map_type: type, method: str, write: Callable[[Any], Any]
) -> None:
    m = compute_map(map_type)
    before = contents(m)
    with pytest.raises(RecursiveUpdateError):
        compute_family(m, method, key_for(method), lambda: write(m))
    assert contents(m) == before
    run_in_thread(lambda: m.store("after", 1))  # nothing stays locked
    assert m["after"] == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", COMPUTE_METHODS)
@deadlock_guarded
def test_compute_callback_may_read_the_map(map_type: type, method: str) -> None:
    m = compute_map(map_type)
    key = key_for(method)
    seen: dict[str, Any] = {}

    def cb() -> Any:
        seen["same-key"] = m.get(key, "absent-marker")
        seen["other"] = m["other"]
        seen["in"] = "other" in m
        seen["load"] = m.load("other")
        seen["len"] = len(m)
        seen["iter"] = sorted(m)
        seen["items"] = sorted(m.items())
        seen["values"] = sorted(m.values())
        seen["snapshot"] = dict(m.snapshot())
        seen["copy"] = contents(m.copy())
        seen["eq"] = m == {"k": 10, "other": 20}
        seen["repr"] = repr(m)
        visited: list[Any] = []
        m.range(lambda k, v: visited.append(k))
        seen["range"] = sorted(visited)
        return "result"

    assert compute_family(m, method, key, cb) == "result"
    assert seen["same-key"] == (10 if key == "k" else "absent-marker")  # the old state
    assert seen["other"] == 20
    assert seen["in"] is True
    assert seen["load"] == (20, True)
    assert seen["len"] == 2
    assert seen["iter"] == ["k", "other"]
    assert seen["items"] == [("k", 10), ("other", 20)]
    assert seen["values"] == [10, 20]
    assert seen["snapshot"] == {"k": 10, "other": 20}
    assert seen["copy"] == {"k": 10, "other": 20}
    assert seen["eq"] is True
    assert seen["repr"].startswith(type(m).__name__ + "(")
    assert seen["range"] == ["k", "other"]
    assert contents(m) == {"k": 10, "other": 20, key: "result"}


@pytest.mark.timeout(60)
@deadlock_guarded
def test_compute_reading_own_key_returns_old_value(map_type: type) -> None:
    m = map_type({"k": 1})
    seen = []
    m.compute("k", lambda k, old: seen.append((old, m["k"], m.get("k"))) or old + 1)
    assert seen == [(1, 1, 1)]
    assert m["k"] == 2


@pytest.mark.timeout(60)
def test_blocked_compute_serializes_same_key_and_releases(map_type: type) -> None:
    """A compute callback that blocks holds back the other computes on its key (the
    read-modify-write is atomic), and everything proceeds once it returns."""
    m = map_type({"k": 0})
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []

    def slow(k: Any, old: Any) -> Any:
        entered.set()
        assert release.wait(WAIT)
        order.append("slow")
        return old + 1

    def fast() -> Any:
        result = m.compute("k", lambda k, old: order.append("fast") or old + 10)
        return result

    slow_thread = threading.Thread(target=lambda: m.compute("k", slow), daemon=True)
    slow_thread.start()
    assert entered.wait(WAIT)
    fast_thread = threading.Thread(target=fast, daemon=True)
    fast_thread.start()
    fast_thread.join(0.2)  # give it a chance to (wrongly) run its callback meanwhile
    release.set()
    slow_thread.join(WAIT)
    fast_thread.join(WAIT)
    assert not slow_thread.is_alive() and not fast_thread.is_alive()
    assert order == ["slow", "fast"]
    assert m["k"] == 11
    run_in_thread(lambda: m.store("x", 1))


# ------------------------------------------- no lock held while user code runs


def _other_thread_writes(m: Any) -> None:
    """Writes of every kind, run from another thread while user code is suspended."""
    m["w1"] = 1
    m.store("w2", 2)
    m.compute("w3", lambda k, old: 3)
    m.merge("w1", 1, operator.add)
    del m["w2"]
    m.transaction(lambda view: view.__setitem__("w4", 4))
    m.delete_if(lambda k, v: k == "w3")
    _ = len(m), m.snapshot(), list(m)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["iter", "keys", "values", "items"])
def test_suspended_iterator_does_not_block_writers(map_type: type, kind: str) -> None:
    m = map_type({i: i for i in range(10)})
    it = iter({"iter": m, "keys": m.keys(), "values": m.values(), "items": m.items()}[kind])
    first = next(it)
    run_in_thread(lambda: _other_thread_writes(m))
    rest = [first, *it]  # and the iterator still works afterwards
    if kind != "values":
        keys = [entry[0] for entry in rest] if kind == "items" else rest
        assert len(keys) == len(set(keys))
        assert set(range(10)) <= set(keys)  # present throughout: each yielded once
    assert contents(m) == {**{i: i for i in range(10)}, "w1": 2, "w4": 4}


@pytest.mark.timeout(90)
def test_blocked_range_callback_does_not_block_writers(map_type: type) -> None:
    m = map_type({i: i for i in range(5)})
    calls = []

    def fn(k: Any, v: Any) -> None:
        if not calls:
            run_in_thread(lambda: _other_thread_writes(m))
        calls.append(k)

    m.range(fn)
    assert set(range(5)) <= set(calls)
    assert contents(m) == {**{i: i for i in range(5)}, "w1": 2, "w4": 4}


@pytest.mark.timeout(90)
def test_blocked_delete_if_predicate_does_not_block_writers(map_type: type) -> None:
    m = map_type({i: i for i in range(5)})
    calls = []

    def pred(k: Any, v: Any) -> bool:
        if not calls:
            run_in_thread(lambda: _other_thread_writes(m))
        calls.append(k)
        return k == 0

    m.delete_if(pred)
    assert contents(m) == {**{i: i for i in range(1, 5)}, "w1": 2, "w4": 4}


# -------------------------------------------------------------- transactions


TXN_CALLS: list[tuple[str, Callable[[Any], Any]]] = [
    ("get", lambda m: m.get("a")),
    ("getitem", lambda m: m["a"]),
    ("contains", lambda m: "a" in m),
    ("len", lambda m: len(m)),
    ("iter", lambda m: list(m)),
    ("items", lambda m: list(m.items())),
    ("values", lambda m: list(m.values())),
    ("load", lambda m: m.load("a")),
    ("snapshot", lambda m: m.snapshot()),
    ("copy", lambda m: m.copy()),
    ("range", lambda m: m.range(lambda k, v: None)),
    ("setitem", lambda m: m.__setitem__("a", 5)),
    ("store", lambda m: m.store("new", 5)),
    ("delitem", lambda m: m.__delitem__("a")),
    ("pop", lambda m: m.pop("a")),
    ("update", lambda m: m.update(new=5)),
    ("clear", lambda m: m.clear()),
    ("setdefault", lambda m: m.setdefault("new", 5)),
    ("load_or_store", lambda m: m.load_or_store("new", 5)),
    ("swap", lambda m: m.swap("a", 5)),
    ("compare_and_swap", lambda m: m.compare_and_swap("a", 1, 5)),
    ("compute", lambda m: m.compute("a", lambda k, old: 5)),
    ("merge", lambda m: m.merge("a", 1, operator.add)),
    ("delete_if", lambda m: m.delete_if(lambda k, v: True)),
    ("transaction", lambda m: m.transaction(lambda view: view.__setitem__("new", 5))),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("call", [c for _, c in TXN_CALLS], ids=[n for n, _ in TXN_CALLS])
@deadlock_guarded
def test_transaction_fn_calling_map_methods_raises(
    map_type: type, call: Callable[[Any], Any]
) -> None:
    m = map_type({"a": 1, "b": 2})
    caught: list[BaseException] = []

    def fn(view: Any) -> str:
        view["c"] = 3
        try:
            call(m)
        except RecursiveUpdateError as exc:
            caught.append(exc)
        return "done"

    assert m.transaction(fn) == "done"
    assert len(caught) == 1, "calling the map's own method inside transaction() did not raise"
    assert contents(m) == {"a": 1, "b": 2, "c": 3}  # the inner call left no trace

    def fn_propagating(view: Any) -> None:
        view["d"] = 4
        call(m)

    with pytest.raises(RecursiveUpdateError):
        m.transaction(fn_propagating)
    assert contents(m) == {"a": 1, "b": 2, "c": 3}
    run_in_thread(lambda: m.store("after", 1))


@pytest.mark.timeout(60)
@deadlock_guarded
def test_transaction_fn_may_use_another_map(map_type: type) -> None:
    m, other = map_type({"a": 1}), map_type({"b": 2})

    def fn(view: Any) -> None:
        view["a"] = other["b"]
        other["c"] = 3
        other.transaction(lambda v: v.__setitem__("d", 4))

    m.transaction(fn)
    assert contents(m) == {"a": 2}
    assert contents(other) == {"b": 2, "c": 3, "d": 4}


@pytest.mark.timeout(60)
def test_transaction_base_exception_releases_lock(map_type: type) -> None:
    m = map_type({"a": 1})

    def fn(view: Any) -> None:
        view["a"] = 2
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.transaction(fn)
    assert run_in_thread(lambda: (m.store("b", 2), contents(m))[1]) == {"a": 1, "b": 2}


# ------------------------------------------- writing while iterating is allowed


RANGE_WRITES: list[tuple[str, Callable[[Any, Any, Any], Any]]] = [
    ("store-new", lambda m, k, v: m.store(("new", k), ("n", v))),
    ("overwrite-current", lambda m, k, v: m.__setitem__(k, ("over", v))),
    ("delete-current", lambda m, k, v: m.__delitem__(k)),
    ("pop-current", lambda m, k, v: m.pop(k)),
    ("compute-current", lambda m, k, v: m.compute(k, lambda key, old: ("c", old))),
    ("merge-new", lambda m, k, v: m.merge("counter", ("c",), operator.add)),
    ("delete_if-current", lambda m, k, v: m.delete_if(lambda key, value: key == k)),
    (
        "transaction",
        lambda m, k, v: m.transaction(lambda view: view.__setitem__(("t", k), ("t", v))),
    ),
    ("clear", lambda m, k, v: m.clear()),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("write", [w for _, w in RANGE_WRITES], ids=[n for n, _ in RANGE_WRITES])
@pytest.mark.parametrize("how", ["range", "iter", "keys", "items", "values"])
@deadlock_guarded
def test_writing_while_iterating_is_allowed(
    map_type: type, write: Callable[[Any, Any, Any], Any], how: str
) -> None:
    """``range`` callbacks and loop bodies may write to the map they iterate. Each write
    below touches only the entry just yielded or new keys (``clear`` aside), so every other
    original entry is present until it is yielded: it must be yielded exactly once."""
    original = {i: i for i in range(40)}
    m = map_type(original)
    yielded: list[Any] = []  # original keys (values equal keys) as they are yielded

    def visit(k: Any) -> None:
        if k in original:
            yielded.append(k)
            if k in m:
                write(m, k, m.get(k))

    if how == "range":
        m.range(lambda k, v: visit(k))
    elif how == "values":
        for v in m.values():
            visit(v)
    else:
        source = {"iter": m, "keys": m.keys(), "items": m.items()}[how]
        for entry in source:
            visit(entry[0] if how == "items" else entry)
    assert len(yielded) == len(set(yielded)), "an entry was yielded twice"
    if write is RANGE_WRITES[-1][1]:  # clear: the rest were removed during the iteration
        assert yielded
    else:
        assert sorted(yielded) == sorted(original)
    assert len(m) == len(list(m))


@pytest.mark.timeout(60)
@deadlock_guarded
def test_loop_body_writes_keep_untouched_keys(map_type: type) -> None:
    """Keys present for the whole iteration are yielded exactly once; keys the loop body
    inserts or removes at most once; nothing raises."""
    stable = set(range(50))
    volatile = set(range(50, 100))
    m = map_type({k: k for k in stable | volatile})
    yielded: list[Any] = []
    for k in m:
        yielded.append(k)
        m[k + 1000] = k  # insert
        victim = 50 + (k * 7) % 50
        m.pop(victim, None)  # remove a volatile key, maybe not yet yielded
        if k in stable:
            m[k] = -k  # overwrite a stable key: still present throughout
    assert len(yielded) == len(set(yielded))
    assert stable <= set(yielded)
    assert set(yielded) <= stable | volatile | {k + 1000 for k in stable | volatile}


# --------------------------------------------------------- unhashable keys


@pytest.mark.parametrize("op", KEY_OP_FNS, ids=KEY_OP_IDS)
def test_unhashable_key_raises_type_error(map_type: type, op: Callable[[Any, Any], Any]) -> None:
    m = map_type({"a": 1})
    with pytest.raises(TypeError):
        op(m, [1, 2])
    with pytest.raises(TypeError):
        op(m, {"dict": "key"})
    assert contents(m) == {"a": 1}


def test_unhashable_key_construction_and_fromkeys(map_type: type) -> None:
    with pytest.raises(TypeError):
        map_type([([1], 2)])
    with pytest.raises(TypeError):
        map_type.fromkeys([[1]])
    m = map_type({"a": 1})
    with pytest.raises(TypeError):
        m.update([("b", 2), ([1], 2)])
    assert m["a"] == 1
    assert len(m) in (1, 2)  # atomic per key, not as a whole: "b" may have landed


# ------------------------------------------------------------------ None values


def test_none_values_are_ordinary(map_type: type) -> None:
    m = map_type({None: None, "n": None})
    assert m[None] is None
    assert m.get("n", "default") is None
    assert m.load("n") == (None, True)
    assert m.load_or_store("n", 1) == (None, True)
    assert m.setdefault("n", 1) is None
    assert m.swap("n", None) == (None, True)
    assert m.compare_and_swap("n", None, None) is True
    assert m.compute_if_absent("n", lambda k: pytest.fail("present")) is None
    olds: list[Any] = []
    m.compute("n", lambda k, old: olds.append(old) or None)
    m.merge("n", 0, lambda old, v: olds.append(old) or None)
    m.compute_if_present("n", lambda k, old: olds.append(old) or None)
    assert olds == [None, None, None]
    assert None in m.values()
    assert ("n", None) in m.items()
    assert m.delete_if(lambda k, v: v is None) == 2
    assert len(m) == 0
    m["n"] = None
    assert m.pop("n", "default") is None
    m["n"] = None
    assert m.popitem() == ("n", None)
    m["n"] = None
    assert m.load_and_delete("n") == (None, True)
    assert m.load_and_delete("n") == (None, False)


# ------------------------------------------------------------ pickle and copy


_PICKLE_SUBCLASSES: dict[type, type] = {}


def picklable_subclass(map_type: type) -> type:
    """A subclass of ``map_type`` importable as ``test_robustness.<name>`` (for pickle)."""
    if map_type not in _PICKLE_SUBCLASSES:
        name = f"Pickled{map_type.__name__}"
        sub = type(name, (map_type,), {"__module__": __name__, "__qualname__": name})
        globals()[name] = sub
        _PICKLE_SUBCLASSES[map_type] = sub
    return _PICKLE_SUBCLASSES[map_type]


PROTOCOLS = list(range(pickle.HIGHEST_PROTOCOL + 1))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickle_round_trip(map_type: type, protocol: int) -> None:
    shared = [1, 2]
    m = map_type({1: "a", "b": None, None: (1, 2), "l1": shared, "l2": shared, MISSING: "s"})
    back = pickle.loads(pickle.dumps(m, protocol))
    assert type(back) is map_type
    assert contents(back) == contents(m)
    assert back["l1"] is back["l2"]  # shared references survive, as with dict
    assert back[MISSING] == "s"  # the sentinel, a key, keeps its identity
    back["new"] = 1  # independent of the original
    assert "new" not in m
    empty = pickle.loads(pickle.dumps(map_type(), protocol))
    assert type(empty) is map_type and len(empty) == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickle_subclass_with_attributes(map_type: type, protocol: int) -> None:
    sub = picklable_subclass(map_type)
    m = sub({1: 2})
    m.label = "hello"
    m.counter = [3]
    back = pickle.loads(pickle.dumps(m, protocol))
    assert type(back) is sub
    assert contents(back) == {1: 2}
    assert back.label == "hello"
    assert back.counter == [3]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickle_nested_maps(map_type: type, protocol: int) -> None:
    inner = map_type({"x": 1})
    m = map_type({"inner": inner, "again": inner, "frozen": FrozenMap({1: 2})})
    back = pickle.loads(pickle.dumps(m, protocol))
    assert type(back["inner"]) is map_type
    assert back["inner"] is back["again"]
    assert contents(back["inner"]) == {"x": 1}
    assert type(back["frozen"]) is FrozenMap


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickle_map_containing_itself(map_type: type, protocol: int) -> None:
    """dict pickles a dict that contains itself; so must every map ("maps pickle under
    every protocol"; where the spec is silent, behave like dict)."""
    m = map_type({"a": 1})
    m["self"] = m
    back = pickle.loads(pickle.dumps(m, protocol))
    assert type(back) is map_type
    assert back["self"] is back
    assert back["a"] == 1


def test_copy_copy(map_type: type) -> None:
    value = [1]
    m = map_type({1: value, 2: None})
    c = copy.copy(m)
    assert type(c) is map_type
    assert c is not m
    assert contents(c) == {1: [1], 2: None}
    assert c[1] is value  # shallow
    c[3] = 3
    assert 3 not in m


def test_copy_deepcopy(map_type: type) -> None:
    shared = [1]
    m = map_type({1: shared, 2: shared, "t": (shared,), DELETE: "s"})
    d = copy.deepcopy(m)
    assert type(d) is map_type
    assert contents(d) == contents(m)
    assert d[1] is not shared
    assert d[1] is d[2]  # the memo keeps shared references shared
    assert d["t"][0] is d[1]
    assert d[DELETE] == "s"  # the sentinel, a key, keeps its identity
    d[1].append(2)
    assert shared == [1]


def test_copy_deepcopy_map_containing_itself(map_type: type) -> None:
    m = map_type({"a": [1]})
    m["self"] = m
    d = copy.deepcopy(m)
    assert type(d) is map_type
    assert d is not m
    assert d["self"] is d
    assert d["a"] == [1] and d["a"] is not m["a"]


def test_copy_and_deepcopy_of_subclass(map_type: type) -> None:
    class Sub(map_type):  # type: ignore[misc,valid-type]
        pass

    s = Sub({1: [2]})
    assert type(copy.copy(s)) is Sub
    assert type(copy.deepcopy(s)) is Sub
    assert type(s.copy()) is Sub


def test_copy_and_deepcopy_keep_subclass_attributes(map_type: type) -> None:
    """Spec-silent, dict parity: copy.copy/deepcopy of a dict subclass keep its instance
    attributes."""

    class Sub(map_type):  # type: ignore[misc,valid-type]
        pass

    s = Sub({1: 2})
    s.label = "hello"
    assert copy.copy(s).label == "hello"
    assert copy.deepcopy(s).label == "hello"


# ------------------------------------------------------------------- sentinels


@pytest.mark.parametrize("sentinel", [MISSING, DELETE], ids=["MISSING", "DELETE"])
def test_sentinel_identity_and_repr(sentinel: Any) -> None:
    name = "MISSING" if sentinel is MISSING else "DELETE"
    assert name in repr(sentinel)
    assert getattr(safemap, name) is sentinel
    assert copy.copy(sentinel) is sentinel
    assert copy.deepcopy(sentinel) is sentinel
    assert copy.deepcopy([sentinel])[0] is sentinel
    for protocol in PROTOCOLS:
        assert pickle.loads(pickle.dumps(sentinel, protocol)) is sentinel
    assert MISSING is not DELETE
    assert MISSING != DELETE
    assert sentinel is not None
    assert hash(sentinel) == hash(sentinel)


# ------------------------------------------------------------------- identity


class Obj:
    """A weak-referenceable, hashable object with identity equality."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Obj({self.name})"


def test_reads_return_the_stored_object(map_type: type) -> None:
    key, value = Obj("k"), Obj("v")
    m = map_type()
    m[key] = value
    assert m[key] is value
    assert m.get(key) is value
    assert m.load(key)[0] is value
    assert m.load_or_store(key, Obj("other"))[0] is value
    assert m.setdefault(key, Obj("other")) is value
    assert m.compute_if_absent(key, lambda k: Obj("other")) is value
    assert next(iter(m)) is key
    assert next(iter(m.keys())) is key
    assert next(iter(m.values())) is value
    k2, v2 = next(iter(m.items()))
    assert k2 is key and v2 is value
    seen: list[Any] = []
    m.range(lambda k, v: seen.append((k, v)))
    assert seen[0][0] is key and seen[0][1] is value
    assert m.snapshot()[key] is value
    assert next(iter(m.snapshot())) is key
    assert m.copy()[key] is value
    olds: list[Any] = []
    m.compute(key, lambda k, old: olds.append((k, old)) or old)
    assert olds[0][0] is key and olds[0][1] is value
    m.merge(key, None, lambda old, v: olds.append(old) or old)
    assert olds[1] is value
    m.transaction(lambda view: olds.append(view[key]))
    assert olds[2] is value
    new = Obj("new")
    assert m.swap(key, new)[0] is value
    assert m.pop(key) is new
    m[key] = value
    assert m.load_and_delete(key)[0] is value
    m[key] = value
    popped = m.popitem()
    assert popped[0] is key and popped[1] is value


REMOVALS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("delitem", lambda m, k: m.__delitem__(k)),
    ("pop", lambda m, k: m.pop(k)),
    ("popitem", lambda m, k: m.popitem()),
    ("load_and_delete", lambda m, k: m.load_and_delete(k)),
    ("delete", lambda m, k: m.delete(k)),
    ("compare_and_delete", lambda m, k: m.compare_and_delete(k, m[k])),
    ("compute-delete", lambda m, k: m.compute(k, lambda key, old: DELETE)),
    ("compute_if_present-delete", lambda m, k: m.compute_if_present(k, lambda key, o: DELETE)),
    ("merge-delete", lambda m, k: m.merge(k, 0, lambda old, v: DELETE)),
    ("delete_if", lambda m, k: m.delete_if(lambda key, v: key is k)),
    ("clear", lambda m, k: m.clear()),
    ("transaction-del", lambda m, k: m.transaction(lambda view: view.__delitem__(k))),
    ("transaction-clear", lambda m, k: m.transaction(lambda view: view.clear())),
]
OVERWRITES: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("setitem", lambda m, k: m.__setitem__(k, "new")),
    ("store", lambda m, k: m.store(k, "new")),
    ("swap", lambda m, k: m.swap(k, "new")),
    ("compare_and_swap", lambda m, k: m.compare_and_swap(k, m[k], "new")),
    ("compute", lambda m, k: m.compute(k, lambda key, old: "new")),
    ("compute_if_present", lambda m, k: m.compute_if_present(k, lambda key, old: "new")),
    ("merge", lambda m, k: m.merge(k, "new", lambda old, v: v)),
    ("update", lambda m, k: m.update([(k, "new")])),
    ("transaction-set", lambda m, k: m.transaction(lambda view: view.__setitem__(k, "new"))),
]


def assert_released(ref: weakref.ref[Any], what: str) -> None:
    gc.collect()
    assert ref() is None, f"the map still references the {what} after the call returned"


@pytest.mark.parametrize("remove", [r for _, r in REMOVALS], ids=[n for n, _ in REMOVALS])
def test_removed_key_and_value_are_released(
    map_type: type, remove: Callable[[Any, Any], Any]
) -> None:
    m = map_type()
    key, value = Obj("k"), Obj("v")
    m[key] = value
    key_ref, value_ref = weakref.ref(key), weakref.ref(value)
    remove(m, key)
    del key, value
    assert len(m) == 0
    assert_released(value_ref, "removed value")
    assert_released(key_ref, "removed key")


@pytest.mark.parametrize("overwrite", [o for _, o in OVERWRITES], ids=[n for n, _ in OVERWRITES])
def test_overwritten_value_is_released(
    map_type: type, overwrite: Callable[[Any, Any], Any]
) -> None:
    m = map_type()
    value = Obj("v")
    m["k"] = value
    value_ref = weakref.ref(value)
    overwrite(m, "k")
    del value
    assert m["k"] == "new"
    assert_released(value_ref, "overwritten value")


def test_aborted_transaction_releases_its_writes(map_type: type) -> None:
    m = map_type({"k": 1})
    written = Obj("w")
    written_ref = weakref.ref(written)

    def fn(view: Any) -> None:
        view["k"] = written
        view["n"] = written
        raise Boom

    with pytest.raises(Boom):
        m.transaction(fn)
    written = None  # drop the only reference (fn's closure cell included)
    assert contents(m) == {"k": 1}
    assert_released(written_ref, "value written by an aborted transaction")


def test_rejected_values_are_not_kept(map_type: type) -> None:
    """Values offered but not stored (a losing load_or_store, a failed compare_and_swap,
    a compute that raised) are not retained either."""
    m = map_type({"k": 1})
    offered = Obj("offered")
    ref = weakref.ref(offered)
    m.load_or_store("k", offered)
    m.compare_and_swap("k", 2, offered)
    m.compute_if_absent("k", lambda k: offered)

    def raising(k: Any, old: Any) -> Any:
        raise Boom

    with pytest.raises(Boom):
        m.compute("k", raising)
    offered = None  # drop the only reference (the closure cell included)
    assert contents(m) == {"k": 1}
    assert_released(ref, "rejected value")
