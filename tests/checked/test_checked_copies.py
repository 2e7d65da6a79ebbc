"""Copying a ``CheckedDict`` (or updating from one) is ONE checked read of it.

The copier's keys run Python code in ``__hash__``; from there the test lets another
thread try a write at every point of the copy. The outcome is exact: the copy is the map
as it was (every write that came during the read was refused with a
``ConcurrentMapMisuse`` error), never a ``KeyError`` nor a mix of old and new values.
(``dict(d)``, ``{**d}`` and ``f(**d)`` are the exception, see docs/checked.md: CPython
reads a dict subclass that overrides iteration key by key.)
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable
from typing import Any

import pytest

from safemap.failfast import (
    CheckedDict,
    ConcurrentMapMisuse,
    ConcurrentReadWriteError,
    checked,
)

WAIT = 60.0  # a deadlock guard, not a timing assertion
N = 8


class HKey:
    """An int key whose ``__hash__`` first calls ``HKey.hook`` (when set)."""

    hook: Callable[[], None] | None = None

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        hook = HKey.hook
        if hook is not None:
            hook()
        return self.n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HKey) and other.n == self.n

    def __repr__(self) -> str:
        return f"HKey({self.n})"


def _update_into_checked(src: CheckedDict[Any, Any]) -> Any:
    t: CheckedDict[Any, Any] = checked()
    t.update(src)
    return t


def _update_with_kwargs(src: CheckedDict[Any, Any]) -> Any:
    t: CheckedDict[Any, Any] = checked()
    t.update(src, extra=1)
    assert dict.pop(t, "extra") == 1
    return t


def _ior(src: CheckedDict[Any, Any]) -> Any:
    t: CheckedDict[Any, Any] = checked()
    t |= src
    return t


def _init_with_kwargs(src: CheckedDict[Any, Any]) -> Any:
    t: CheckedDict[Any, Any] = CheckedDict(src, extra=1)
    assert dict.pop(t, "extra") == 1
    return t


COPIES: dict[str, Callable[[CheckedDict[Any, Any]], Any]] = {
    "copy()": lambda s: s.copy(),
    "copy.copy": copy.copy,
    "copy.deepcopy": copy.deepcopy,
    "src | {}": lambda s: s | {},
    "{} | src": lambda s: {} | s,
    "checked() | src": lambda s: checked() | s,
    "update(src)": _update_into_checked,
    "update(src, kw)": _update_with_kwargs,
    "|= src": _ior,
    "checked(src)": checked,
    "CheckedDict(src)": CheckedDict,
    "CheckedDict(src, kw)": _init_with_kwargs,
}

WRITERS: dict[str, Callable[[CheckedDict[Any, Any], int], Any]] = {
    # A zero-sum update of the first and the last key: a torn copy has a non-zero sum.
    "update pair": lambda s, i: s.update({HKey(0): i, HKey(N - 1): -i}),
    # Deleting a key the copy has not reached: dict's key-by-key copy raises KeyError.
    "delete": lambda s, i: s.pop(HKey(N - 1 - i % 2)),
}


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("form", list(COPIES))
def test_copy_is_one_read_against_a_writer_at_every_step(form: str, writer: str) -> None:
    src: CheckedDict[Any, Any] = checked({HKey(i): 0 for i in range(N)}, name="src")
    before = {k.n: v for k, v in dict.items(src)}
    me = threading.get_ident()
    want, done, stop = threading.Event(), threading.Event(), threading.Event()
    outcomes: list[str] = []

    def write() -> None:
        i = 0
        while True:
            assert want.wait(WAIT), "the copier never asked"
            want.clear()
            if stop.is_set():
                return
            i += 1
            try:
                WRITERS[writer](src, i)
                outcomes.append("written")
            except ConcurrentReadWriteError:
                outcomes.append("refused")
            except KeyError:
                outcomes.append("absent")
            done.set()

    def hook() -> None:
        if threading.get_ident() == me:  # the copier: let the writer try, now
            want.set()
            assert done.wait(WAIT), "the writer never answered"
            done.clear()

    t = threading.Thread(target=write, name="writer", daemon=True)
    t.start()
    HKey.hook = hook
    try:
        result = COPIES[form](src)
    finally:
        HKey.hook = None
        stop.set()
        want.set()
        t.join(WAIT)
    assert not t.is_alive()
    assert outcomes, "the copy never hashed a key: the test proves nothing"
    got = {k.n: v for k, v in dict.items(result)}
    assert got == before, (got, outcomes)  # complete, and no later write in it
    # Every write attempted while the copy was reading was refused; a deep copy reads
    # first and hashes after (when copying into the new map), so writes may land then.
    if form != "copy.deepcopy":
        assert set(outcomes) == {"refused"}, outcomes


def test_copy_while_a_write_is_in_progress_is_refused_to_the_copier() -> None:
    """The other order: the copier arrives while another thread is inside a write."""
    src: CheckedDict[Any, Any] = checked({HKey(i): 0 for i in range(N)}, name="src")
    entered, release = threading.Event(), threading.Event()
    me = threading.get_ident()

    def hold_hook() -> None:
        if threading.get_ident() != me:
            entered.set()
            assert release.wait(WAIT)

    def writer() -> None:
        src[HKey(0)] = 1

    HKey.hook = hold_hook
    t = threading.Thread(target=writer, name="holder", daemon=True)
    try:
        t.start()
        assert entered.wait(WAIT)  # the writer is inside its write (hashing the key)
        HKey.hook = None
        for fn in COPIES.values():
            with pytest.raises(ConcurrentReadWriteError):  # refused before copying
                fn(src)
    finally:
        HKey.hook = None
        release.set()
        t.join(WAIT)
    assert not t.is_alive()
    assert src[HKey(0)] == 1


def test_copies_and_writers_real_threads(fast_switch: None) -> None:
    """Real threads, no hooks: copies race zero-sum updates. Every copy is complete and
    consistent (sum 0, all keys) or a ConcurrentMapMisuse error; never anything else."""
    src: CheckedDict[Any, Any] = checked({HKey(i): 0 for i in range(N)}, name="src")
    stop = threading.Event()
    errors: list[BaseException] = []
    copies = [0, 0]  # complete copies, per copier thread
    forms = [f for f in COPIES if f != "copy.deepcopy"]

    def copier(j: int) -> None:
        try:
            i = 0
            while not stop.is_set() or copies[j] == 0:  # once the writer is done, it succeeds
                form = forms[(i + j) % len(forms)]
                i += 1
                try:
                    got = {k.n: v for k, v in dict.items(COPIES[form](src))}
                except ConcurrentMapMisuse:
                    continue
                assert set(got) == set(range(N)) and sum(got.values()) == 0, (form, got)
                copies[j] += 1
        except BaseException as e:
            errors.append(e)

    copiers = [threading.Thread(target=copier, args=(j,), daemon=True) for j in range(2)]
    for c in copiers:
        c.start()
    for i in range(1, 2000):
        with contextlib.suppress(ConcurrentMapMisuse):
            WRITERS["update pair"](src, i)
    stop.set()
    for c in copiers:
        c.join(WAIT)
        assert not c.is_alive()
    assert not errors, errors[0]
    assert sum(copies) > 0
    final = {k.n: v for k, v in dict.items(src)}
    assert set(final) == set(range(N)) and sum(final.values()) == 0
