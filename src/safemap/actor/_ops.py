"""The operations an actor map's owner runs: one function per protocol method, on the dict.

Every function takes the owner's dict first and runs on the owner (its thread, or its event
loop's thread), one request at a time, so it has the dict to itself for its whole duration:
no lock is needed and no other request can interleave, even while a key's ``__eq__`` or a
callback runs Python code. That is the whole atomicity argument of the actor maps.

A miss is reported with :data:`ABSENT` and turned into ``KeyError`` by the caller, so no
exception is built on the owner and carried across threads for an ordinary miss. Functions
never return ``ABSENT`` for a present entry: it is private, so no user value can be it.

``MISSING`` and ``DELETE`` are never stored as values. A value the *caller* gives is checked
on the caller's side (:func:`check_storable`, before anything is sent to the owner); a
value a compute-family callback returns is checked here, on the owner, before the dict is
touched (:func:`_from_callback`): ``DELETE`` means remove, ``MISSING`` is a ``TypeError``.

Values an operation replaces or removes are not released inside it: a ``__del__`` they run
would find the owner inside an operation, where a write to the map is refused as a nested
write. An operation that drops values keeps them and returns :class:`Released`; the owner
releases them once the operation is over (see ``Owner.run``), where the ``__del__`` may use
the map like any other code on the owner.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

from ..protocol import DELETE, MISSING, TransactionView
from ..protocol.mapping import _same_value, commit_counts

__all__ = ["ABSENT", "Released", "check_storable", "current", "is_sentinel"]

ABSENT: Any = object()
T = TypeVar("T")


class _ThreadState(threading.local):
    collecting = 0  # > 0 while the garbage collector runs on this thread (finalizers)
    nested_writes = 0  # writes run inline on this thread in the middle of an operation
    owner: Any = None  # the Owner whose operation runs on this thread (its counters)


_here = _ThreadState()
current = _here
"""``current.owner``: the ``Owner`` running an operation on this thread (set by
``Owner.run``); the operations below count into it."""


def _observe_collections(phase: str, info: dict[str, int]) -> None:
    # Called by the collector on the thread it runs on, before and after it runs finalizers.
    _here.collecting += 1 if phase == "start" else -1


gc.callbacks.append(_observe_collections)


def in_collection() -> bool:
    """Whether the calling thread is running the garbage collector's finalizers."""
    return _here.collecting > 0


def count_nested_write() -> None:
    """Note a write run inline in the middle of an operation (see :func:`compute`)."""
    _here.nested_writes += 1


class Released:
    """An operation's result plus what it replaced or removed, for the owner to release
    after the operation (see the module doc). Never reaches a caller."""

    __slots__ = ("garbage", "result")

    def __init__(self, result: Any, garbage: object) -> None:
        self.result = result
        self.garbage = garbage


def is_sentinel(value: object) -> bool:
    return value is MISSING or value is DELETE


def check_storable(value: object) -> None:
    """Raise ``TypeError`` if ``value`` is ``MISSING`` or ``DELETE``: never stored."""
    if value is MISSING or value is DELETE:
        raise TypeError(f"{value!r} is a sentinel and cannot be stored as a value")


def _looked_up(found: bool) -> None:
    """Count a point read of the running owner (see ``_owner``: one writer)."""
    owner = _here.owner
    if found:
        owner.hits += 1
    else:
        owner.misses += 1


def _changed(inserts: int = 0, updates: int = 0, deletes: int = 0) -> None:
    """Count a write of the running owner that changed the dict."""
    owner = _here.owner
    owner.inserts += inserts
    owner.updates += updates
    owner.deletes += deletes
    if owner.iterations.active:
        owner.writes_during_iteration += 1


def _from_callback(new: Any) -> Any:
    """A compute-family callback's result: ``DELETE`` passes (it means remove); ``MISSING``
    raises, before the caller touches the dict, so the map is left unchanged."""
    if new is MISSING:
        check_storable(new)
    return new


def load(d: dict[Any, Any], key: Any) -> tuple[Any, bool]:
    value = d.get(key, ABSENT)
    _looked_up(value is not ABSENT)
    return (None, False) if value is ABSENT else (value, True)


def length(d: dict[Any, Any]) -> int:
    return len(d)


def _whole(copy: Callable[[Any], T], source: Any) -> T:
    """``copy(source)``, a copy of the dict, taken again until no write ran during it.

    Building the copy allocates, and an allocation can start the garbage collector on the
    owner, whose finalizers' writes to the map run inline (see ``_owner``): the dict may
    change under the copy, which then raises "changed during iteration" or holds a mix of
    before and after. Each retry is after those writes, so the copy is of one state."""
    while True:
        seen = _here.nested_writes
        try:
            out = copy(source)
        except RuntimeError:
            if _here.nested_writes == seen:
                raise
            continue
        if _here.nested_writes == seen:
            return out


def items(d: dict[Any, Any]) -> list[tuple[Any, Any]]:
    return _whole(list, d.items())


def copy(d: dict[Any, Any]) -> dict[Any, Any]:
    return _whole(dict.copy, d)


def store(d: dict[Any, Any], key: Any, value: Any) -> Released:
    old = d.get(key, ABSENT)
    d[key] = value
    _stored(old, value)
    return Released(None, old)


def _stored(old: Any, new: Any) -> None:
    """Count a store of ``new`` over ``old`` (``ABSENT``: a new key); storing the very
    object the key held changes nothing and counts nothing."""
    if old is ABSENT:
        _changed(inserts=1)
    elif old is not new:
        _changed(updates=1)


def update(d: dict[Any, Any], staged: dict[Any, Any]) -> Released:
    old = []
    for key, value in staged.items():
        previous = d.get(key, ABSENT)
        old.append(previous)
        d[key] = value
        _stored(previous, value)
    return Released(None, old)


def popitem(d: dict[Any, Any]) -> Any:
    if not d:
        return ABSENT
    item = d.popitem()
    _changed(deletes=1)
    return item


def clear(d: dict[Any, Any]) -> Released:
    old = _whole(dict.copy, d)
    d.clear()  # nothing allocates between the copy's last check and here
    if old:
        _changed(deletes=len(old))
    return Released(None, old)


def load_or_store(d: dict[Any, Any], key: Any, value: Any) -> tuple[Any, bool]:
    size = len(d)
    actual = d.setdefault(key, value)  # one lookup; the size tells whether it inserted
    if len(d) == size:
        return actual, True
    _changed(inserts=1)
    return actual, False


def load_and_delete(d: dict[Any, Any], key: Any) -> tuple[Any, bool]:
    value = d.pop(key, ABSENT)
    if value is ABSENT:
        return None, False
    _changed(deletes=1)
    return value, True


def swap(d: dict[Any, Any], key: Any, value: Any) -> tuple[Any, bool]:
    old = d.get(key, ABSENT)
    d[key] = value
    _stored(old, value)
    return (None, False) if old is ABSENT else (old, True)


def compare_and_swap(d: dict[Any, Any], key: Any, old: Any, new: Any) -> bool | Released:
    current = d.get(key, ABSENT)
    if current is ABSENT or not _same_value(current, old):
        return False
    d[key] = new
    _stored(current, new)
    return Released(True, current)


def compare_and_delete(d: dict[Any, Any], key: Any, old: Any) -> bool | Released:
    current = d.get(key, ABSENT)
    if current is ABSENT or not _same_value(current, old):
        return False
    del d[key]
    _changed(deletes=1)
    return Released(True, current)


# The compute family and transactions run a user callback between reading the dict and
# writing it. A finalizer the garbage collector runs on the owner meanwhile (at any allocation
# of the callback) may write the map, inline (see ``_owner``): the callback may then have
# computed from a stale entry, so it runs again on the current one, and the finalizer's write
# is ordered before the call instead of being overwritten by it. ``_here.nested_writes`` is
# read as an attribute (no call): nothing can run between the last check and the write but
# a key's own ``__hash__``/``__eq__``.


def compute(d: dict[Any, Any], key: Any, fn: Callable[[Any, Any], Any]) -> Any:
    while True:
        seen = _here.nested_writes
        old = d.get(key, ABSENT)
        new = _from_callback(fn(key, MISSING if old is ABSENT else old))
        if _here.nested_writes == seen:
            break
    return _apply(d, key, old, new)


def _apply(d: dict[Any, Any], key: Any, old: Any, new: Any) -> Released:
    """The write of the compute family: ``new`` (or ``DELETE``) replaces ``old``."""
    if new is DELETE:
        if old is not ABSENT:
            del d[key]
            _changed(deletes=1)
        return Released(None, old)
    if new is not old:  # a callback returning the value it got changes nothing
        d[key] = new
        _stored(old, new)
    return Released(new, old)


def compute_if_absent(d: dict[Any, Any], key: Any, factory: Callable[[Any], Any]) -> Any:
    seen = _here.nested_writes
    old = d.get(key, ABSENT)
    if old is not ABSENT:
        return old
    # At most once per key: racers are later requests, and find it stored.
    new = _from_callback(factory(key))
    if _here.nested_writes != seen:
        old = d.get(key, ABSENT)  # a finalizer's write came first: it may have stored key
        if old is not ABSENT:
            return old
    if new is DELETE:
        return None
    d[key] = new
    _changed(inserts=1)
    return new


def compute_if_present(d: dict[Any, Any], key: Any, fn: Callable[[Any, Any], Any]) -> Any:
    while True:
        seen = _here.nested_writes
        old = d.get(key, ABSENT)
        if old is ABSENT:
            return None
        new = _from_callback(fn(key, old))
        if _here.nested_writes == seen:
            break
    return _apply(d, key, old, new)


def merge(d: dict[Any, Any], key: Any, value: Any, fn: Callable[[Any, Any], Any]) -> Any:
    while True:
        seen = _here.nested_writes
        old = d.get(key, ABSENT)
        new = value if old is ABSENT else _from_callback(fn(old, value))
        if _here.nested_writes == seen:
            break
    return _apply(d, key, old, new)


def delete_matching(d: dict[Any, Any], pairs: list[tuple[Any, Any]]) -> Released:
    """The removal pass of ``delete_if``: remove each entry still holding the value seen."""
    removed = []
    for key, seen in pairs:
        current = d.get(key, ABSENT)
        if current is not ABSENT and _same_value(current, seen):
            del d[key]
            removed.append(current)
    if removed:
        _changed(deletes=len(removed))
    return Released(len(removed), removed)


def transaction(d: dict[Any, Any], fn: Callable[[MutableMapping[Any, Any]], Any]) -> Any:
    # The overlay keeps a raising fn from leaving half its changes: nothing reaches d until
    # fn has returned. (Undo is not needed for atomicity here, the owner runs nothing else
    # meanwhile; it is needed for "exceptions leave no trace".)
    while True:
        seen = _here.nested_writes
        view: TransactionView[Any, Any] = TransactionView(d)
        try:
            result = fn(view)
        except BaseException:
            view._close()
            if _here.nested_writes != seen:
                continue  # fn saw the dict change under it (see above): run it again
            raise
        if _here.nested_writes == seen:
            break
        view._close()
    view._commit(d)
    inserts, updates, deletes = commit_counts(view)
    if inserts or updates or deletes:
        _changed(inserts, updates, deletes)
    return Released(result, view)  # the view's undo log holds what the commit replaced


def execute(d: dict[Any, Any], fn: Callable[..., Any], *args: Any) -> Any:
    return fn(d, *args)
