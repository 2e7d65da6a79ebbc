"""``ActorMap``: a dict owned by one thread and reached only through messages."""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Any, TypeVar

from ..protocol import MapClosedError
from ..protocol.mapping import IterationGauge
from ..protocol.stats import MapStats
from ._breaker import CircuitBreaker
from ._lifecycle import new_map, track_for_fork, track_owner_thread
from ._mailbox import Mailbox, Request
from ._owned import OwnedMap, stage
from ._owner import Owner
from ._stats import check_options, map_stats, normalize_timeout

__all__ = ["ActorMap"]

K = TypeVar("K")
V = TypeVar("V")

_serial = itertools.count(1)


def _serve(owner_ref: weakref.ref[Owner[Any, Any]], mailbox: Mailbox) -> None:
    """The owner thread: run requests one at a time until the mailbox closes and empties.

    It holds the mailbox, and the owner (the dict) only while it runs a request; between
    requests it keeps a weak reference. A running thread is a root for the garbage
    collector, so a strong reference here would keep the dict alive, and with it anything
    the dict holds: a map stored in itself (``m["self"] = m``) would never be collected and
    its thread would run for ever. Held weakly, such a map is an ordinary collectable cycle:
    its finalizer closes the mailbox, which ends this loop. While a request runs, its caller
    holds the map, so the owner cannot be collected from under it.
    """
    owner = owner_ref()
    if owner is None:
        return
    owner.ident = threading.get_ident()
    del owner
    try:
        while (req := mailbox.take()) is not None:
            owner = owner_ref()
            if owner is None:  # unreachable: the request's caller holds the map
                req.error = MapClosedError("the map was garbage-collected")
                req.done.release()
                continue
            try:
                req.result = owner.run(req.op, req.args, req.kind)
            except BaseException as exc:  # delivered to the caller; the owner keeps serving
                req.error = exc
                owner.failed += 1
            owner.completed += 1
            done = req.done
            # Drop our references to the request (and so to its result) and to the owner
            # *before* waking the caller: once the caller's call returns, the owner thread
            # must not keep alive anything the call removed from the map or returned (the
            # protocol's identity rule), nor the dict itself (see above).
            del req, owner
            done.release()
    finally:
        owner = owner_ref()
        if owner is not None:
            owner.ident = None


class _Runner:
    """Starts the owner thread of one ActorMap, and starts a new one in a forked child.

    Referenced by the map only (the thread holds the mailbox and a weak reference to the
    owner, not this), so it lives exactly as long as the map: a map dropped before a fork is
    not revived."""

    __slots__ = ("__weakref__", "daemon", "mailbox", "name", "owner", "thread")

    def __init__(self, owner: Owner[Any, Any], mailbox: Mailbox, name: str, daemon: bool):
        self.owner = owner
        self.mailbox = mailbox
        self.name = name
        self.daemon = daemon
        self.thread: threading.Thread | None = None
        track_for_fork(self)

    def start(self) -> None:
        thread = threading.Thread(
            target=_serve,
            args=(weakref.ref(self.owner), self.mailbox),
            name=self.name,
            daemon=self.daemon,
        )
        track_owner_thread(thread, self.mailbox)
        self.thread = thread
        thread.start()

    def after_fork_in_child(self) -> None:
        # The dict is as the fork left it: between requests, or inside one whose owner
        # thread is gone here (a compute callback that had not returned: its entry is
        # unchanged; an execute function: whatever it had done so far).
        self.owner.after_fork_in_child()
        self.mailbox.after_fork_in_child()
        if not self.mailbox.closed:
            self.start()


class ActorMap(OwnedMap[K, V]):
    """A map owned by one thread that serves every call, in order, from a bounded queue.

    Implements the whole :class:`~safemap.ConcurrentMapping` protocol. Each call is one
    request: the caller puts it in the queue and waits; the owner thread runs requests one
    at a time against a plain ``dict``. So every call is atomic with no lock around the
    data, and :meth:`execute` runs any multi-key logic atomically, in order.

    Choose it for multi-key invariants, strict ordering of updates, or slow per-entry work
    that must be serialized anyway; not for latency: every call is a hand-off between
    threads (see ``docs/actor.md`` for the measured cost).

    Options (keyword-only; these names cannot be keyword items):

    - ``maxsize``: capacity of the queue (a positive int).
    - ``timeout``: default deadline in seconds for every call (``None``: wait for ever).
    - ``name``: name of the owner thread.
    - ``daemon``: make the owner a daemon thread (default ``False``: at interpreter exit
      it finishes what is queued; it never keeps the process alive by itself).
    - ``breaker``: a :class:`~safemap.actor.CircuitBreaker`, or ``None`` for none.

    Guarantees:

    - **Backpressure.** When the queue is full a call waits for a slot until its deadline,
      then raises :class:`~safemap.MapBusyError`; ``execute(..., block=False)`` raises at
      once. ``stats()`` shows the queue depth and the rejected calls.
    - **Deadlines.** A call whose deadline passes before the owner starts it is withdrawn
      and *never applied*: it raises ``MapBusyError``. One the owner already started runs
      to completion, its effect takes place, and the caller gets ``TimeoutError`` (the
      result is dropped). ``MapBusyError`` and ``MapClosedError`` always mean "no effect".
    - **Sentinels.** ``MISSING`` and ``DELETE`` are never stored: a method given one as a
      value raises ``TypeError`` in the caller, before anything is queued; a callback
      returning ``MISSING`` raises it too, leaving the map unchanged.
    - **Failures are the caller's.** A request that raises re-raises in its caller with its
      traceback; the owner keeps serving.
    - **Re-entry.** Calls made on the owner thread (from a callback, an ``execute``
      function, a key's ``__eq__``) run inline instead of deadlocking, under the
      protocol's re-entry rules. A blocking dependency *between* owners (map A's request
      waits for map B while B's waits for A) deadlocks like two locks would; deadlines
      break it.
    - **Lifecycle.** ``close()`` (or leaving a ``with`` block) stops accepting calls,
      finishes (``drain=True``) or rejects what is queued, and joins the owner. Calls after
      close raise :class:`~safemap.MapClosedError`. A map that is garbage-collected without
      ``close()`` stops its owner thread (after the queue drains); one still open at
      interpreter exit is closed, draining, once the program's other threads have ended
      (see ``_lifecycle``). In a forked child the map works, with a new owner thread and
      the data as it was at the fork.
    """

    __slots__ = ("__weakref__", "_finalizer", "_mailbox", "_options_", "_owner", "_runner")

    def __init__(
        self,
        other: Any = (),
        /,
        *,
        maxsize: int = 1024,
        name: str | None = None,
        timeout: float | None = None,
        daemon: bool = False,
        breaker: CircuitBreaker | None = None,
        **kwargs: V,
    ) -> None:
        check_options("ActorMap", name=name, daemon=daemon, breaker=breaker)
        self._options_: dict[str, Any] = {
            "maxsize": maxsize,
            "name": name,
            "timeout": normalize_timeout(timeout),
            "daemon": daemon,
            "breaker": breaker,
        }
        # The initial items go straight into the dict: the owner has not started yet.
        owner: Owner[K, V] = Owner(stage(other, kwargs))
        mailbox = Mailbox(maxsize, breaker)
        self._owner = owner
        self._mailbox = mailbox
        self._finalizer = weakref.finalize(self, mailbox.close, True)
        self._runner = _Runner(owner, mailbox, name or f"ActorMap-{next(_serial)}", daemon)
        self._runner.start()
        new_map(self)

    def _options(self) -> dict[str, Any]:
        return dict(self._options_)

    # ------------------------------------------------------------------ transport

    def _call(
        self,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        kind: int,
        *,
        timeout: float | None = None,
        block: bool = True,
    ) -> Any:
        owner = self._owner
        if owner.ident == threading.get_ident():
            return owner.run_inline(op, args, kind)
        mailbox = self._mailbox
        if mailbox.held_here():
            # A finalizer the garbage collector runs inside one of the mailbox's critical
            # sections on this thread: wait for the owner with the lock released.
            with mailbox.unlocked():
                return self._send(op, args, kind, timeout, block)
        return self._send(op, args, kind, timeout, block)

    def _send(
        self,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        kind: int,
        timeout: float | None,
        block: bool,
    ) -> Any:
        """Queue a request, wait for its outcome until its deadline, and return it."""
        timeout = self._options_["timeout"] if timeout is None else normalize_timeout(timeout)
        req = Request(op, args, kind, None if timeout is None else monotonic() + timeout)
        mailbox = self._mailbox
        try:
            mailbox.put(req, block)
            finished = req.wait()
        except BaseException:
            # Refused, or interrupted (KeyboardInterrupt on the main thread) anywhere from
            # admission to the end of the wait: withdraw the request if it was admitted and
            # the owner has not started it, so a call that raised is never applied later.
            mailbox.abandon(req, timed_out=False)
            raise
        if not finished:
            mailbox.abandon(req, timed_out=True)
        return req.outcome()

    # ------------------------------------------------------------------ lifecycle

    @property
    def _thread(self) -> threading.Thread:
        thread = self._runner.thread
        assert thread is not None
        return thread

    @property
    def name(self) -> str:
        """The name of the owner thread."""
        return self._runner.name

    @property
    def closed(self) -> bool:
        """Whether the map was closed (it accepts no more calls)."""
        return self._mailbox.closed

    @property
    def _iterations(self) -> IterationGauge:
        return self._owner.iterations

    def _collect_stats(self) -> MapStats:
        # ``stats()`` (the protocol's): the operation counters and, in ``mailbox``, the
        # queue's depth, admissions, waits, timeouts, rejections and the breaker's state.
        return map_stats("ActorMap", self._mailbox.stats(self._owner), self._owner)

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting calls and stop the owner thread.

        With ``drain`` (the default) the owner first runs every queued request; without,
        queued requests fail with ``MapClosedError`` and are not applied (the one running
        completes). Then waits up to ``timeout`` seconds (default: for ever) for the owner
        to exit, raising ``TimeoutError`` if it is still running a request then. Called
        from the owner thread itself (from a request), it does not wait. Idempotent.
        """
        self._mailbox.close(drain)
        self._finalizer.detach()
        if threading.current_thread() is self._thread:
            return
        self._thread.join(normalize_timeout(timeout))
        if self._thread.is_alive():
            raise TimeoutError(f"{self._thread.name} is still running a request")

    def __enter__(self) -> ActorMap[K, V]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
