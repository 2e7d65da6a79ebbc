"""The linearizability checker on hand-built histories: it accepts exactly what it should."""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safemap import DELETE, MISSING, FrozenMap
from safemap.testing import History, MapModel, Operation, check_linearizable

_ids = itertools.count()


def op(
    thread: int,
    start: int,
    end: int,
    method: str,
    *args: Any,
    result: Any = None,
    error: type[BaseException] | None = None,
) -> Operation:
    return Operation(next(_ids), thread, method, args, result, error, start, end)


def test_sequential_history_is_linearizable() -> None:
    ops = [
        op(0, 0, 1, "store", "k", 1),
        op(0, 2, 3, "load", "k", result=(1, True)),
        op(0, 4, 5, "merge", "k", 1, operator.add, result=2),
        op(0, 6, 7, "__getitem__", "missing", error=KeyError),
        op(0, 8, 9, "pop", "k", result=2),
        op(0, 10, 11, "load", "k", result=(None, False)),
    ]
    result = check_linearizable(ops)
    assert result.ok is True and result.counterexample is None
    assert result.operations == 6


def test_stale_read_after_completed_write_is_caught() -> None:
    ops = [
        op(0, 0, 1, "store", "k", 1),
        op(1, 5, 6, "load", "k", result=(None, False)),  # strictly after the store returned
    ]
    result = check_linearizable(ops)
    assert result.ok is False
    assert result.counterexample is not None
    assert "should return (1, True)" in str(result.counterexample)


@pytest.mark.parametrize("seen", [(None, False), (1, True)])
def test_read_overlapping_a_write_may_see_either(seen: tuple[Any, bool]) -> None:
    ops = [op(0, 0, 10, "store", "k", 1), op(1, 5, 6, "load", "k", result=seen)]
    assert check_linearizable(ops).ok is True


def test_lost_update_between_overlapping_merges_is_caught() -> None:
    # Two atomic increments from 0 can never both return 1, overlapping or not.
    ops = [
        op(0, 0, 10, "merge", "n", 1, operator.add, result=1),
        op(1, 1, 9, "merge", "n", 1, operator.add, result=1),
    ]
    result = check_linearizable(ops)
    assert result.ok is False
    text = str(result.counterexample)
    assert "merge('n', 1, add)" in text and "should return 2" in text


def test_compare_and_swap_that_ignores_old_value_is_caught() -> None:
    ops = [
        op(0, 0, 1, "store", "k", 1),
        op(0, 2, 3, "compare_and_swap", "k", 5, 9, result=True),
    ]
    assert check_linearizable(ops).ok is False


def test_compute_family_and_sentinels_follow_the_model() -> None:
    ops = [
        op(0, 0, 1, "compute", "k", lambda k, old: 1 if old is MISSING else old, result=1),
        op(0, 2, 3, "compute_if_present", "k", lambda k, old: DELETE, result=None),
        op(0, 4, 5, "compute_if_absent", "k", lambda k: [k], result=["k"]),
        op(0, 6, 7, "load_or_store", "k", 5, result=(["k"], True)),
        op(0, 8, 9, "swap", "k", 3, result=(["k"], True)),
        op(0, 10, 11, "compare_and_delete", "k", 3, result=True),
        op(0, 12, 13, "setdefault", "k", result=None),
    ]
    assert check_linearizable(ops).ok is True


def test_partitioned_by_key_when_every_operation_is_single_key() -> None:
    ops = [op(t, t, t + 1, "store", f"k{t}", t) for t in range(5)]
    result = check_linearizable(ops)
    assert result.ok is True and result.partitions == 5


def test_whole_map_operation_joins_all_keys_into_one_partition() -> None:
    ops = [op(0, 0, 1, "store", "a", 1), op(1, 0, 1, "store", "b", 2)]
    ops.append(op(2, 5, 6, "__len__", result=2))
    result = check_linearizable(ops)
    assert result.ok is True and result.partitions == 1
    wrong_len = [*ops[:2], op(2, 5, 6, "__len__", result=1)]
    assert check_linearizable(wrong_len).ok is False


def test_snapshot_must_be_one_instant() -> None:
    # A transaction moves 1 from a to b; a snapshot may see before or after, never a mix.
    def move(view: Any) -> None:
        view["a"] -= 1
        view["b"] += 1

    base = [op(0, 0, 1, "store", "a", 1), op(0, 2, 3, "store", "b", 0)]
    txn = op(1, 10, 20, "transaction", move, result=None)
    good = op(2, 12, 18, "snapshot", result=FrozenMap(a=0, b=1))
    torn = op(2, 12, 18, "snapshot", result=FrozenMap(a=0, b=0))
    assert check_linearizable([*base, txn, good]).ok is True
    assert check_linearizable([*base, txn, torn]).ok is False


def test_transaction_that_raised_changed_nothing() -> None:
    def fail(view: Any) -> None:
        view["a"] = 5
        raise ValueError

    ops = [
        op(0, 0, 1, "transaction", fail, error=ValueError),
        op(0, 2, 3, "load", "a", result=(None, False)),
    ]
    assert check_linearizable(ops).ok is True


def test_popitem_may_return_any_entry_but_a_real_one() -> None:
    base = [op(0, 0, 1, "store", "a", 1), op(0, 2, 3, "store", "b", 2)]
    assert check_linearizable([*base, op(0, 4, 5, "popitem", result=("b", 2))]).ok is True
    assert check_linearizable([*base, op(0, 4, 5, "popitem", result=("b", 1))]).ok is False
    assert check_linearizable([op(0, 0, 1, "popitem", error=KeyError)]).ok is True


class TestIteration:
    """Weak consistency: present-throughout keys exactly once, none twice, no phantom."""

    base = (op(0, 0, 1, "store", "a", 1), op(0, 2, 3, "store", "b", 2))

    def check(self, *ops: Operation) -> bool | None:
        return check_linearizable([*self.base, *ops]).ok

    def test_full_iteration_is_fine(self) -> None:
        assert self.check(op(1, 5, 9, "items", result=[("a", 1), ("b", 2)])) is True

    def test_missing_a_key_present_throughout_is_caught(self) -> None:
        assert self.check(op(1, 5, 9, "keys", result=["a"])) is False

    def test_a_key_twice_is_caught(self) -> None:
        result = check_linearizable([*self.base, op(1, 5, 9, "keys", result=["a", "b", "a"])])
        assert result.ok is False
        assert "yielded key 'a' twice" in str(result.counterexample)

    def test_a_key_removed_during_the_iteration_may_be_missed_or_seen(self) -> None:
        removal = op(2, 6, 7, "delete", "b")
        assert self.check(removal, op(1, 5, 9, "items", result=[("a", 1)])) is True
        assert self.check(removal, op(1, 5, 9, "items", result=[("a", 1), ("b", 2)])) is True

    def test_a_key_inserted_during_the_iteration_may_be_seen(self) -> None:
        insert = op(2, 6, 7, "store", "c", 3)
        seen = op(1, 5, 9, "__iter__", result=["a", "b", "c"])
        assert self.check(insert, seen) is True

    def test_a_value_never_held_is_caught(self) -> None:
        assert self.check(op(1, 5, 9, "items", result=[("a", 7), ("b", 2)])) is False

    def test_iteration_that_raised_is_caught(self) -> None:
        assert self.check(op(1, 5, 9, "items", result=None, error=RuntimeError)) is False

    def test_values_view(self) -> None:
        assert self.check(op(1, 5, 9, "values", result=[1, 2])) is True
        assert self.check(op(1, 5, 9, "values", result=[1])) is False


def test_time_budget_exhaustion_answers_unknown_not_a_guess() -> None:
    # Many fully overlapping writes (one per thread: a thread's calls are sequential) and an
    # impossible final read: an exhaustive search of 2**40 orders would be needed.
    ops = [op(t, 0, 100, "store", "k", t) for t in range(40)]
    ops.append(op(40, 200, 201, "load", "k", result=(-1, True)))
    result = check_linearizable(ops, time_budget=0.05)
    assert result.ok is None
    assert result.counterexample is None and "budget" in result.note


def test_state_budget_exhaustion_answers_unknown_the_same_on_every_run() -> None:
    # the history above, with a budget of states instead of seconds: undecided after
    # exactly that many states, whatever the machine's speed
    ops = [op(t, 0, 100, "store", "k", t) for t in range(40)]
    ops.append(op(40, 200, 201, "load", "k", result=(-1, True)))
    runs = [check_linearizable(ops, time_budget=600, state_budget=2000) for _ in range(2)]
    for result in runs:
        assert result.ok is None and result.counterexample is None
        assert "state budget of 2000 states" in result.note
        assert result.states_explored == 2001  # the state past the budget stops it


def test_state_budget_counts_every_partition_of_the_history() -> None:
    # two keys checked one after the other: the budget is for the whole history
    ops = [op(t, 0, 10, "store", key, t) for t, key in enumerate("aabb")]
    ops += [op(4, 20, 21, "load", key, result=(1, True)) for key in "a"]
    ops += [op(5, 20, 21, "load", "b", result=(3, True))]
    whole = check_linearizable(ops)
    assert whole.ok is True and whole.partitions == 2
    needed = whole.states_explored
    assert check_linearizable(ops, state_budget=needed).ok is True
    short = check_linearizable(ops, state_budget=needed - 1)
    assert short.ok is None and "state budget" in short.note


def test_update_and_delete_if_are_refused_not_misjudged() -> None:
    with pytest.raises(ValueError, match="not atomic as a whole"):
        check_linearizable([op(0, 0, 1, "update", {"a": 1})])


def test_history_records_threads_results_errors_and_iterations() -> None:
    history = History()
    target: dict[str, int] = {}
    history.call(target, "__setitem__", "a", 1)
    with pytest.raises(KeyError):
        history.call(target, "__getitem__", "zz")
    assert history.call(target, "items") == [("a", 1)]
    ops = history.operations()
    assert [o.method for o in ops] == ["__setitem__", "__getitem__", "items"]
    assert ops[1].error is KeyError and ops[2].result == [("a", 1)]
    assert all(o.invoke <= o.response for o in ops)
    assert ops[0].response <= ops[1].invoke  # sequential calls do not overlap


def test_an_operation_that_responds_before_it_is_invoked_gets_no_verdict() -> None:
    # Issue 17.8: this used to be judged linearizable.
    ops = [op(0, 0, 1, "store", "k", 1), op(1, 5, 3, "load", "k", result=(1, True))]
    named = r"history entry 1 \(#\d+ load\('k'\)\) responds \(at 3\) before it is invoked \(at 5\)"
    with pytest.raises(ValueError, match=named):
        check_linearizable(ops)


@pytest.mark.parametrize(
    "entries",
    [["store", "k", 1], [("store", "k", 1)], [None], [{"method": "load"}]],
    ids=["strings", "tuple", "None", "dict"],
)
def test_entries_that_are_not_operations_are_named(entries: list[Any]) -> None:
    # Issue 17.8: these used to end in a bare AttributeError.
    valid = [op(0, 0, 1, "store", "k", 1)]
    with pytest.raises(TypeError, match="history entry 1 is not an Operation"):
        check_linearizable([*valid, *entries])


def _entry(**fields: Any) -> Operation:
    """A well-formed ``store('k', 1)`` with some fields replaced."""
    values: dict[str, Any] = {
        "id": next(_ids), "thread": 0, "method": "store", "args": ("k", 1), "result": None,
        "error": None, "invoke": 0, "response": 1, **fields,
    }  # fmt: skip
    return Operation(**values)


def _never_raise(_old: Any, _new: Any) -> Any:
    return 0


@pytest.mark.parametrize(
    ("entry", "error", "message"),
    [
        (_entry(invoke="0"), TypeError, "invoke must be a number"),
        (_entry(response=None), TypeError, "response must be a number"),
        (_entry(invoke=math.nan), ValueError, "invoke is NaN"),
        (_entry(method=7), TypeError, "method must be a str and args a tuple"),
        (_entry(args=["k", 1]), TypeError, "method must be a str and args a tuple"),
        (_entry(error=KeyError()), TypeError, "error must be an exception class or None"),
        (_entry(error="KeyError"), TypeError, "error must be an exception class or None"),
        (_entry(thread="T0"), TypeError, "thread must be an int"),
        (_entry(id=None), TypeError, "id must be an int"),
        (_entry(method="frobnicate", args=()), ValueError, "no model for method 'frobnicate'"),
        (_entry(method="update", args=({},)), ValueError, "not atomic as a whole"),
        (_entry(method="delete_if", args=(bool,)), ValueError, "not atomic as a whole"),
        (_entry(args=("k",)), ValueError, "store takes 2 arguments, 1 recorded"),
        (_entry(method="get", args=()), ValueError, "get takes 1 to 2 arguments, 0 recorded"),
        (_entry(method="merge", args=("k", 1, 2)), ValueError, "callback 2 is not callable"),
        (_entry(method="transaction", args=(None,)), ValueError, "callback None is not callable"),
        (_entry(method="__eq__", args=([],)), ValueError, "modelled against a Mapping"),
        (_entry(method="items", args=(), result=None), ValueError, "the list it yielded"),
        (_entry(method="items", args=(), result=["k"]), ValueError, "yields .key, value. pairs"),
        (_entry(method="popitem", args=(), result="k"), ValueError, "returns a .key, value. pair"),
        (_entry(method="snapshot", args=(), result=[]), ValueError, "returns a Mapping, got list"),
    ],
)
def test_malformed_operations_are_refused_naming_the_entry(
    entry: Operation, error: type[Exception], message: str
) -> None:
    history = [op(1, 0, 1, "load", "k", result=(None, False)), entry]
    with pytest.raises(error, match=message) as caught:
        check_linearizable(history)
    assert str(caught.value).startswith("history entry 1")


def test_two_calls_of_one_thread_that_overlap_are_refused() -> None:
    ops = [op(0, 0, 10, "store", "k", 1), op(0, 5, 6, "load", "k", result=(1, True))]
    named = r"history entries 0 \(#\d+\) and 1 \(#\d+\) overlap in thread 0"
    with pytest.raises(ValueError, match=named):
        check_linearizable(ops)
    # Back to back, or an instantaneous call at the instant another starts, is sequential.
    ok = [op(0, 0, 5, "store", "k", 1), op(0, 5, 5, "load", "k", result=(1, True))]
    assert check_linearizable(ok).ok is True
    instant_first = [op(0, 5, 9, "store", "k", 1), op(0, 5, 5, "load", "k", result=(None, False))]
    assert check_linearizable(instant_first).ok is True


def test_an_id_used_twice_is_refused() -> None:
    first = op(0, 0, 1, "store", "k", 1)
    second = Operation(first.id, 1, "load", ("k",), (1, True), None, 2, 3)
    with pytest.raises(ValueError, match=f"history entries 0 and 1 have the same id {first.id}"):
        check_linearizable([first, second])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: check_linearizable([], time_budget=0), ValueError, "time_budget must be positive"),
        (lambda: check_linearizable([], time_budget=math.nan), ValueError, "time_budget must be"),
        (lambda: check_linearizable([], time_budget="1"), TypeError, "time_budget must be a num"),
        (lambda: check_linearizable([], state_budget=0), ValueError, "state_budget must be at"),
        (lambda: check_linearizable([], state_budget=1.5), TypeError, "state_budget must be an"),
        (lambda: check_linearizable([], state_budget=True), TypeError, "state_budget must be an"),
        (lambda: check_linearizable([], MapModel), TypeError, "model must be a MapModel instance"),
        (lambda: check_linearizable([], initial=[("k", 1)]), TypeError, "initial must be a Map"),
        (lambda: check_linearizable(5), TypeError, "history must be a History or an iterable"),
    ],
)
def test_invalid_arguments_are_refused(
    call: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        call()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 12), st.integers(-2, 6)),
        max_size=7,
    )
)
def test_a_history_gets_a_verdict_exactly_when_it_is_well_formed(
    shapes: list[tuple[int, int, int]],
) -> None:
    # (thread, invoke, duration); a negative duration responds before the invocation.
    ops = [op(t, start, start + length, "store", "k", i) for i, (t, start, length) in
           enumerate(shapes)]  # fmt: skip
    backwards = any(o.response < o.invoke for o in ops)
    overlapping = any(
        a.thread == b.thread and a.invoke < b.response and b.invoke < a.response
        for a, b in itertools.combinations(ops, 2)
    )
    if backwards:
        with pytest.raises(ValueError, match="before it is invoked"):
            check_linearizable(ops)
    elif overlapping:
        with pytest.raises(ValueError, match="overlap in thread"):
            check_linearizable(ops)
    else:
        assert check_linearizable(ops).ok is True  # stores alone are always linearizable


def test_a_callback_that_raised_is_modelled_as_raising_and_changing_nothing() -> None:
    def boom(_key: Any, _old: Any) -> Any:
        raise ZeroDivisionError

    raised = [
        op(0, 0, 1, "store", "k", 1),
        op(0, 2, 3, "compute", "k", boom, error=ZeroDivisionError),
        op(0, 4, 5, "merge", "k", 1, lambda old, new: old // 0, error=ZeroDivisionError),
        op(0, 6, 7, "load", "k", result=(1, True)),
    ]
    assert check_linearizable(raised).ok is True
    claims_success = [op(0, 0, 1, "compute", "k", boom, result=None)]
    result = check_linearizable(claims_success)
    assert result.ok is False and "should raise ZeroDivisionError" in str(result.counterexample)


def test_an_unhashable_key_is_modelled_as_raising_type_error() -> None:
    ops = [
        op(0, 0, 1, "store", ["k"], 1, error=TypeError),
        op(1, 0, 1, "load", {"k": 1}, error=TypeError),
        op(0, 2, 3, "store", "k", 1),
    ]
    assert check_linearizable(ops).ok is True
    result = check_linearizable([op(0, 0, 1, "store", ["k"], 1)])
    assert result.ok is False and "should raise TypeError" in str(result.counterexample)
