"""Round trips per operation, counted on the wire: a round trip starts whenever the
calling thread sends on a connection whose last action was reading a reply (or that is
new), so commands sent back to back before their replies are read count once.

Also what makes the counts low without giving anything up: a compute or transaction that
starts from values this handle learnt earlier checks them at commit (a stale one costs one
more trip and a rerun on the current values), never shows a callback a mix of two states,
and never lets a callback's exception escape when it was raised on a stale value."""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.connection import AbstractConnection

from safemap import DELETE, MISSING
from safemap.redis import RedisMap

pytestmark = pytest.mark.timeout(60)


class Trips:
    """Counts the calling thread's round trips while installed."""

    def __init__(self) -> None:
        self.count = 0
        self.thread = threading.get_ident()
        self.sending: weakref.WeakSet[Any] = weakref.WeakSet()  # sent, replies not read yet

    def measure(self, op: Callable[[], object]) -> int:
        before = self.count
        op()
        return self.count - before


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[Trips]:
    counter = Trips()
    send, read = AbstractConnection.send_packed_command, AbstractConnection.read_response

    def counting_send(self: Any, command: Any, check_health: bool = True) -> None:
        if threading.get_ident() == counter.thread and self not in counter.sending:
            counter.count += 1
            counter.sending.add(self)
        send(self, command, check_health)

    def counting_read(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.sending.discard(self)
        return read(self, *args, **kwargs)

    # Every connection class redis-py has (plain, TLS, unix socket) inherits these.
    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting_send)
    monkeypatch.setattr(AbstractConnection, "read_response", counting_read)
    yield counter


def _move(view: Any) -> None:
    view["a"] = view.get("a", 0) - 1
    view["b"] = view.get("b", 0) + 1


def test_single_key_operations_take_one_round_trip(url: str, trips: Trips) -> None:
    m: RedisMap[str, Any] = RedisMap(url=url)
    m.clear()  # warm up clear's script
    m.update(k=1, n=0)
    m.server_features()  # asked once per handle, on the first load_and_delete
    ops: dict[str, Callable[[], object]] = {
        "get (present)": lambda: m.get("k"),
        "get (absent)": lambda: m.get("nope"),
        "m[k]": lambda: m["k"],
        "in": lambda: "k" in m,
        "load": lambda: m.load("k"),
        "m[k] = v": lambda: m.__setitem__("x", 1),
        "del m[k]": lambda: m.__delitem__("x"),
        "delete": lambda: m.delete("x"),
        "pop (absent)": lambda: m.pop("x", None),
        "setdefault": lambda: m.setdefault("y", 1),
        "load_or_store": lambda: m.load_or_store("y", 2),
        "load_and_delete": lambda: m.load_and_delete("y"),
        "swap": lambda: m.swap("k", 1),
        "compare_and_swap": lambda: m.compare_and_swap("k", 1, 1),
        "compare_and_delete": lambda: m.compare_and_delete("k", 2),
        "merge (add)": lambda: m.merge("n", 1, operator.add),
        "len": lambda: len(m),
        "snapshot": m.snapshot,
        "compute_if_absent (present)": lambda: m.compute_if_absent("k", lambda _k: 0),
    }
    for op in ops.values():
        op()  # warm up: connection made, scripts loaded
    counts = {name: trips.measure(op) for name, op in ops.items()}
    assert counts == dict.fromkeys(ops, 1)
    assert trips.measure(m.clear) == 1


def test_update_stores_a_batch_of_keys_per_round_trip(url: str, trips: Trips, raw: Any) -> None:
    """update() sends one HSET per 512 items (was one trip per item): 1,000 items take two
    trips; a later item of the same key wins; the counts say what was inserted and updated."""
    m: RedisMap[str, int] = RedisMap({"k0": -1}, url=url)
    before = m.stats()
    items = [(f"k{i}", i) for i in range(1000)] + [("k1", 111)]
    assert trips.measure(lambda: m.update(items)) == 2
    assert trips.measure(lambda: m.update(a=1, b=2)) == 1
    assert trips.measure(lambda: m.update({})) == 0
    assert len(m) == 1002 and m["k0"] == 0 and m["k1"] == 111 and m["k999"] == 999
    assert raw.hlen(m.name) == 1002
    delta = m.stats().minus(before)
    assert (delta.inserts, delta.updates) == (1001, 2)


def test_update_with_an_unencodable_item_stores_nothing(url: str) -> None:
    m: RedisMap[Any, int] = RedisMap(url=url)
    with pytest.raises(TypeError):
        m.update([("a", 1), (object(), 2)])
    assert len(m) == 0


def test_a_script_the_server_lost_is_loaded_and_run_in_one_more_trip(
    url: str, trips: Trips, raw: Any
) -> None:
    m: RedisMap[str, int] = RedisMap({"k": 1}, url=url)
    assert m.compare_and_swap("k", 1, 2)
    raw.script_flush()  # as after a restart
    assert trips.measure(lambda: m.compare_and_swap("k", 2, 3)) == 2  # SCRIPT LOAD + EVALSHA
    assert trips.measure(lambda: m.compare_and_swap("k", 3, 4)) == 1
    assert m["k"] == 4


def test_compute_takes_one_round_trip_when_the_value_is_known(url: str, trips: Trips) -> None:
    m: RedisMap[str, int] = RedisMap({"n": 0}, url=url)
    fresh: RedisMap[str, int] = RedisMap(url=url, name=m.name)
    m.compute("n", lambda _k, old: old + 1)  # warm up
    assert trips.measure(lambda: m.compute("n", lambda _k, old: old + 1)) == 1
    assert trips.measure(lambda: m.compute_if_present("n", lambda _k, old: old + 1)) == 1
    assert trips.measure(lambda: m.merge("n", 5, lambda old, v: old * v)) == 1
    assert trips.measure(lambda: m.compute("n", lambda _k, old: old)) == 1  # validated
    # Nothing to change on a value read in this call: no commit.
    assert trips.measure(lambda: m.compute("gone", lambda _k, _old: DELETE)) == 1
    # A handle that has not seen the key reads it first: read, then commit.
    fresh.get("other")  # (its connection is made: the handshake is one more trip)
    assert trips.measure(lambda: fresh.compute("n", lambda _k, old: old + 1)) == 2
    assert m["n"] == fresh["n"] == (0 + 1 + 1 + 1) * 5 + 1


def test_compute_on_a_stale_value_retries_once_with_the_value_the_commit_returned(
    url: str, trips: Trips
) -> None:
    m: RedisMap[str, int] = RedisMap({"n": 0}, url=url)
    other: RedisMap[str, int] = RedisMap(url=url, name=m.name)
    m.compute("n", lambda _k, old: old + 1)  # m knows n == 1
    other["n"] = 10  # ... which is no longer true
    seen: list[int] = []

    def add_one(_key: str, old: Any) -> int:
        seen.append(old)
        return int(old) + 1

    assert trips.measure(lambda: m.compute("n", add_one)) == 2  # refused commit, then commit
    assert seen == [1, 10] and m["n"] == 11


def test_compute_if_absent_takes_two_round_trips_when_it_runs_the_factory(
    url: str, trips: Trips
) -> None:
    m: RedisMap[str, Any] = RedisMap(url=url)
    m.compute_if_absent("warm", lambda _k: 0)
    assert trips.measure(lambda: m.compute_if_absent("k", lambda _k: [1])) == 2
    assert trips.measure(lambda: m.compute_if_absent("k", lambda _k: [2])) == 1
    assert trips.measure(lambda: m.compute_if_absent("d", lambda _k: DELETE)) == 2
    assert dict(m.snapshot()) == {"warm": 0, "k": [1]}


def test_transaction_round_trips(url: str, trips: Trips) -> None:
    m: RedisMap[str, int] = RedisMap({"a": 0, "b": 0}, url=url)
    fresh: RedisMap[str, int] = RedisMap(url=url, name=m.name)
    m.transaction(_move)  # learns a and b at the commit's instant
    assert trips.measure(lambda: m.transaction(_move)) == 1
    assert trips.measure(lambda: m.transaction(lambda v: v["a"] + v["b"])) == 1  # validated
    assert trips.measure(lambda: m.transaction(lambda v: None)) == 0
    # Unknown values: one read per key (each re-checking the earlier ones), then the commit.
    fresh.get("other")
    fresh.transaction(lambda v: v.get("x"))  # warm up the read script (maybe flushed earlier)
    assert trips.measure(lambda: fresh.transaction(_move)) == 3
    assert trips.measure(lambda: fresh.transaction(_move)) == 1
    # Another handle's commit made m's knowledge stale: refused, then committed.
    assert trips.measure(lambda: m.transaction(_move)) == 2
    assert dict(m.snapshot()) == {"a": -5, "b": 5}


def test_transaction_never_sees_values_learnt_at_two_instants(url: str) -> None:
    m: RedisMap[str, int] = RedisMap({"a": 0, "b": 0}, url=url)
    mover: RedisMap[str, int] = RedisMap(url=url, name=m.name)

    def move(view: Any) -> None:
        view["a"] -= 1
        view["b"] += 1

    observed: list[tuple[int, int]] = []

    def audit(view: Any) -> int:
        a, b = view["a"], view["b"]
        observed.append((a, b))
        return int(a + b)

    for _ in range(20):
        m.compute("a", lambda _k, old: old)  # m learns a now ...
        mover.transaction(move)  # ... a and b change together ...
        m.compute("b", lambda _k, old: old)  # ... and m learns b at another instant
        assert m.transaction(audit) == 0
    assert observed and all(a + b == 0 for a, b in observed), observed


def test_an_exception_raised_on_a_stale_value_is_not_the_outcome(url: str) -> None:
    m: RedisMap[str, int] = RedisMap({"d": 0}, url=url)
    other: RedisMap[str, int] = RedisMap(url=url, name=m.name)
    m.compute("d", lambda _k, old: old)  # m learns d == 0
    other["d"] = 4  # d was never 0 during the calls below
    assert m.compute("d", lambda _k, old: 12 // old) == 3
    m.transaction(lambda v: None)
    other["d"] = 0
    m.compute("d", lambda _k, old: old)  # learns d == 0 again
    other["d"] = 2
    assert m.transaction(lambda v: 12 // v["d"]) == 6
    # An exception raised on the current value is the call's outcome.
    other["d"] = 0
    with pytest.raises(ZeroDivisionError):
        m.compute("d", lambda _k, old: 12 // old)
    with pytest.raises(ZeroDivisionError):
        m.transaction(lambda v: 12 // v["d"])


def test_speculation_keeps_counts_exact_across_handles_and_threads(url: str) -> None:
    m: RedisMap[str, int] = RedisMap({"n": 0, "a": 0, "b": 0}, url=url)
    handles = [RedisMap(url=url, name=m.name) for _ in range(3)]
    errors: list[BaseException] = []

    def work(h: RedisMap[str, int]) -> None:
        try:
            for i in range(60):
                if i % 2:
                    h.compute("n", lambda _k, old: 1 if old is MISSING else old + 1)
                else:
                    h.transaction(_move)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(h,)) for h in handles for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors[0]
    assert dict(m.snapshot()) == {"n": 180, "a": -180, "b": 180}


def test_what_a_handle_knows_is_bounded(url: str, trips: Trips) -> None:
    import safemap.redis.map as redis_map

    m: RedisMap[str, Any] = RedisMap(url=url)
    m.compute("warm", lambda _k, _old: 0)  # (loads the commit script)
    for i in range(redis_map._SEEN_MAX + 10):
        m[f"k{i}"] = i
    assert 0 < len(m._seen) <= redis_map._SEEN_MAX
    big = "x" * (redis_map._SEEN_VALUE_MAX + 1)
    m["big"] = big
    assert m._codec.encode_key("big") not in m._seen  # too large to remember ...
    assert trips.measure(lambda: m.compute("big", lambda _k, old: old + "y")) == 2  # ... read
    assert m["big"] == big + "y"
