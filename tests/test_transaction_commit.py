"""``transaction(fn)`` commits all or nothing, for every map type: a key whose
``__hash__``/``__eq__`` raises while the commit applies the view's changes leaves the map
exactly as it was, and the exception propagates unchanged."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


class Incomparable:
    """Hashes to one value; comparing two distinct instances raises ``error``."""

    def __init__(self, name: str, error: BaseException | None = None) -> None:
        self.name = name
        self.error = error if error is not None else ValueError("incomparable")

    def __hash__(self) -> int:
        return 12345

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Incomparable) and other is not self:
            raise self.error
        return other is self

    def __repr__(self) -> str:
        return f"Incomparable({self.name})"


class Flaky:
    """Hashes to one value; equal only to itself. The comparison number ``fail_at`` (counted
    over all instances sharing ``counter``) raises ``error``: a non-deterministic ``__eq__``,
    so a commit's lookups can pass and a later change still fail."""

    def __init__(
        self, name: str, counter: itertools.count[int], fail_at: int, error: BaseException
    ) -> None:
        self.name, self.counter, self.fail_at, self.error = name, counter, fail_at, error

    def __hash__(self) -> int:
        return 777

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if isinstance(other, Flaky) and next(self.counter) == self.fail_at:
            raise self.error
        return False

    def __repr__(self) -> str:
        return f"Flaky({self.name})"


def state(m: Any) -> dict[Any, tuple[int, Any]]:
    """The map's contents with the identity of each value (``==`` could hide a swap)."""
    return {key: (id(value), value) for key, value in m.items()}


@pytest.mark.parametrize("error_type", [ValueError, KeyError, KeyboardInterrupt])
def test_commit_is_all_or_nothing_when_a_key_raises(map_type: type, error_type: type) -> None:
    """The issue's reproduction: the deletes and the first write would land before the
    write of ``b`` compares ``b`` with ``a``."""
    error = error_type("incomparable")
    a, b = Incomparable("a", error), Incomparable("b", error)
    m = map_type()
    m[a] = "A"
    m["y"] = "Y"
    m["z"] = ["Z"]
    before = state(m)

    def fn(view: Any) -> None:
        view["x"] = 1
        view["z"] = "replaced"
        del view["y"]
        view[b] = 2  # compares with ``a`` only when the commit applies it

    with pytest.raises(error_type) as info:
        m.transaction(fn)
    assert info.value is error
    assert state(m) == before
    assert len(m) == 3
    m.transaction(lambda view: view.__setitem__("after", 1))  # the map is usable
    assert m["after"] == 1 and m["y"] == "Y"


def test_commit_lookup_error_of_a_deleted_key_changes_nothing(map_type: type) -> None:
    a, b = Incomparable("a"), Incomparable("b")
    m = map_type({"p": 1, "q": 2})
    m[a] = "A"
    before = state(m)

    def fn(view: Any) -> None:
        del view["p"]
        view["q"] = 20
        view["new"] = 3
        view[b] = 4

    with pytest.raises(ValueError, match="incomparable"):
        m.transaction(fn)
    assert state(m) == before


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    present=st.lists(st.integers(0, 5), unique=True, max_size=5),
    deletes=st.lists(st.integers(0, 5), unique=True, max_size=4),
    writes=st.lists(st.integers(0, 9), unique=True, max_size=5),
    flaky_keys=st.integers(1, 3),
    fail_at=st.integers(0, 12),
    interrupt=st.booleans(),
)
def test_commit_undoes_what_it_applied_when_eq_fails_late(
    map_type: type,
    present: list[int],
    deletes: list[int],
    writes: list[int],
    flaky_keys: int,
    fail_at: int,
    interrupt: bool,
) -> None:
    """Keys whose ``__eq__`` raises at the n-th comparison: wherever that lands (the view,
    the commit's lookups, the middle of applying it, or never), the map ends either exactly
    as before or exactly as the transaction left it."""
    counter = itertools.count()
    error: BaseException = KeyboardInterrupt("late") if interrupt else ValueError("late")
    never = itertools.count()  # a counter that never reaches fail_at while building the map
    stored = Flaky("stored", never, -1, error)
    m = map_type({k: f"v{k}" for k in present})
    m[stored] = "S"
    stored.counter, stored.fail_at = counter, fail_at
    flaky = [Flaky(f"f{i}", counter, fail_at, error) for i in range(flaky_keys)]
    before = state(m)
    expected = dict(m.items())

    def fn(view: Any) -> None:
        for k in deletes:
            if k in view:
                del view[k]
                expected.pop(k)
        for k in writes:
            view[k] = f"w{k}"
            expected[k] = f"w{k}"
        for i, key in enumerate(flaky):  # last: they fail after other changes were applied
            view[key] = i
            expected[key] = i

    outcome: BaseException | None = None
    try:
        m.transaction(fn)
    except (ValueError, KeyboardInterrupt) as exc:
        outcome = exc
    for key in [stored, *flaky]:
        key.fail_at = -1  # disarmed: the checks below compare keys too
    if outcome is None:
        assert dict(m.items()) == expected
    else:
        assert outcome is error
        assert state(m) == before
