"""The owner: the only code that touches an actor map's dict, and its re-entry rules.

Every request of an ``ActorMap`` or ``AsyncActorMap`` runs through :meth:`Owner.run`, on the
owner thread (or the owner task's event-loop thread), one at a time. That single fact makes
each request atomic with respect to every other, with no lock around the dict.

A call that arrives *on the owner thread* while a request runs comes from that request's own
user code: a compute callback, a key's ``__eq__``, an ``execute`` function, a finalizer run
by the garbage collector. Queueing it would deadlock (the owner would wait for itself), so it
runs inline, at once, subject to the protocol's re-entry rules:

    while the owner runs          a read        a write       execute / transaction
    nothing (between requests)    inline        inline        inline
    execute(fn)                   inline        inline        inline
    a built-in operation          inline        refused       refused
    transaction(fn)               refused       refused       refused

A call made by a finalizer of the garbage collector (which runs on whatever thread
allocates, the owner included, in the middle of anything) is not the request's own code: it
runs inline at once in every mode, so it is never refused and never waits, and the
operation it interrupted copes (``_ops``: a compute-family callback or a transaction's
function that saw the dict change under it runs again).

A refused call raises ``RecursiveUpdateError`` before touching the dict. Reads inside an
operation are safe because the operation is suspended in user code at a point where the
dict is consistent; a write there would change the entry the operation is computing from,
which is exactly the atomicity the protocol promises. ``execute`` hands its function the
dict itself, so nested calls from it are just more of the same atomic request.

Values a request replaces or removes are released by :meth:`Owner.run` *after* the request,
with the mode restored (see ``_ops.Released``). So their ``__del__``, which runs on the owner
thread, is treated like any other code there: between requests ("nothing" above) its writes
run inline, at once — the owner is the only writer, so that needs no lock and cannot
deadlock — and land before the request's caller is woken.

``mode`` is written and read only on the owner thread, so it needs no lock.

Statistics. The operation counters (``hits`` ... ``writes_during_iteration``) are written by
the operations in ``_ops``, on the owner thread only, one request at a time: one writer, so
every count is exact; ``stats()`` reads them from any thread. :meth:`Owner.run` makes the
owner the running thread's current one (``_ops.current``) for the operation's duration.
Writes an ``execute`` function makes to the dict directly are not seen by the counters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from ..protocol import RecursiveUpdateError
from ..protocol.mapping import IterationGauge
from ._ops import Released, count_nested_write, current, in_collection

__all__ = ["EXEC", "READ", "TXN", "WRITE", "Owner"]

K = TypeVar("K")
V = TypeVar("V")

# What a request does (its "kind").
READ: Final = 0
WRITE: Final = 1
EXEC: Final = 2
TXN: Final = 3

# What the owner is running (its "mode").
_IDLE: Final = 0
_OP: Final = 1
_EXEC: Final = 2
_TXN: Final = 3
_MODE_OF_KIND: Final = (_OP, _OP, _EXEC, _TXN)

_IN_TXN = "the map's own methods cannot be called from inside its transaction(); use the view"
_IN_OP = (
    "cannot write to the map from inside one of its own operations "
    "(a compute-family callback, or a key's __hash__/__eq__)"
)


class Owner(Generic[K, V]):
    """The dict of one actor map and what its owner is running right now."""

    __slots__ = (
        "__weakref__",
        "completed",
        "data",
        "deletes",
        "failed",
        "hits",
        "ident",
        "inserts",
        "iterations",
        "misses",
        "mode",
        "updates",
        "writes_during_iteration",
    )

    def __init__(self, data: dict[K, V]) -> None:
        self.data = data
        # Thread identity of the owner while it runs, else None. Thread ids are reused once
        # a thread ends, so the owner clears it on its way out: a later thread with the same
        # id must not be mistaken for the owner and let onto the dict.
        self.ident: int | None = None
        self.mode = _IDLE
        # Written by the owner only (one writer), read by stats() from any thread.
        self.completed = 0
        self.failed = 0
        # Operation counters: written by ``_ops`` on the owner only (see the module doc).
        self.hits = self.misses = 0
        self.inserts = len(data)  # the initial items, as the other maps count theirs
        self.updates = self.deletes = 0
        self.writes_during_iteration = 0
        # Iterations run on the callers' side (over a list the owner made): a caller starts
        # and ends one under the gauge's lock; the owner reads ``active``.
        self.iterations = IterationGauge()

    def after_fork_in_child(self) -> None:
        """The owner thread does not exist in a forked child: whatever it was running
        there never finishes, and the next owner starts idle."""
        self.ident = None
        self.mode = _IDLE
        self.iterations.after_fork_in_child()

    @property
    def busy(self) -> bool:
        """Whether the owner is inside a request (meaningful on the owner thread only)."""
        return self.mode != _IDLE

    def on_owner_thread(self) -> bool:
        return self.ident == threading.get_ident()

    def run(self, op: Callable[..., Any], args: tuple[Any, ...], kind: int) -> Any:
        """Run one request on the dict and return its result. Called on the owner thread
        only. What the request replaced or removed is released here, after it, so that a
        ``__del__`` it triggers may use the map (see the module doc)."""
        previous = self.mode
        self.mode = _MODE_OF_KIND[kind]
        outer = current.owner
        current.owner = self
        try:
            out = op(self.data, *args)
        finally:
            current.owner = outer
            self.mode = previous
        if type(out) is Released:
            result = out.result
            del out  # releases the garbage: the request is over
            return result
        return out

    def run_inline(self, op: Callable[..., Any], args: tuple[Any, ...], kind: int) -> Any:
        """Run a call made on the owner thread itself, or refuse it (see the module doc)."""
        mode = self.mode
        if mode != _IDLE and in_collection():
            if kind != READ:
                count_nested_write()
            return self.run(op, args, kind)
        if mode == _TXN:
            raise RecursiveUpdateError(_IN_TXN)
        if mode == _OP and kind != READ:
            raise RecursiveUpdateError(_IN_OP)
        return self.run(op, args, kind)
