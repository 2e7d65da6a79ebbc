"""``bind(k, v, ttl=)``: no read ever returns an expired entry, on every read path and
every map type, with an injected clock (docs/scoped.md)."""

from __future__ import annotations

import copy
import os
import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.actor import wait_until

from safemap import MISSING, ConcurrentMap, FrozenMap, LockedMap
from safemap.protocol import expiry
from safemap.protocol.variants import plain_class

from .helpers import identity_kept

# Every way to read key "k" of a map holding only "k" (bound) and "other": 1 (not bound):
# each returns what it saw of "k" (None when it saw it absent).
READS: dict[str, Callable[[Any], Any]] = {
    "getitem": lambda m: m["k"] if "k" in m.keys() else None,  # noqa: SIM118  # the view
    "getitem_raises": lambda m: _or_none(lambda: m["k"]),
    "get": lambda m: m.get("k"),
    "contains": lambda m: "v" if "k" in m else None,
    "load": lambda m: m.load("k")[0],
    "len": lambda m: "v" if len(m) == 2 else None,
    "bool_keys": lambda m: "v" if len(m.keys()) == 2 else None,
    "iter": lambda m: "v" if "k" in list(m) else None,
    "keys": lambda m: "v" if "k" in list(m.keys()) else None,
    "values": lambda m: next((v for v in m.values() if v != 1), None),
    "items": lambda m: dict(m.items()).get("k"),
    "items_contains": lambda m: "v" if ("k", "v") in m.items() else None,
    "snapshot": lambda m: m.snapshot().get("k"),
    "copy": lambda m: _copy_get(m, lambda: m.copy()),
    "copy_copy": lambda m: _copy_get(m, lambda: copy.copy(m)),
    "deepcopy": lambda m: _copy_get(m, lambda: copy.deepcopy(m)),
    "or": lambda m: _copy_get(m, lambda: m | {}),
    "ror": lambda m: _copy_get(m, lambda: {} | m),
    "eq": lambda m: None if m == {"other": 1} else "v",
    "repr": lambda m: "v" if "'k'" in repr(m) else None,
    "range": lambda m: _range_get(m),
    "setdefault": lambda m: m.setdefault("k", "fresh"),
    "load_or_store": lambda m: m.load_or_store("k", "fresh")[0],
    "compute": lambda m: m.compute("k", lambda _k, old: "fresh" if old is MISSING else old),
    "compute_if_absent": lambda m: m.compute_if_absent("k", lambda _k: "fresh"),
    "compute_if_present": lambda m: m.compute_if_present("k", lambda _k, old: old),
    "merge": lambda m: m.merge("k", "fresh", lambda old, _new: old),
    "get_or_compute": lambda m: m.get_or_compute("k", lambda _k: "fresh"),
    "swap": lambda m: m.swap("k", "fresh")[0],
    "compare_and_swap": lambda m: "v" if m.compare_and_swap("k", "v", "fresh") else None,
    "compare_and_delete": lambda m: "v" if m.compare_and_delete("k", "v") else None,
    "pop": lambda m: m.pop("k", None),
    "load_and_delete": lambda m: m.load_and_delete("k")[0],
    "delitem": lambda m: _or_none(lambda: m.__delitem__("k")) or None,
    "popitem": lambda m: _popitems(m).get("k"),
    "delete_if": lambda m: "v" if m.delete_if(lambda k, _v: k == "k") else None,
    "transaction": lambda m: m.transaction(lambda view: view.get("k")),
    "transaction_iter": lambda m: m.transaction(lambda view: "v" if "k" in list(view) else None),
}
# The reads above that store "fresh" when they see "k" absent.
STORING = {"setdefault", "load_or_store", "compute", "compute_if_absent", "merge", "get_or_compute"}


def _or_none(fn: Callable[[], Any]) -> Any:
    try:
        result = fn()
    except KeyError:
        return None
    return "v" if result is None else result


def _copy_get(m: Any, make: Callable[[], Any]) -> Any:
    new = make()
    try:
        return new.get("k")
    finally:
        getattr(new, "close", lambda: None)()


def _range_get(m: Any) -> Any:
    seen: dict[Any, Any] = {}
    m.range(lambda k, v: seen.__setitem__(k, v))
    return seen.get("k")


def _popitems(m: Any) -> dict[Any, Any]:
    popped: dict[Any, Any] = {}
    while True:
        try:
            key, value = m.popitem()
        except KeyError:
            return popped
        popped[key] = value


@pytest.mark.parametrize("read", list(READS))
def test_every_read_path_hides_the_entry_from_its_deadline(
    map_type: type[Any], closing: Callable[[Any], Any], clock: expiry.ManualClock, read: str
) -> None:
    if map_type.__name__ == "RedisMap" and read in ("deepcopy",):
        pytest.skip("RedisMap: a deep copy needs the codec to represent the map itself")
    m = closing(map_type(other=1))
    m.bind("k", "v", ttl=10)
    assert READS[read](m) == "v"  # before the deadline: present, on this path
    if read not in STORING | {
        "swap",
        "compare_and_swap",
        "compare_and_delete",
        "pop",
        "load_and_delete",
        "delitem",
        "popitem",
        "delete_if",
    }:
        clock.advance(9.999)
        assert READS[read](m) == "v"
        clock.advance(0.001)  # exactly the deadline: expired
    else:
        m.bind("k", "v", ttl=10)  # the read removed or replaced it: bind it again
        clock.advance(10)
    result = READS[read](m)
    if read in STORING:
        assert result == "fresh" and m.get("k") == "fresh"  # seen absent, stored anew
    elif read == "swap":
        assert result is None and m.get("k") == "fresh"
    else:
        assert result is None
        assert "k" not in m and m.get("other", 1) == 1


def test_expiring_variant_only_after_a_ttl_binding(
    map_type: type[Any], closing: Callable[[Any], Any], clock: expiry.ManualClock
) -> None:
    m = closing(map_type())
    m.bind("a", 1)
    with m.scoped("b", 2):
        pass
    assert type(m) is map_type  # no ttl: nothing changes, reads cost nothing more
    m.bind("c", 3, ttl=5)
    assert type(m) is not map_type and isinstance(m, map_type)
    assert plain_class(type(m)) is map_type and type(m).__name__ == map_type.__name__
    c = closing(m.copy())
    assert type(c) is map_type  # copies are of the plain class, without the binding
    if map_type.__name__ not in ("ActorMap", "AsyncActorMap", "RedisMap"):
        assert type(pickle.loads(pickle.dumps(m))) is map_type


def test_a_newer_value_survives_the_deadline(
    map_type: type[Any], closing: Callable[[Any], Any], clock: expiry.ManualClock
) -> None:
    m = closing(map_type())
    m.bind("k", ["old"], ttl=5)
    m["k"] = ["new"]
    if identity_kept(map_type):
        m.bind("e", ["same"], ttl=5)
        m["e"] = ["same"]  # equal, but a newer object
    clock.advance(5)
    assert m["k"] == ["new"]
    if identity_kept(map_type):
        assert m["e"] == ["same"]
    plain = plain_class(type(m))
    wait_until(lambda: expiry.sweeper_thread() is None, "the sweeper is done")
    assert plain.load(m, "k") == (["new"], True)


def test_rebinding_renews_the_deadline(
    map_type: type[Any], closing: Callable[[Any], Any], clock: expiry.ManualClock
) -> None:
    m = closing(map_type())
    value = ["v"]
    m.bind("k", value, ttl=5)
    clock.advance(4)
    m.bind("k", value, ttl=5)  # the very same object, a new lease
    clock.advance(1)
    assert "k" not in m  # the first lease still ends it: a binding ends on its own terms
    m.bind("j", value, ttl=5)
    clock.advance(4)
    assert m.get("j") == value


def test_a_key_bound_to_many_objects_expires_each_at_its_own_deadlines(
    map_type: type[Any], closing: Callable[[Any], Any], clock: expiry.ManualClock
) -> None:
    """A key bound again and again, to a new object each time: whichever of them it holds
    is hidden at the first deadline among that object's bindings, not another's."""
    m = closing(map_type())
    objs = [[i] for i in range(200)]
    for i, obj in enumerate(objs):
        m.bind("k", obj, ttl=100 + i)  # obj i: deadline 100 + i from now
    m.bind("k", objs[150], ttl=1000)  # bound twice: its first deadline still counts
    clock.advance(200)  # the bindings of objs 0 to 100 are due, none held by "k"
    assert m["k"] == objs[150]
    m["k"] = objs[120]  # stored again: still bound, due 20 from now
    assert m.get("k") == objs[120]
    clock.advance(20)
    assert "k" not in m and m.get("k") is None
    m["k"] = objs[199]
    clock.advance(29)
    assert m.load("k") == (objs[199], True)
    m["k"] = objs[150]
    assert m.snapshot().get("k") == objs[150]
    clock.advance(1)  # objs[150]'s first deadline
    assert m.snapshot().get("k") is None and m.get("k") is None


def test_a_read_of_a_key_bound_to_many_objects_looks_only_at_its_value_s_bindings(
    map_type: type[Any],
    closing: Callable[[Any], Any],
    clock: expiry.ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rebinding a key with a long ttl keeps every earlier object's binding until its
    deadline; reads of the key stay as cheap as with one binding: they never compare the
    value with the other objects' bindings (counted here: not a timing)."""
    if not identity_kept(map_type):
        pytest.skip("RedisMap matches values by equality: one group of bindings per key")
    m = closing(map_type())
    objs = [[i] for i in range(500)]
    for obj in objs:
        m.bind("k", obj, ttl=100)
    m.bind("k", objs[-1], ttl=50)  # the value held: bound twice
    compared: list[object] = []
    same = expiry._MapState.same

    def counting(self: Any, a: object, b: object) -> bool:
        compared.append(a)  # a binding's object (find calls same(bound, read))
        return same(self, a, b)

    monkeypatch.setattr(expiry._MapState, "same", counting)
    assert m.get("k") is objs[-1] and m.load("k") == (objs[-1], True)
    assert m.snapshot()["k"] is objs[-1] and "k" in m and len(m) == 1
    # Only the two bindings of the value read were looked at (the 499 others never are).
    assert compared and all(obj is objs[-1] for obj in compared)
    assert len(compared) <= 2 * 8
    clock.advance(50)
    assert m.get("k") is None and "k" not in m


def test_the_sweeper_reclaims_without_any_read(
    map_type: type[Any], closing: Callable[[Any], Any], clock: expiry.ManualClock
) -> None:
    m = closing(map_type())
    for i in range(20):
        m.bind(i, i, ttl=1 + i % 3)
    plain = plain_class(type(m))
    assert plain.__len__(m) == 20
    clock.advance(2)  # wakes the sweeper
    wait_until(lambda: plain.__len__(m) == 20 - 14, "the sweeper removes the due entries")
    clock.advance(1)
    wait_until(lambda: plain.__len__(m) == 0, "the sweeper removes the rest")
    wait_until(lambda: expiry.sweeper_thread() is None, "the sweeper exits when idle")


def test_a_read_hides_an_entry_whose_removal_is_in_progress(
    clock: expiry.ManualClock,
) -> None:
    """Someone has taken the binding (the sweeper, another reader) but not removed the
    entry yet: a read decides from the key's own deadline, not from that sweep."""
    for m in (ConcurrentMap(), LockedMap()):
        b = m.bind("k", "v", ttl=1)
        clock.advance(1)
        b._claim.pop()  # claimed by "someone else", who has not removed anything yet
        plain = plain_class(type(m))
        assert plain.load(m, "k") == ("v", True)  # still in the map
        assert "k" not in m and m.get("k") is None and len(m) == 0 and list(m) == []
        assert m.snapshot() == {} and m == {} and m.setdefault("k", 2) == 2
        b._claim.append(True)  # "someone else" finishes: the entry is no longer theirs
        assert b.release() is False and m["k"] == 2


def test_reader_threads_never_see_an_expired_entry(
    map_type: type[Any],
    closing: Callable[[Any], Any],
    clock: expiry.ManualClock,
    fast_switch: None,
) -> None:
    """Readers run while the clock passes the deadlines. A read that returned the entry
    started before the deadline; every read that started after it saw it absent."""
    m = closing(map_type())
    keys = [f"k{i}" for i in range(8)]
    stop = threading.Event()
    errors: list[str] = []
    slow = map_type.__name__ in ("ActorMap", "AsyncActorMap", "RedisMap")

    def reader(i: int) -> None:
        key = keys[i % len(keys)]
        read = (
            (lambda: m.get(key)),
            (lambda: m.snapshot().get(key)),
            (lambda: dict(m.items()).get(key)),
            (lambda: m.load_or_store(key, "new")[0]),
        )[i % 4]
        while not stop.is_set():
            before = clock()
            got = read()
            if got == "v" and before >= 1010:
                errors.append(f"{key} read as present at {before}")

    for key in keys:
        m.bind(key, "v", ttl=10)
    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    steps = 20 if slow else 200
    for _ in range(steps):
        clock.advance(12 / steps)  # through the deadlines, while the readers run
    clock.advance(1)  # past every deadline, whatever the rounding of the steps
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert errors == []
    assert all(m.get(key) in (None, "new") for key in keys)


def test_readers_of_a_key_rebound_to_new_objects_never_see_one_past_its_deadline(
    map_type: type[Any],
    closing: Callable[[Any], Any],
    clock: expiry.ManualClock,
    fast_switch: None,
) -> None:
    """The key is bound again and again, each time to a new object, with short and long
    ttls (so it has bindings of many objects at once, some of them due), in bursts between
    which the clock moves on (so the object it holds falls due too), while readers read
    it: no read returns an object whose deadline had passed when the read started."""
    m = closing(map_type())
    stop = threading.Event()
    errors: list[str] = []
    reads = [0] * 4  # per reader
    slow = map_type.__name__ in ("ActorMap", "AsyncActorMap", "RedisMap")

    def reader(i: int) -> None:
        read = (
            (lambda: m.get("k")),
            (lambda: m.load("k")[0]),
            (lambda: m.snapshot().get("k")),
            (lambda: dict(m.items()).get("k")),
        )[i % 4]
        while not stop.is_set():
            before = clock()
            got = read()
            if got is not None and got[1] is not None and before >= got[1]:
                errors.append(f"{got} read at {before}")
            reads[i] += 1

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    n = 0
    for step in range(48 if slow else 160):
        if step % 8 < 2:  # a burst: three new objects; the last one stays
            for _ in range(3):
                n += 1
                value: list[Any] = [n, None]
                b = m.bind("k", value, ttl=(1, 50, 3, 50, 50)[n % 5])
                value[1] = b.deadline  # known once bound (a reader may see it unset: skipped)
        clock.advance(0.25)
        wait_until(_each_grew(reads, 2), "every reader reads between two steps")
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert errors == []


def _each_grew(counts: list[int], by: int) -> Callable[[], bool]:
    """A condition: every one of ``counts`` has grown by ``by`` since this call."""
    target = [c + by for c in counts]
    return lambda: all(c >= t for c, t in zip(counts, target, strict=True))


# ------------------------------------------------------------------ a model (hypothesis)

_steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["bind", "store", "restore", "delete", "advance", "read", "len", "snapshot"]
        ),
        st.integers(0, 3),
        st.integers(1, 4),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_steps, native=st.booleans())
def test_ttl_against_a_model(steps: list[tuple[str, int, int]], native: bool) -> None:
    """Random bind(ttl)/store/delete/advance sequences: every read equals a model that
    drops a bound entry at its deadline unless it was overwritten or deleted first; an
    object bound earlier and stored again before its deadline (``restore``) is dropped at
    that deadline (a binding follows its object)."""
    fake = expiry.ManualClock()
    previous = expiry.set_clock(fake)
    try:
        m: Any = ConcurrentMap() if native else LockedMap()
        model: dict[int, tuple[object, float | None]] = {}
        bound: dict[int, list[tuple[object, float]]] = {}  # key -> (object, deadline)

        def visible() -> dict[int, object]:
            now = fake()
            return {k: v for k, (v, d) in model.items() if d is None or now < d}

        for op, key, n in steps:
            if op == "bind":
                value = [key, n]
                m.bind(key, value, ttl=n)
                model[key] = (value, fake() + n)
                bound.setdefault(key, []).append((value, fake() + n))
            elif op == "restore":
                # An object bound to the key before, whose binding is still pending (a due
                # one may or may not have ended by now: the model could not tell).
                pending = [v for v, d in bound.get(key, []) if d > fake()]
                if pending:
                    value = pending[n % len(pending)]
                    m[key] = value
                    model[key] = (value, min(d for v, d in bound[key] if v is value))
            elif op == "store":
                value = [key, n]
                m[key] = value
                model[key] = (value, None)
            elif op == "delete":
                m.pop(key, None)
                model.pop(key, None)
            elif op == "advance":
                fake.advance(n / 2)
            elif op == "read":
                expected = visible().get(key)
                assert m.get(key) is expected
            elif op == "len":
                assert len(m) == len(visible())
            else:
                assert m.snapshot() == visible()
            model = {k: (v, d) for k, (v, d) in model.items() if k in visible()}
        assert dict(m.items()) == visible() and isinstance(m.snapshot(), FrozenMap)
    finally:
        expiry.set_clock(previous)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads running
def test_the_sweeper_works_in_a_forked_child(clock: expiry.ManualClock) -> None:
    m: ConcurrentMap[str, int] = ConcurrentMap()
    m.bind("parent", 1, ttl=3600)
    assert expiry.sweeper_thread() is not None
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            assert expiry.sweeper_thread() is None  # the parent's thread is not here
            m.bind("child", 2, ttl=1)
            clock.advance(1)
            plain = plain_class(type(m))
            wait_until(lambda: plain.__len__(m) == 1, "the child's sweeper removes it")
            assert "child" not in m and m["parent"] == 1
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_transaction_hides_an_entry_removed_after_its_view_read_it(
    request: pytest.FixtureRequest,
    closing: Callable[[Any], Any],
    clock: expiry.ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A RedisMap transaction does not exclude the handle's single-key writes (it commits
    optimistically). The sweeper's removal of a due entry that its view has read must
    still not land, and drop the binding, before the view has judged the value: here it
    starts right after the view's read, and the view must hide the value all the same."""
    request.getfixturevalue("redis_server")
    from safemap.redis import RedisMap
    from safemap.redis import map as redis_map

    m = closing(RedisMap(other=1))
    b = m.bind("k", "v", ttl=10)
    st = expiry._state(m)
    assert st is not None
    read, waiting = threading.Event(), threading.Event()
    remove, load_all, wait = (
        expiry._MapState.remove,
        redis_map._TransactionReads._load_all,
        RedisMap._wait,
    )

    def removing_after_the_read(self: Any, key: Any, value: Any) -> bool:
        read.wait()  # the sweeper removes the entry only once the view has read it
        return remove(self, key, value)

    def reading_before_the_removal(self: Any) -> dict[Any, Any]:
        data = load_all(self)
        read.set()  # then the removal runs to its end, unless it waits for the transaction
        wait_until(lambda: b not in st.bindings or waiting.is_set(), "the removal ends or waits")
        return data

    def waiting_sweeper(cell: list[float], acquire: Callable[[], object]) -> None:
        if threading.current_thread().name == "safemap-sweeper":
            waiting.set()
        wait(cell, acquire)

    monkeypatch.setattr(expiry._MapState, "remove", removing_after_the_read)
    monkeypatch.setattr(redis_map._TransactionReads, "_load_all", reading_before_the_removal)
    monkeypatch.setattr(RedisMap, "_wait", staticmethod(waiting_sweeper))
    try:
        clock.advance(10)  # due: the sweeper wakes and waits to remove it
        seen = m.transaction(lambda view: (sorted(view), "k" in view, view.get("k")))
        assert seen == (["other"], False, None)
    finally:
        read.set()
    wait_until(lambda: b not in st.bindings, "the sweeper removes it after the transaction")
    assert plain_class(type(m)).load(m, "k") == (None, False) and m.get("other") == 1
