"""A hypothesis state machine that drives every protocol method of a map against a plain
``dict`` model, checking each return value and the full contents after every step.

Keys come from a small pool (so operations collide; ``1`` and ``1.0`` are the same key);
values include ``None``, a shared NaN (equal only to itself, by identity) and fresh
``Box`` objects that are equal but never identical to one another. The model holds the very
objects the map holds, so every read is checked for identity, not just equality.
"""

from __future__ import annotations

import collections.abc
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from safemap import DELETE, MISSING, FrozenMap


class Boom(Exception):
    """Raised on purpose by callbacks."""


class Box:
    """Equal to every Box with the same payload; each instance is a distinct object."""

    __slots__ = ("payload",)

    def __init__(self, payload: int) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and self.payload == other.payload

    def __hash__(self) -> int:
        return hash(("Box", self.payload))

    def __repr__(self) -> str:
        return f"Box({self.payload})#{id(self) % 10000}"


NAN = float("nan")
ABSENT: Any = object()

KEYS = st.sampled_from([0, 1, 1.0, 2, "a", "b", (1, 2), None])
STR_KEYS = st.sampled_from(["a", "b", "c"])
VALUES = st.one_of(
    st.sampled_from([None, 0, 1, "x", NAN, True]),
    st.builds(Box, st.integers(0, 2)),
    st.builds(lambda n: [n], st.integers(0, 1)),  # unhashable values are fine too
)


def same(a: object, b: object) -> bool:
    """Value equality as dict compares values: identity first, then ==."""
    return a is b or bool(a == b)


# A callback's behaviour: ("value", v) returns v, ("delete",) returns DELETE,
# ("raise",) raises, ("keep",) returns the old value (or v when absent).
OUTCOMES = st.one_of(
    st.tuples(st.just("value"), VALUES),
    st.just(("delete",)),
    st.just(("raise",)),
    st.just(("keep",)),
)


def outcome_value(outcome: tuple[Any, ...], old: Any) -> Any:
    kind = outcome[0]
    if kind == "value":
        return outcome[1]
    if kind == "delete":
        return DELETE
    if kind == "raise":
        raise Boom(f"callback raised ({old!r})")
    return old if old is not MISSING else "fresh"


# Transaction steps, applied to the view and to a copy of the model side by side.
TXN_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES),
        st.tuples(st.just("del"), KEYS),
        st.tuples(st.just("get"), KEYS),
        st.tuples(st.just("getitem"), KEYS),
        st.tuples(st.just("contains"), KEYS),
        st.tuples(st.just("pop"), KEYS),
        st.tuples(st.just("setdefault"), KEYS, VALUES),
        st.tuples(st.just("update"), KEYS, VALUES),
        st.tuples(st.just("len")),
        st.tuples(st.just("iter")),
        st.tuples(st.just("items")),
        st.tuples(st.just("popitem")),
        st.tuples(st.just("clear")),
    ),
    max_size=8,
)


class MapMachine(RuleBasedStateMachine):
    map_type: type = type(None)  # set per test by a subclass

    def __init__(self) -> None:
        super().__init__()
        self.m: Any = self.map_type()
        self.model: dict[Any, Any] = {}
        self.old_snapshots: list[tuple[FrozenMap[Any, Any], dict[Any, Any]]] = []

    # -------------------------------------------------------------- helpers

    def expect_same(self, got: Any, want: Any) -> None:
        assert got is want, f"expected the very object {want!r}, got {got!r}"

    def expect_pair(self, got: Any, value: Any, found: bool) -> None:
        assert type(got) is tuple and len(got) == 2, got
        assert got[1] is found, got
        self.expect_same(got[0], value)

    # ------------------------------------------------------------- invariants

    @invariant()
    def contents_match_model(self) -> None:
        m, model = self.m, self.model
        assert len(m) == len(model)
        items = list(m.items())
        assert len(items) == len(model), items
        seen = set()
        for key, value in items:
            assert key in model, (key, model)
            assert key not in seen, f"key {key!r} yielded twice"
            seen.add(key)
            self.expect_same(value, model[key])
        assert bool(m) is bool(model)

    @invariant()
    def old_snapshots_unchanged(self) -> None:
        for snap, expected in self.old_snapshots:
            assert len(snap) == len(expected)
            for key, value in expected.items():
                assert snap[key] is value

    # --------------------------------------------------- dict-compatible rules

    @rule(key=KEYS, value=VALUES)
    def setitem(self, key: Any, value: Any) -> None:
        assert self.m.__setitem__(key, value) is None
        self.model[key] = value

    @rule(key=KEYS)
    def getitem(self, key: Any) -> None:
        if key in self.model:
            self.expect_same(self.m[key], self.model[key])
        else:
            with pytest.raises(KeyError):
                self.m[key]

    @rule(key=KEYS)
    def delitem(self, key: Any) -> None:
        if key in self.model:
            del self.m[key]
            del self.model[key]
        else:
            with pytest.raises(KeyError):
                del self.m[key]

    @rule(key=KEYS)
    def contains(self, key: Any) -> None:
        assert (key in self.m) is (key in self.model)
        assert (key in self.m.keys()) is (key in self.model)  # noqa: SIM118

    @rule(key=KEYS, default=VALUES, pass_default=st.booleans())
    def get(self, key: Any, default: Any, pass_default: bool) -> None:
        if pass_default:
            self.expect_same(self.m.get(key, default), self.model.get(key, default))
        else:
            self.expect_same(self.m.get(key), self.model.get(key))

    @rule(key=KEYS, default=VALUES, pass_default=st.booleans())
    def pop(self, key: Any, default: Any, pass_default: bool) -> None:
        if key in self.model:
            want = self.model.pop(key)
            got = self.m.pop(key, default) if pass_default else self.m.pop(key)
            self.expect_same(got, want)
        elif pass_default:
            self.expect_same(self.m.pop(key, default), default)
        else:
            with pytest.raises(KeyError):
                self.m.pop(key)

    @rule()
    def popitem(self) -> None:
        if not self.model:
            with pytest.raises(KeyError):
                self.m.popitem()
            return
        pair = self.m.popitem()
        assert type(pair) is tuple and len(pair) == 2
        key, value = pair
        assert key in self.model
        self.expect_same(value, self.model.pop(key))

    @rule(key=KEYS, default=VALUES, pass_default=st.booleans())
    def setdefault(self, key: Any, default: Any, pass_default: bool) -> None:
        if not pass_default:
            default = None
        got = self.m.setdefault(key, default) if pass_default else self.m.setdefault(key)
        self.expect_same(got, self.model.setdefault(key, default))

    @rule(
        pairs=st.lists(st.tuples(KEYS, VALUES), max_size=4),
        kwargs=st.dictionaries(STR_KEYS, VALUES, max_size=2),
        form=st.sampled_from(["dict", "pairs", "same-type", "frozen", "kwargs-only"]),
    )
    def update(self, pairs: list[tuple[Any, Any]], kwargs: dict[str, Any], form: str) -> None:
        source: Any
        if form == "dict":
            source = dict(pairs)
        elif form == "pairs":
            source = list(pairs)
        elif form == "same-type":
            source = self.map_type(pairs)
        elif form == "frozen":
            source = FrozenMap(pairs)
        else:
            source = None
        if source is None:
            assert self.m.update(**kwargs) is None
        else:
            assert self.m.update(source, **kwargs) is None
            self.model.update(pairs)
        self.model.update(kwargs)

    @rule()
    def clear(self) -> None:
        assert self.m.clear() is None
        self.model.clear()

    @rule(switch=st.booleans(), key=KEYS, value=VALUES)
    def copy(self, switch: bool, key: Any, value: Any) -> None:
        c = self.m.copy()
        assert type(c) is type(self.m)
        assert c is not self.m
        assert len(c) == len(self.model)
        for k, v in c.items():
            self.expect_same(v, self.model[k])
        if switch:  # carry on with the copy; the original must be independent of it
            original, original_model = self.m, dict(self.model)
            self.m = c
            self.m[key] = value
            self.model[key] = value
            assert len(original) == len(original_model)
            for k, v in original.items():
                self.expect_same(v, original_model[k])
        else:
            c[key] = value  # mutating the copy leaves the map alone (checked by invariant)

    @rule(keys=st.lists(KEYS, max_size=5), value=VALUES, pass_value=st.booleans())
    def fromkeys(self, keys: list[Any], value: Any, pass_value: bool) -> None:
        if pass_value:
            new = type(self.m).fromkeys(keys, value)
            want = dict.fromkeys(keys, value)
        else:
            new = type(self.m).fromkeys(keys)
            want = dict.fromkeys(keys)
        assert type(new) is type(self.m)
        assert len(new) == len(want)
        for k, v in want.items():
            self.expect_same(new[k], v)
        self.m, self.model = new, want

    @rule(form=st.sampled_from(["mapping", "pairs", "kwargs", "frozen", "same-type"]))
    def reconstruct(self, form: str) -> None:
        if form == "mapping":
            new = self.map_type(self.model)
        elif form == "pairs":
            new = self.map_type(list(self.model.items()))
        elif form == "frozen":
            new = self.map_type(FrozenMap(self.model))
        elif form == "same-type":
            new = self.map_type(self.m)
        else:
            strs = {k: v for k, v in self.model.items() if isinstance(k, str)}
            new = self.map_type(**strs)
            self.model = strs
        assert type(new) is self.map_type
        self.m = new

    @rule(key=KEYS, value=VALUES)
    def equality(self, key: Any, value: Any) -> None:
        m, model = self.m, self.model
        assert m == model
        assert model == m
        assert not (m != model)  # noqa: SIM202
        assert m == FrozenMap(model)
        assert m == self.map_type(model)
        assert m == m.copy()
        assert m != [*model.items()]
        changed = dict(model)
        if key in changed and same(changed[key], value):
            del changed[key]
        else:
            changed[key] = value
        assert m != changed
        assert changed != m
        assert m != self.map_type(changed)

    @rule()
    def iteration_and_views(self) -> None:
        m, model = self.m, self.model
        keys = list(m)
        assert len(keys) == len(set(keys)) == len(model)
        assert set(keys) == set(model)
        assert len(list(m.keys())) == len(model)
        assert set(m.keys()) == set(model)
        assert len(m.keys()) == len(m.values()) == len(m.items()) == len(model)
        values = list(m.values())
        assert Counter(map(id, values)) == Counter(map(id, model.values()))
        for key, value in model.items():
            assert (key, value) in m.items()
            assert value in m.values()
        assert isinstance(m.keys(), collections.abc.KeysView)
        assert m.keys() == model.keys()
        assert m.items() == model.items()

    # ----------------------------------------------------------- Go primitives

    @rule(key=KEYS)
    def load(self, key: Any) -> None:
        if key in self.model:
            self.expect_pair(self.m.load(key), self.model[key], True)
        else:
            self.expect_pair(self.m.load(key), None, False)

    @rule(key=KEYS, value=VALUES)
    def store(self, key: Any, value: Any) -> None:
        assert self.m.store(key, value) is None
        self.model[key] = value

    @rule(key=KEYS, value=VALUES)
    def load_or_store(self, key: Any, value: Any) -> None:
        got = self.m.load_or_store(key, value)
        if key in self.model:
            self.expect_pair(got, self.model[key], True)
        else:
            self.expect_pair(got, value, False)
            self.model[key] = value

    @rule(key=KEYS)
    def load_and_delete(self, key: Any) -> None:
        got = self.m.load_and_delete(key)
        if key in self.model:
            self.expect_pair(got, self.model.pop(key), True)
        else:
            self.expect_pair(got, None, False)

    @rule(key=KEYS)
    def delete(self, key: Any) -> None:
        assert self.m.delete(key) is None
        self.model.pop(key, None)

    @rule(key=KEYS, value=VALUES)
    def swap(self, key: Any, value: Any) -> None:
        got = self.m.swap(key, value)
        if key in self.model:
            self.expect_pair(got, self.model[key], True)
        else:
            self.expect_pair(got, None, False)
        self.model[key] = value

    @rule(key=KEYS, old=VALUES, new=VALUES, use_current=st.booleans())
    def compare_and_swap(self, key: Any, old: Any, new: Any, use_current: bool) -> None:
        if use_current and key in self.model:
            old = self.model[key]
        want = key in self.model and same(self.model[key], old)
        assert self.m.compare_and_swap(key, old, new) is want
        if want:
            self.model[key] = new

    @rule(key=KEYS, old=VALUES, use_current=st.booleans())
    def compare_and_delete(self, key: Any, old: Any, use_current: bool) -> None:
        if use_current and key in self.model:
            old = self.model[key]
        want = key in self.model and same(self.model[key], old)
        assert self.m.compare_and_delete(key, old) is want
        if want:
            del self.model[key]

    @rule(
        stop_after=st.integers(0, 4),
        result=st.sampled_from([None, True, 1, "", 0.5]),
    )
    def range(self, stop_after: int, result: Any) -> None:
        calls: list[tuple[Any, Any]] = []

        def fn(key: Any, value: Any) -> Any:
            calls.append((key, value))
            return False if len(calls) == stop_after else result

        assert self.m.range(fn) is None
        expected_calls = min(stop_after, len(self.model)) if stop_after else len(self.model)
        assert len(calls) == expected_calls
        keys = [k for k, _ in calls]
        assert len(set(keys)) == len(keys)
        for key, value in calls:
            self.expect_same(value, self.model[key])

    # ------------------------------------------------------------ compute family

    @rule(key=KEYS, outcome=OUTCOMES)
    def compute(self, key: Any, outcome: tuple[Any, ...]) -> None:
        calls: list[tuple[Any, Any]] = []
        old = self.model.get(key, MISSING)

        def fn(k: Any, current: Any) -> Any:
            calls.append((k, current))
            return outcome_value(outcome, current)

        if outcome[0] == "raise":
            with pytest.raises(Boom):
                self.m.compute(key, fn)
        else:
            new = outcome_value(outcome, old)
            got = self.m.compute(key, fn)
            if new is DELETE:
                assert got is None
                self.model.pop(key, None)
            else:
                self.expect_same(got, new)
                self.model[key] = new
        assert len(calls) == 1
        assert calls[0][0] == key
        self.expect_same(calls[0][1], old)

    @rule(key=KEYS, outcome=OUTCOMES)
    def compute_if_absent(self, key: Any, outcome: tuple[Any, ...]) -> None:
        calls: list[Any] = []

        def factory(k: Any) -> Any:
            calls.append(k)
            return outcome_value(outcome, MISSING)

        if key in self.model:
            self.expect_same(self.m.compute_if_absent(key, factory), self.model[key])
            assert calls == []
            return
        if outcome[0] == "raise":
            with pytest.raises(Boom):
                self.m.compute_if_absent(key, factory)
        else:
            new = outcome_value(outcome, MISSING)
            got = self.m.compute_if_absent(key, factory)
            if new is DELETE:
                assert got is None
            else:
                self.expect_same(got, new)
                self.model[key] = new
        assert calls == [key]

    @rule(key=KEYS, outcome=OUTCOMES)
    def compute_if_present(self, key: Any, outcome: tuple[Any, ...]) -> None:
        calls: list[tuple[Any, Any]] = []

        def fn(k: Any, current: Any) -> Any:
            calls.append((k, current))
            return outcome_value(outcome, current)

        if key not in self.model:
            assert self.m.compute_if_present(key, fn) is None
            assert calls == []
            return
        old = self.model[key]
        if outcome[0] == "raise":
            with pytest.raises(Boom):
                self.m.compute_if_present(key, fn)
        else:
            new = outcome_value(outcome, old)
            got = self.m.compute_if_present(key, fn)
            if new is DELETE:
                assert got is None
                del self.model[key]
            else:
                self.expect_same(got, new)
                self.model[key] = new
        assert len(calls) == 1
        self.expect_same(calls[0][1], old)

    @rule(key=KEYS, value=VALUES, outcome=OUTCOMES)
    def merge(self, key: Any, value: Any, outcome: tuple[Any, ...]) -> None:
        calls: list[tuple[Any, Any]] = []

        def fn(old: Any, given: Any) -> Any:
            calls.append((old, given))
            return outcome_value(outcome, old)

        if key not in self.model:
            self.expect_same(self.m.merge(key, value, fn), value)
            assert calls == []
            self.model[key] = value
            return
        old = self.model[key]
        if outcome[0] == "raise":
            with pytest.raises(Boom):
                self.m.merge(key, value, fn)
        else:
            new = outcome_value(outcome, old)
            got = self.m.merge(key, value, fn)
            if new is DELETE:
                assert got is None
                del self.model[key]
            else:
                self.expect_same(got, new)
                self.model[key] = new
        assert len(calls) == 1
        self.expect_same(calls[0][0], old)
        self.expect_same(calls[0][1], value)

    # ----------------------------------------------------------------- bulk

    @rule(
        kind=st.sampled_from(["none-values", "key-subset", "always", "never", "truthy"]),
        subset=st.sets(KEYS, max_size=3),
        raise_at=st.one_of(st.none(), st.integers(1, 4)),
    )
    def delete_if(self, kind: str, subset: set[Any], raise_at: int | None) -> None:
        calls: list[tuple[Any, Any]] = []

        def decide(key: Any, value: Any) -> bool:
            if kind == "none-values":
                return value is None
            if kind == "key-subset":
                return key in subset
            if kind == "always":
                return True
            if kind == "never":
                return False
            return bool(value)

        def pred(key: Any, value: Any) -> bool:
            calls.append((key, value))
            if raise_at is not None and len(calls) == raise_at:
                raise Boom("pred")
            return decide(key, value)

        if raise_at is not None and raise_at <= len(self.model):
            with pytest.raises(Boom):
                self.m.delete_if(pred)
            return  # nothing removed: the invariant checks the contents
        removed = self.m.delete_if(pred)
        doomed = [k for k, v in self.model.items() if decide(k, v)]
        assert removed == len(doomed)
        for key in doomed:
            del self.model[key]
        assert len(calls) == len(self.model) + len(doomed)
        assert len({k for k, _ in calls}) == len(calls)

    @rule()
    def snapshot(self) -> None:
        snap = self.m.snapshot()
        assert type(snap) is FrozenMap
        assert len(snap) == len(self.model)
        for key, value in self.model.items():
            self.expect_same(snap[key], value)
        assert snap == self.model
        self.old_snapshots.append((snap, dict(self.model)))
        del self.old_snapshots[:-3]

    @rule(steps=TXN_STEPS, commit=st.booleans(), result=VALUES)
    def transaction(self, steps: list[tuple[Any, ...]], commit: bool, result: Any) -> None:
        work = dict(self.model)
        views: list[Any] = []
        error = Boom("abort transaction")

        def fn(view: Any) -> Any:
            views.append(view)
            assert isinstance(view, collections.abc.MutableMapping)
            for step in steps:
                self.apply_txn_step(view, work, step)
            assert len(view) == len(work)
            for key, value in work.items():
                self.expect_same(view[key], value)
            if not commit:
                raise error
            return result

        if commit:
            self.expect_same(self.m.transaction(fn), result)
            self.model = work
        else:
            with pytest.raises(Boom) as info:
                self.m.transaction(fn)
            assert info.value is error
        with pytest.raises(RuntimeError):
            views[0][0]
        with pytest.raises(RuntimeError):
            views[0][0] = 1
        with pytest.raises(RuntimeError):
            len(views[0])

    def apply_txn_step(self, view: Any, work: dict[Any, Any], step: tuple[Any, ...]) -> None:
        op = step[0]
        if op == "set":
            view[step[1]] = step[2]
            work[step[1]] = step[2]
        elif op == "del":
            if step[1] in work:
                del view[step[1]]
                del work[step[1]]
            else:
                with pytest.raises(KeyError):
                    del view[step[1]]
        elif op == "get":
            self.expect_same(view.get(step[1]), work.get(step[1]))
        elif op == "getitem":
            if step[1] in work:
                self.expect_same(view[step[1]], work[step[1]])
            else:
                with pytest.raises(KeyError):
                    view[step[1]]
        elif op == "contains":
            assert (step[1] in view) is (step[1] in work)
        elif op == "pop":
            self.expect_same(view.pop(step[1], ABSENT), work.pop(step[1], ABSENT))
        elif op == "setdefault":
            self.expect_same(view.setdefault(step[1], step[2]), work.setdefault(step[1], step[2]))
        elif op == "update":
            view.update({step[1]: step[2]})
            work[step[1]] = step[2]
        elif op == "len":
            assert len(view) == len(work)
        elif op == "iter":
            keys = list(view)
            assert len(keys) == len(set(keys)) == len(work)
            assert set(keys) == set(work)
        elif op == "items":
            items = list(view.items())
            assert len(items) == len(work)
            for key, value in items:
                self.expect_same(value, work[key])
        elif op == "popitem":
            if work:
                key, value = view.popitem()
                self.expect_same(value, work.pop(key))
            else:
                with pytest.raises(KeyError):
                    view.popitem()
        elif op == "clear":
            view.clear()
            work.clear()
        else:  # pragma: no cover
            raise AssertionError(op)

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def bool_and_len(self) -> None:
        assert self.m
        assert len(self.m) == len(self.model)


STATEFUL_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.timeout(240)
def test_protocol_against_dict_model(map_type: type) -> None:
    machine = type(f"{map_type.__name__}Machine", (MapMachine,), {"map_type": map_type})
    run_state_machine_as_test(machine, settings=STATEFUL_SETTINGS)
