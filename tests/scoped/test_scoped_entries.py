"""``m.scoped(k, v)`` and ``m.bind(k, v)``: stored for a scope, removed exactly once and only
while the key still holds the bound object (docs/scoped.md), on every map type."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.actor import wait_until

from safemap import ConcurrentMap, LockedMap
from safemap.protocol import expiry
from safemap.protocol.variants import plain_class

from .helpers import count_removals, identity_kept


def test_scoped_stores_for_the_block_and_removes_on_exit(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())
    scope = m.scoped("k", [1])
    assert "k" not in m  # nothing happens before the block is entered
    with scope as value:
        assert value == [1] and m["k"] == [1]
    assert "k" not in m and len(m) == 0
    assert type(m) is map_type  # no ttl: the map keeps its class


@pytest.mark.parametrize("how", ["exception", "keyboard_interrupt", "generator_close"])
def test_scoped_removes_exactly_once_however_the_block_ends(
    map_type: type[Any],
    closing: Callable[[Any], Any],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    m = closing(map_type())
    removals = count_removals(monkeypatch)

    if how == "generator_close":

        def worker() -> Iterator[int]:
            with m.scoped("k", "v"):
                yield 1
                yield 2

        gen = worker()
        assert next(gen) == 1 and m["k"] == "v"
        gen.close()
    else:
        error: type[BaseException] = ValueError if how == "exception" else KeyboardInterrupt
        with pytest.raises(error), m.scoped("k", "v"):
            assert m["k"] == "v"
            raise error
    assert "k" not in m
    assert removals == ["k"]  # exactly one removal attempt
    m["k"] = "again"  # nothing left that could remove it later
    assert m["k"] == "again" and removals == ["k"]


def test_a_newer_value_survives_the_scope(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())
    with m.scoped("k", ["old"]):
        m["k"] = ["new"]
    assert m["k"] == ["new"]
    if identity_kept(map_type):  # an equal but newer object survives too
        bound = ["same"]
        with m.scoped("e", bound):
            m["e"] = ["same"]
        assert m["e"] == ["same"]


def test_binding_is_dropped_when_the_key_is_deleted_or_overwritten(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())
    b = m.bind("k", 1)
    assert b.active and m["k"] == 1
    del m["k"]
    m["k"] = 2
    assert b.release() is False and not b.active  # removed nothing
    assert m["k"] == 2
    b2 = m.bind("j", 3)
    assert b2.release() is True and "j" not in m
    assert b2.release() is False  # a binding ends once


def test_scope_is_entered_once(map_type: type[Any], closing: Callable[[Any], Any]) -> None:
    m = closing(map_type())
    scope = m.scoped("k", 1)
    with scope:
        pass
    with pytest.raises(RuntimeError, match="once"), scope:
        pass
    assert "k" not in m


def test_sentinel_value_is_refused_and_leaves_nothing(map_type: type[Any]) -> None:
    from safemap import DELETE

    m = map_type()
    try:
        with pytest.raises(TypeError), m.scoped("k", DELETE):
            pass
        assert "k" not in m
    finally:
        getattr(m, "close", lambda: None)()


def test_failing_removal_on_an_exception_is_reported_and_the_exception_goes_on(
    unraisable: list[BaseException],
) -> None:
    class Failing(LockedMap[Any, Any]):
        __slots__ = ()
        fail = False

        def compute(self, key: Any, fn: Any) -> Any:
            if Failing.fail:
                raise OSError("store unreachable")
            return super().compute(key, fn)

    m = Failing()
    try:
        with pytest.raises(ValueError, match="body"), m.scoped("k", 1):
            Failing.fail = True
            raise ValueError("body")
    finally:
        Failing.fail = False
    assert [type(e) for e in unraisable] == [OSError]
    # Without an exception in the block, the failure is the caller's to see.
    with pytest.raises(OSError), m.scoped("j", 1):
        Failing.fail = True
    Failing.fail = False


def test_scopes_in_many_threads_leave_the_map_empty(
    map_type: type[Any], closing: Callable[[Any], Any], run_threads: Any, fast_switch: None
) -> None:
    m = closing(map_type())
    rounds = 100 if map_type.__name__ not in ("ActorMap", "AsyncActorMap", "RedisMap") else 20
    survivors = [f"survivor{i}" for i in range(8)]

    def work(i: int) -> None:
        for r in range(rounds):
            with m.scoped(f"t{i}", r):
                assert m[f"t{i}"] == r
                with m.scoped("shared", [i, r]):
                    pass
            # A newer value stored inside a scope survives it, in every thread.
            with m.scoped(survivors[i], ["mine", r]):
                m[survivors[i]] = ["newer", r]
            assert m[survivors[i]] == ["newer", r]

    run_threads(work, 8)
    assert m.snapshot() == {name: ["newer", rounds - 1] for name in survivors}


# ------------------------------------------------------- a model of bindings (hypothesis)

_ops = st.lists(
    st.tuples(
        st.sampled_from(["bind", "store", "delete", "release", "store_same"]),
        st.integers(0, 2),  # key
        st.integers(0, 3),  # which binding (release) / value
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops, native=st.booleans())
def test_bindings_against_a_model(ops: list[tuple[str, int, int]], native: bool) -> None:
    """Random bind / overwrite / delete / release sequences: the map equals a model in
    which releasing removes the key only while it holds that binding's very object."""
    m: Any = ConcurrentMap() if native else LockedMap()
    model: dict[int, object] = {}
    bindings: list[tuple[Any, object]] = []
    for op, key, n in ops:
        if op == "bind":
            value = [key, n]  # a new object each time
            bindings.append((m.bind(key, value), value))
            model[key] = value
        elif op == "store":
            value = [key, n]
            m[key] = value
            model[key] = value
        elif op == "store_same" and key in model:
            m[key] = model[key]  # the very same object again: still the bound one
        elif op == "delete":
            m.delete(key)
            model.pop(key, None)
        elif op == "release" and bindings:
            b, value = bindings[n % len(bindings)]
            expected = b.active and model.get(b.key) is value
            assert b.release() is expected
            if expected:
                del model[b.key]
        assert m.snapshot() == model
        assert all(m[k] is v for k, v in model.items())
    assert plain_class(type(m)) is type(m)


def test_sweeper_is_not_started_by_scopes(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())
    # An earlier test's sweeper exits once nothing it watches is pending.
    wait_until(lambda: expiry.sweeper_thread() is None, "the earlier sweeper to exit")
    with m.scoped("k", 1):
        assert expiry.sweeper_thread() is None  # only deadlines and owners need it
    assert "k" not in m


def test_thread_safety_of_release_racing_exit() -> None:
    """Two threads ending one binding at once: exactly one removal attempt."""
    for _ in range(200):
        m: LockedMap[str, int] = LockedMap()
        b = m.bind("k", 1)
        results: list[bool] = []
        barrier = threading.Barrier(2)

        def end(b: Any, barrier: threading.Barrier, results: list[bool]) -> None:
            barrier.wait()
            results.append(b.release())

        threads = [threading.Thread(target=end, args=(b, barrier, results)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(results) == [False, True] and "k" not in m
