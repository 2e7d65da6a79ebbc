"""RedisMap behaviour beyond the shared protocol suite: naming and attaching, codecs and
canonical keys, server-side atomic operations, optimistic compute and transactions."""

from __future__ import annotations

import operator
import threading
import time
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from safemap import DELETE, MISSING, MapClosedError, RecursiveUpdateError
from safemap.redis import (
    JsonCodec,
    MsgpackCodec,
    RedisConflictError,
    RedisDecodeError,
    RedisMap,
)

pytestmark = pytest.mark.timeout(60)


def test_name_attaches_to_the_same_map(url: str) -> None:
    a: RedisMap[str, int] = RedisMap({"x": 1}, url=url)
    b: RedisMap[str, int] = RedisMap(url=url, name=a.name)
    assert b["x"] == 1
    b["y"] = 2
    assert dict(a.snapshot()) == {"x": 1, "y": 2}
    assert RedisMap(url=url).name != RedisMap(url=url).name  # name=None: fresh and unique


def test_url_defaults_to_the_environment(redis_server: Any, raw: Any) -> None:
    m: RedisMap[str, int] = RedisMap(a=1)  # SAFEMAP_REDIS_URL points at the test server
    assert raw.hget(m.name, b'"a"') == b"1"


def test_stored_bytes_are_canonical_json(rmap: RedisMap[Any, Any], raw: Any) -> None:
    rmap[("k", 1)] = {"b": [1, 2.5], "a": None}
    assert raw.hgetall(rmap.name) == {b'["k",1]': b'{"a":null,"b":[1,2.5]}'}
    assert list(rmap) == [("k", 1)]  # array keys come back as tuples


def test_equal_keys_are_one_field(rmap: RedisMap[Any, Any]) -> None:
    rmap[1] = "int"
    rmap[1.0] = "float"
    rmap[True] = "bool"
    rmap[(1, 2.0)] = "tuple"
    assert len(rmap) == 2
    assert rmap[1] == "bool" and rmap[(True, 2)] == "tuple"


@pytest.mark.parametrize("key", [object(), b"bytes", frozenset({1}), float("nan"), (1, [2])])
def test_unrepresentable_key_raises_type_error_at_the_call(
    rmap: RedisMap[Any, Any], key: Any
) -> None:
    with pytest.raises(TypeError):
        rmap[key] = 1
    assert len(rmap) == 0


@pytest.mark.parametrize("value", [(1, 2), {1: "a"}, {1, 2}, object(), float("inf")])
def test_value_that_would_not_round_trip_raises_type_error(
    rmap: RedisMap[Any, Any], value: Any
) -> None:
    for call in (
        lambda: rmap.__setitem__("k", value),
        lambda: rmap.load_or_store("k", value),
        lambda: rmap.compute("k", lambda _k, _o: value),
        lambda: rmap.transaction(lambda view: view.__setitem__("k", value)),
    ):
        with pytest.raises(TypeError):
            call()
    assert len(rmap) == 0


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(value=json_values)
@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()], ids=["json", "msgpack"])
def test_codecs_round_trip_exactly_and_canonically(codec: Any, value: Any) -> None:
    data = codec.encode_value(value)
    back = codec.decode_value(data)
    assert back == value and type(back) is type(value)
    assert codec.encode_value(back) == data  # canonical: equal values, equal bytes


def test_msgpack_refuses_integers_beyond_64_bits_at_the_call() -> None:
    with pytest.raises(TypeError):
        MsgpackCodec().encode_value(2**64)
    assert JsonCodec().decode_value(JsonCodec().encode_value(2**64)) == 2**64


def test_compare_and_swap_compares_canonical_encodings(rmap: RedisMap[Any, Any]) -> None:
    rmap["k"] = {"a": 1, "b": 2}
    assert rmap.compare_and_swap("k", {"b": 2, "a": 1}, "new")  # key order does not matter
    assert not rmap.compare_and_swap("k", "old", "newer")
    assert rmap["k"] == "new"
    assert not rmap.compare_and_swap("absent", None, 1)
    assert "absent" not in rmap


def test_numeric_merge_uses_the_server_and_falls_back(rmap: RedisMap[Any, Any]) -> None:
    assert rmap.merge("n", 5, operator.add) == 5
    assert rmap.merge("n", -2, operator.add) == 3
    rmap["f"] = 1.5
    assert rmap.merge("f", 1, operator.add) == 2.5  # not an int: the optimistic path
    rmap["big"] = 2**63 - 1
    assert rmap.merge("big", 1, operator.add) == 2**63  # overflow: the optimistic path
    rmap["s"] = "a"
    with pytest.raises(TypeError):
        rmap.merge("s", 1, operator.add)  # str + int: fn's own error, map unchanged
    assert rmap["s"] == "a"


def test_compute_family_results(rmap: RedisMap[Any, Any]) -> None:
    assert rmap.compute("a", lambda _k, old: 1 if old is MISSING else old + 1) == 1
    assert rmap.compute("a", lambda _k, old: old + 1) == 2
    assert rmap.compute("a", lambda _k, _old: DELETE) is None
    assert rmap.compute_if_absent("b", lambda k: [k]) == ["b"]
    assert rmap.compute_if_absent("b", lambda _k: pytest.fail("factory ran")) == ["b"]
    assert rmap.compute_if_absent("c", lambda _k: DELETE) is None
    assert rmap.compute_if_present("b", lambda _k, old: [*old, 1]) == ["b", 1]
    assert dict(rmap.snapshot()) == {"b": ["b", 1]}


def test_writes_from_callbacks_are_refused(rmap: RedisMap[Any, Any]) -> None:
    rmap["a"] = 1
    with pytest.raises(RecursiveUpdateError):
        rmap.compute("a", lambda _k, _o: rmap.__setitem__("b", 1))
    assert rmap.compute("a", lambda _k, old: old + len(rmap)) == 2  # reads are allowed
    with pytest.raises(RecursiveUpdateError):
        rmap.transaction(lambda _view: rmap["a"])
    assert dict(rmap.snapshot()) == {"a": 2}


def test_transaction_moves_value_between_keys_atomically(rmap: RedisMap[Any, Any]) -> None:
    rmap.update(a=100, b=0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def transfer(view: Any) -> None:
        view["a"] -= 1
        view["b"] += 1

    def mover() -> None:
        try:
            for _ in range(150):
                rmap.transaction(transfer)
        except BaseException as exc:
            errors.append(exc)

    def auditor() -> None:
        try:
            while not stop.is_set():
                snap = rmap.snapshot()
                assert snap["a"] + snap["b"] == 100
                assert rmap.transaction(lambda v: v["a"] + v["b"]) == 100
        except BaseException as exc:
            errors.append(exc)

    movers = [threading.Thread(target=mover) for _ in range(2)]
    audit = threading.Thread(target=auditor)
    for t in [*movers, audit]:
        t.start()
    for t in movers:
        t.join(50)
    stop.set()
    audit.join(10)
    assert not errors, errors[0]
    assert dict(rmap.snapshot()) == {"a": -200, "b": 300}


def test_transaction_that_iterates_sees_and_checks_the_whole_map(
    rmap: RedisMap[Any, Any],
) -> None:
    rmap.update({i: i for i in range(10)})
    assert rmap.transaction(lambda v: (len(v), sum(v.values()))) == (10, 45)

    def reset(view: Any) -> None:
        view.clear()
        view["only"] = 1

    rmap.transaction(reset)
    assert dict(rmap.snapshot()) == {"only": 1}


def test_conflict_budget_exhausted_names_the_key(url: str) -> None:
    m: RedisMap[str, int] = RedisMap({"hot": 0}, url=url, retry_budget=3)
    other: RedisMap[str, int] = RedisMap(url=url, name=m.name)

    def meddle(_key: str, old: int) -> int:
        other["hot"] = old + 1000  # another client changes the key on every attempt
        return old + 1

    with pytest.raises(RedisConflictError) as info:
        m.compute("hot", meddle)
    assert info.value.keys == ("hot",)
    assert "'hot'" in str(info.value) and m.name in str(info.value)
    assert m["hot"] == 3000  # only the meddler's writes landed


def test_iteration_yields_each_key_once_across_many_scan_batches(
    rmap: RedisMap[Any, Any],
) -> None:
    rmap.update({f"k{i}": i for i in range(3000)})
    keys = list(rmap)
    assert len(keys) == len(set(keys)) == 3000


def test_undecodable_value_names_map_and_field(rmap: RedisMap[Any, Any], raw: Any) -> None:
    raw.hset(rmap.name, b'"bad"', b"\xff not json")
    with pytest.raises(RedisDecodeError) as info:
        rmap["bad"]
    assert info.value.map_name == rmap.name and info.value.field == b'"bad"'
    assert rmap.name in str(info.value)
    with pytest.raises(RedisDecodeError):
        rmap.snapshot()


def test_copy_is_a_new_map_with_the_same_contents(rmap: RedisMap[Any, Any]) -> None:
    rmap.update(a=[1])
    c = rmap.copy()
    assert type(c) is RedisMap and c.name != rmap.name and c == {"a": [1]}
    c["b"] = 2
    assert "b" not in rmap


def test_pickle_makes_a_new_map_with_the_same_contents(rmap: RedisMap[Any, Any]) -> None:
    import pickle

    rmap.update(a=[1, {"b": None}], c=2.5)
    back = pickle.loads(pickle.dumps(rmap))
    assert type(back) is RedisMap and back.name != rmap.name
    assert back == {"a": [1, {"b": None}], "c": 2.5}


def test_client_lends_its_settings_but_not_its_decoding(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    m: RedisMap[str, Any] = RedisMap({"a": [1]}, client=client)
    assert m["a"] == [1] and m.copy() == {"a": [1]}
    assert client.hget(m.name, '"a"') == "[1]"  # the lender's own decoding is unchanged


def _open_connections(server: Any, *, settle: float = 10.0) -> int:
    """Clients connected to ``server`` besides the one asking, once the count stops
    falling (a near cache's listener disconnects from its own thread) or after ``settle``
    seconds."""
    admin = redis.Redis.from_url(server.url)
    try:
        deadline = time.monotonic() + settle
        while True:
            count = len(admin.execute_command("CLIENT", "LIST").splitlines()) - 1
            if count == 0 or time.monotonic() > deadline:
                return count
            time.sleep(0.01)
    finally:
        admin.close()


@pytest.mark.parametrize("near_cache", [False, True])
def test_a_closed_handle_refuses_every_call_and_never_reconnects(
    private_server: Any, near_cache: bool
) -> None:
    url = private_server.url
    m: RedisMap[str, int] = RedisMap({"a": 1}, url=url, near_cache=near_cache)
    assert m["a"] == 1
    m.close()
    calls = [
        lambda: m["a"],
        lambda: m.get("a"),
        lambda: m.__setitem__("b", 2),
        lambda: len(m),
        lambda: list(m),
        lambda: m.merge("a", 1, operator.add),
        lambda: m.snapshot(),
    ]
    for call in calls:
        with pytest.raises(MapClosedError):
            call()
    m.close()  # closing twice is allowed
    assert _open_connections(private_server) == 0  # nothing reconnected or left open
    other: RedisMap[str, int] = RedisMap(url=url, name=m.name)
    assert other["a"] == 1  # the data stays on the server
    other.close()


def test_close_while_calls_are_in_flight_leaves_no_connection_open(private_server: Any) -> None:
    """Threads keep calling while the handle closes: each call either completes or raises
    MapClosedError, and once they stop no connection of the handle is left open."""
    m: RedisMap[str, int] = RedisMap(url=private_server.url)
    started = threading.Barrier(5)
    outcomes: list[str] = []

    def worker() -> None:
        started.wait()
        while True:
            try:
                m.merge("n", 1, operator.add)
            except MapClosedError:
                outcomes.append("closed")
                return

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()
    probe: RedisMap[str, int] = RedisMap(url=private_server.url, name=m.name)
    while probe.get("n", 0) < 20:
        pass
    probe.close()
    m.close()
    for t in threads:
        t.join(30)
    assert outcomes == ["closed"] * 4
    assert _open_connections(private_server) == 0
