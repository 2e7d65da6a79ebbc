"""A value a write replaces or removes is released after the map is unlocked, on every write
path: a ``__del__`` that reads the map and writes to it sees its write land (it is not refused
as a nested write, nor deadlocks)."""

from __future__ import annotations

import gc
import operator
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from safemap import DELETE

GUARD = 30.0  # seconds before a blocked operation counts as a deadlock


class Reporter:
    """A value whose ``__del__`` reads the map that held it and writes to it. Equal to the
    string ``tag`` (so ``compare_and_*`` can name it without another reference)."""

    __hash__ = object.__hash__

    def __init__(self, m: Any, tag: str, log: list[Any]) -> None:
        self.m, self.tag, self.log = m, tag, log

    def __eq__(self, other: object) -> bool:
        return other is self or other == self.tag

    def __del__(self) -> None:
        try:
            seen = self.m.get("probe")
            self.m[("released", self.tag)] = seen
            self.log.append(("ok", self.tag))
        except BaseException as exc:
            self.log.append(("error", self.tag, repr(exc)))


class Boom(Exception):
    pass


def _fn_raises(m: Any, new: Any) -> None:
    """A transaction whose ``fn`` writes ``new`` into the view, then raises."""

    def fn(view: Any) -> None:
        view["k"] = new
        raise Boom

    m.transaction(fn)


class Incomparable:
    def __hash__(self) -> int:
        return 99

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Incomparable) and other is not self:
            raise Boom
        return other is self


def _commit_fails(m: Any, new: Any) -> None:
    """A transaction whose commit applies ``view["k"] = new`` and then fails and rolls back."""
    m[Incomparable()] = "stored"

    def fn(view: Any) -> None:
        view["k"] = new
        view[Incomparable()] = "fails at commit"

    m.transaction(fn)


# Each path replaces or removes the Reporter stored under "k" (or, for the last two, drops
# one that a failed transaction had written). ``new`` is a fresh Reporter some paths store.
PATHS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("setitem", lambda m, new: m.__setitem__("k", 0)),
    ("store", lambda m, new: m.store("k", 0)),
    ("update", lambda m, new: m.update({"k": 0})),
    ("ior", lambda m, new: operator.ior(m, {"k": 0})),
    ("delitem", lambda m, new: m.__delitem__("k")),
    ("pop", lambda m, new: m.pop("k")),
    ("popitem", lambda m, new: [m.popitem() for _ in range(2)]),
    ("load_and_delete", lambda m, new: m.load_and_delete("k")),
    ("delete", lambda m, new: m.delete("k")),
    ("swap", lambda m, new: m.swap("k", 0)),
    ("compare_and_swap", lambda m, new: m.compare_and_swap("k", "old", 0)),
    ("compare_and_delete", lambda m, new: m.compare_and_delete("k", "old")),
    ("compute", lambda m, new: m.compute("k", lambda k, v: 0)),
    ("compute-delete", lambda m, new: m.compute("k", lambda k, v: DELETE)),
    ("compute_if_present", lambda m, new: m.compute_if_present("k", lambda k, v: 0)),
    ("compute_if_present-delete", lambda m, new: m.compute_if_present("k", lambda k, v: DELETE)),
    ("merge", lambda m, new: m.merge("k", 0, lambda v, w: w)),
    ("merge-delete", lambda m, new: m.merge("k", 0, lambda v, w: DELETE)),
    ("delete_if", lambda m, new: m.delete_if(lambda k, v: k == "k")),
    ("clear", lambda m, new: m.clear()),
    ("transaction-set", lambda m, new: m.transaction(lambda view: view.__setitem__("k", 0))),
    ("transaction-del", lambda m, new: m.transaction(lambda view: view.__delitem__("k"))),
    ("transaction-clear", lambda m, new: m.transaction(lambda view: view.clear())),
    ("transaction-fn-raises", _fn_raises),
    ("transaction-commit-rolls-back", _commit_fails),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", [p for _, p in PATHS], ids=[n for n, _ in PATHS])
def test_released_value_del_writes_to_the_map(
    map_type: type, path: Callable[[Any, Any], Any]
) -> None:
    m = map_type({"probe": "P"})
    log: list[Any] = []
    m["k"] = Reporter(m, "old", log)  # the map holds the only reference
    name = next(n for n, p in PATHS if p is path)
    dropped = "new" if name.startswith("transaction-fn") or "rolls-back" in name else "old"
    errors: list[BaseException] = []

    def body() -> None:
        new = Reporter(m, "new", log) if dropped == "new" else None
        try:
            path(m, new)
        except Boom:
            pass
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=body, daemon=True)
    worker.start()
    worker.join(GUARD)
    assert not worker.is_alive(), "deadlock: the write or the released value's __del__ hung"
    assert not errors, errors
    # An exception's traceback may keep the value until now, and on free-threaded builds a
    # value released by another thread than the one that made it is freed when its maker's
    # deferred releases are merged: collect until its __del__ has run (bounded).
    deadline = time.monotonic() + GUARD
    while not log and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert log == [("ok", dropped)], "the __del__'s write did not land"
    assert ("released", dropped) in m
    expected_probe = None if name in ("clear", "transaction-clear", "popitem") else "P"
    assert m[("released", dropped)] == expected_probe
