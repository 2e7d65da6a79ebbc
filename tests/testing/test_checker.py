"""The linearizability checker on hand-built histories: it accepts exactly what it should."""

from __future__ import annotations

import itertools
import operator
from typing import Any

import pytest

from safemap import DELETE, MISSING, FrozenMap
from safemap.testing import History, Operation, check_linearizable

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
    # Many fully overlapping writes and an impossible final read: exhaustive search needed.
    ops = [op(t, 0, 100, "store", "k", t * 10 + i) for t in range(6) for i in range(8)]
    ops.append(op(6, 200, 201, "load", "k", result=(-1, True)))
    result = check_linearizable(ops, time_budget=0.05)
    assert result.ok is None
    assert result.counterexample is None and "budget" in result.note


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
