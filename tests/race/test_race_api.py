"""The public API of safemap.race and the access/conflict rules of the spec (section 2).

Threads are ordered only with Thread.start/join; ``concurrently(child, parent)`` runs the
child first in real time with no happens-before edge to the parent's access."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from support.race import concurrently, in_thread, run_thread

from safemap import race

pytestmark = pytest.mark.usefixtures("detector")  # tests/race/conftest.py


def kinds() -> list[str]:
    return sorted(r.kind for r in race.reports())


def racing(child: Callable[[], Any], parent: Callable[[], Any]) -> list[str]:
    race.clear()
    concurrently(child, parent)
    return kinds()


# ----------------------------------------------------------------------------- the API


def test_enable_disable_enabled() -> None:
    race.disable()
    assert not race.enabled()
    race.enable()
    race.enable()  # idempotent
    assert race.enabled()


def test_watch_returns_watched_dict_with_contents() -> None:
    src = {"a": 1}
    d = race.watch(src, name="cache")
    assert isinstance(d, dict) and d == {"a": 1} and d is not src
    assert race.is_watched(d) and not race.is_watched(src)
    assert race.watch(d) is d
    assert race.watch() == {} and race.is_watched(race.watch())


def test_watch_rejects_non_mapping() -> None:
    with pytest.raises(TypeError):
        race.watch([1, 2])  # type: ignore[arg-type]


def test_reports_is_a_copy_and_clear_forgets() -> None:
    d = race.watch({}, name="m")
    concurrently(lambda: d.__setitem__("k", 1), lambda: d.__setitem__("k", 2))
    got = race.reports()
    assert len(got) == 1
    got.clear()
    assert len(race.reports()) == 1
    race.clear()
    assert race.reports() == []


def test_detect_session_collects_and_restores_disabled() -> None:
    race.disable()
    with race.detect() as session:
        assert race.enabled()
        d = race.watch({}, name="m")
        concurrently(lambda: d.get("k"), lambda: d.__setitem__("k", 1))
    assert not race.enabled()
    assert [r.kind for r in session.reports] == ["read/write"]
    assert session.reports[0].map_name == "m"


def test_detect_sessions_have_their_own_dedup_scope() -> None:
    def scenario() -> list[str]:
        with race.detect() as session:
            d = race.watch({}, name="m")
            concurrently(lambda: d.get("k"), lambda: d.__setitem__("k", 1))
        return [r.kind for r in session.reports]

    assert scenario() == ["read/write"]
    assert scenario() == ["read/write"]  # same sites again: reported again in a new session


def test_disabled_watched_map_records_nothing() -> None:
    race.disable()
    d = race.watch({}, name="m")
    concurrently(lambda: d.__setitem__("k", 1), lambda: d.__setitem__("k", 2))
    assert race.reports() == []
    assert d == {"k": 2}


def test_options_and_configure() -> None:
    old = race.options()
    try:
        opts = race.configure(strip_path_prefix="/x/", history_size="2")
        assert opts.history_size == 2 and race.options().strip_path_prefix == "/x/"
        with pytest.raises(race.OptionsError, match="unknown race detector option 'nope'"):
            race.configure(nope=1)
        with pytest.raises(race.OptionsError, match="history_size"):
            race.enable(history_size=9)
        assert race.options().history_size == 2
    finally:
        race.configure(**{f: getattr(old, f) for f in old.__dataclass_fields__})


# ------------------------------------------------------------------- no false positives


def test_same_thread_use_never_reports() -> None:
    d = race.watch({}, name="m")
    for i in range(200):
        d[i] = i
        d.get(i + 1)
        _ = i in d
        d.setdefault(i, 0)
        len(d)
        list(d.items())
        if i % 3 == 0:
            del d[i]
    d.clear()
    assert race.reports() == []


def test_start_and_join_order_accesses() -> None:
    d = race.watch({"k": 0}, name="m")
    d["k"] = 1
    len(d)
    run_thread(lambda: d.__setitem__("k", 2))  # after start: ordered after the main's past
    d["k"] = 3  # after join: ordered after the thread
    run_thread(lambda: list(d))
    d["new"] = 1
    run_thread(lambda: d.pop("new"))
    assert d.get("new") is None
    assert race.reports() == []


def test_two_threads_ordered_through_main() -> None:
    d = race.watch({}, name="m")
    run_thread(lambda: d.__setitem__("k", 1), "w1")
    run_thread(lambda: d.__setitem__("k", 2), "w2")
    assert race.reports() == []


def test_read_read_and_concurrent_readers_do_not_race() -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: d["k"], lambda: d.get("k")) == []
    assert racing(lambda: len(d), lambda: list(d)) == []


# --------------------------------------------------------------------- conflict kinds


def test_read_write() -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: d["k"], lambda: d.__setitem__("k", 2)) == ["read/write"]
    r = race.reports()[0]
    assert r.key == "k" and r.current.operation == "d[k] = v" and r.previous.operation == "d[k]"
    assert r.current.kind == "write" and r.previous.kind == "read"
    assert r.current.thread_name == "MainThread" and r.previous.thread_name == "worker-1"


def test_write_read() -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: d.__setitem__("k", 2), lambda: "k" in d) == ["read/write"]


def test_write_write() -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: d.__setitem__("k", 2), lambda: d.update(k=3)) == ["write/write"]


def test_del_is_a_write() -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: d.get("k"), lambda: d.__delitem__("k")) == ["read/write"]


def test_different_keys_never_conflict() -> None:
    d = race.watch({"a": 1, "b": 2}, name="m")
    assert racing(lambda: d.__setitem__("a", 0), lambda: d.__setitem__("b", 0)) == []
    assert racing(lambda: d.pop("a"), lambda: d.get("b")) == []


def test_absent_key_is_still_an_access() -> None:
    d = race.watch({}, name="m")
    assert racing(
        lambda: d.get("ghost"),
        lambda: d.__delitem__("ghost") if "ghost" in d else d.pop("ghost", None),
    ) == ["atomic/read"]
    e = race.watch({}, name="e")
    assert racing(lambda: "x" in e, lambda: e.update({"x": 1})) == ["read/write"]


def test_atomic_atomic_does_not_conflict() -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: d.setdefault("k", 5), lambda: d.pop("k")) == []


def test_atomic_read() -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: d.setdefault("k", 5), lambda: d.get("k")) == ["atomic/read"]
    assert race.reports()[0].previous.kind == "atomic"


def test_atomic_write() -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: d.__setitem__("k", 2), lambda: d.pop("k")) == ["atomic/write"]


def test_popitem_is_atomic_and_changes_shape() -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: d.popitem(), lambda: d.get("k")) == ["atomic/read"]
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: d.popitem(), lambda: len(d)) == ["observation/write"]


def test_shape_observation_vs_change() -> None:
    d = race.watch({}, name="m")
    assert racing(lambda: len(d), lambda: d.__setitem__("new", 1)) == ["observation/write"]
    r = race.reports()[0]
    assert r.key is None and r.current.kind == "change" and r.previous.kind == "observation"


def test_change_change_does_not_conflict() -> None:
    d = race.watch({}, name="m")
    assert racing(lambda: d.__setitem__("a", 1), lambda: d.__setitem__("b", 1)) == []
    assert racing(lambda: d.pop("a"), lambda: d.setdefault("c", 1)) == []


def test_overwrite_is_not_a_shape_change() -> None:
    d = race.watch({"k": 1, "j": 0}, name="m")
    assert racing(lambda: len(d), lambda: d.__setitem__("k", 2)) == []


def test_empty_map_observation_is_an_access() -> None:
    d = race.watch({}, name="m")
    assert racing(lambda: list(d), lambda: d.__setitem__("x", 1)) == ["iteration/write"]
    e = race.watch({}, name="e")
    assert racing(lambda: e == {}, lambda: e.setdefault("x", 1)) == ["observation/write"]


@pytest.mark.parametrize(
    "observe",
    [
        len,
        repr,
        lambda d: d.copy(),
        lambda d: d == {},
        copy.copy,
        copy.deepcopy,
        pickle.dumps,
        bool,
    ],
    ids=["len", "repr", "copy", "eq", "copy.copy", "deepcopy", "pickle", "bool"],
)
def test_observations(observe: Callable[[Any], Any]) -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: observe(d), lambda: d.__setitem__("new", 1)) == ["observation/write"]


@pytest.mark.parametrize(
    "observe",
    [repr, lambda d: d.copy(), lambda d: d == {}, copy.copy, pickle.dumps],
    ids=["repr", "copy", "eq", "copy.copy", "pickle"],
)
def test_value_reading_observations_read_every_key(observe: Callable[[Any], Any]) -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: observe(d), lambda: d.__setitem__("k", 2)) == ["read/write"]


def test_len_does_not_read_values() -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: len(d), lambda: d.__setitem__("k", 2)) == []


def test_clear_writes_every_key_and_changes_shape() -> None:
    d = race.watch({"a": 1, "b": 2}, name="m")
    assert racing(lambda: d.get("b"), lambda: d.clear()) == ["read/write"]
    d = race.watch({"a": 1}, name="m")
    assert racing(lambda: len(d), lambda: d.clear()) == ["observation/write"]


@pytest.mark.parametrize(
    "iterate",
    [
        list,
        lambda d: list(d.keys()),
        lambda d: list(d.values()),
        lambda d: list(d.items()),
        lambda d: list(reversed(d)),
    ],
    ids=["iter", "keys", "values", "items", "reversed"],
)
def test_iteration_span_vs_shape_change_and_reads(iterate: Callable[[Any], Any]) -> None:
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: iterate(d), lambda: d.__setitem__("new", 1)) == ["iteration/write"]
    d = race.watch({"k": 1}, name="m")
    assert racing(lambda: iterate(d), lambda: d.__setitem__("k", 2)) == ["read/write"]


def test_change_after_iteration_start_is_caught_at_next() -> None:
    # The change is happened-after the first next() (the thread starts after it) but not
    # happened-before the following next(): a race, though the iteration was "ordered"
    # with the change at its start.
    d = race.watch({"a": 1, "b": 2}, name="m")
    it = iter(d)
    next(it)
    done: list[bool] = []
    t = in_thread(lambda: (d.__setitem__("c", 3), done.append(True)))
    while not done:
        pass
    with pytest.raises(RuntimeError):  # dict itself notices the size change here
        next(it)
    t.join()
    assert kinds() == ["iteration/write"]


def test_change_during_iteration_caught_when_iterator_dropped() -> None:
    # The changer starts before the loop: its change is unordered with the step, and its
    # own check finds the step's observation, although the loop never steps again.
    d = race.watch({"a": 1, "b": 2}, name="m")
    go: list[bool] = []
    done: list[bool] = []

    def body() -> None:
        while not go:
            pass
        d.pop("b")
        done.append(True)

    t = in_thread(body)
    it = iter(d.items())
    next(it)
    go.append(True)
    while not done:
        pass
    del it  # the drop itself is no access
    t.join()
    assert "iteration/write" in kinds()


def test_iteration_ended_before_thread_start_is_ordered() -> None:
    d = race.watch({"a": 1}, name="m")
    assert list(d) == ["a"]
    run_thread(lambda: d.__setitem__("b", 1))
    assert race.reports() == []


def test_keys_view_operations() -> None:
    d = race.watch({"a": 1, "b": 2}, name="m")
    assert d.keys() & {"a"} == {"a"}
    keys = d.keys()
    assert "a" in keys and ("a", 1) in d.items() and 2 in d.values()
    assert len(d.values()) == 2 and list(reversed(d.items())) == [("b", 2), ("a", 1)]
    assert dict(d) == {"a": 1, "b": 2} and {**d} == {"a": 1, "b": 2}
    assert d | {"c": 3} == {"a": 1, "b": 2, "c": 3} and not race.is_watched(d | {})
    d |= {"c": 3}
    assert d["c"] == 3 and race.is_watched(d)


def test_reenabling_forgets_the_old_shadow_and_records_again() -> None:
    """An access repeated in the same epoch right after re-enabling is recorded anew (the
    old period's record is gone), so a later unordered write still races with it."""
    import time

    d = race.watch({"k": 0}, name="m")
    go: list[bool] = []

    def writer() -> None:  # forked before the read below: unordered with it
        while not go:
            time.sleep(0.001)  # a polled flag is no synchronization
        d["k"] = 1

    t = in_thread(writer)
    _ = d["k"]  # recorded in this epoch...
    race.disable()
    race.enable()  # ...then forgotten with the whole shadow
    _ = d["k"]  # same epoch: must be recorded again, not matched to the old record
    go.append(True)
    t.join()
    assert kinds() == ["read/write"]


# ------------------------------------------- threads started before the detector was on


def _started_while_off(body: Callable[[], Any], name: str) -> tuple[Any, list[bool]]:
    """A thread started while the detector is off that runs ``body`` once it is on again
    (a polled flag: no edge); returns it and the flag to set."""
    import threading

    go: list[bool] = []

    def run() -> None:
        while not go:
            pass
        body()

    race.disable()
    t = threading.Thread(target=run, name=name)
    t.start()
    race.enable()
    return t, go


def test_join_orders_a_thread_started_before_enable() -> None:
    d = race.watch({}, name="m")
    t, go = _started_while_off(lambda: d.__setitem__("k", 1), "early")
    go.append(True)
    t.join(60)
    assert not t.is_alive()
    d["k"] = 2  # after join(): ordered, although the thread's start was never seen
    assert race.reports() == []


def test_is_alive_false_orders_a_thread_started_before_enable() -> None:
    d = race.watch({}, name="m")
    t, go = _started_while_off(lambda: d.__setitem__("k", 1), "early")
    go.append(True)
    while t.is_alive():
        pass
    assert d.get("k") == 1 and race.reports() == []
    t.join(60)


def test_report_calls_a_joined_early_thread_finished() -> None:
    d = race.watch({}, name="m")
    t, go = _started_while_off(lambda: d.__setitem__("k", 1), "early")
    joined: list[bool] = []

    def late() -> None:  # started before the join: unordered with the early write
        while not joined:
            pass
        d["k"] = 3

    u = in_thread(late, "late")
    go.append(True)
    t.join(60)
    joined.append(True)
    u.join(60)
    [report] = race.reports()
    assert report.kind == "write/write" and report.previous.thread_name == "early"
    assert f"Thread T{report.previous.thread_id} (finished) created at:" in str(report)
