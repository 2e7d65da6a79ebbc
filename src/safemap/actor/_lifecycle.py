"""Process-wide lifecycle of the actor maps: interpreter exit, and fork.

**Exit.** An ActorMap's owner thread is not a daemon by default, so at interpreter exit it
finishes what is queued instead of being killed mid-request. But it waits for requests for
ever, and Python joins non-daemon threads *before* it runs ``atexit`` handlers or
finalizers, so a map still referenced at exit (a module global, say) would keep the process
alive for ever. The *exit watcher* prevents that with public API only: a daemon thread that
joins the main thread (the join returns once the main thread has finished and the
interpreter starts shutting down), then waits until every other non-daemon thread that is
not an owner has ended, as the interpreter itself does, and only then closes every map with
``drain=True``. So threads still running after the main thread can use their maps to the
end, queued work is done, and then the owners exit and the interpreter with them. One
watcher serves the process; it starts with the first non-daemon owner.

**Fork.** A forked child has only the thread that called ``fork``: no owner threads and no
event-loop threads. After a fork, every live map is told so in the child
(``after_fork_in_child``): an ActorMap starts a new owner thread over the same dict (the
child sees the data as it was at the fork), an AsyncActorMap detaches from its loop and
binds to the loop it is next used on.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["new_map", "track_for_fork", "track_owner_thread"]


class _ForkAware(Protocol):
    def after_fork_in_child(self) -> None: ...


class _Closable(Protocol):
    def close(self, drain: bool) -> None: ...


_lock = threading.Lock()
_fork_aware: weakref.WeakSet[_ForkAware] = weakref.WeakSet()
_closables: weakref.WeakSet[_Closable] = weakref.WeakSet()
_owners: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_watcher: threading.Thread | None = None
_exiting = False

# Set only while a leak check runs (safemap.testing.no_leaks): called with every new map.
on_new_map: Callable[[object], None] | None = None


def new_map(m: object) -> None:
    """Tell a running leak check that ``m`` was just constructed (nothing otherwise)."""
    hook = on_new_map
    if hook is not None:
        hook(m)


def track_for_fork(obj: _ForkAware) -> None:
    """Call ``obj.after_fork_in_child()`` in every forked child while ``obj`` lives."""
    with _lock:
        _fork_aware.add(obj)


def track_owner_thread(owner: threading.Thread, mailbox: _Closable) -> None:
    """Make sure a non-daemon owner thread (not started yet) cannot hold up interpreter
    exit: ``mailbox`` is closed, draining, once every other non-daemon thread has ended.
    An owner registered after the watcher began closing maps (by a daemon thread, during
    shutdown) is made a daemon instead: nothing would close it any more."""
    global _watcher
    if owner.daemon:
        return
    with _lock:
        if _exiting:
            owner.daemon = True
            return
        _owners.add(owner)
        _closables.add(mailbox)
        if _watcher is None:
            _watcher = threading.Thread(
                target=_close_maps_at_exit, name="safemap-actor-exit-watcher", daemon=True
            )
            _watcher.start()


def _close_maps_at_exit() -> None:
    global _exiting
    main = threading.main_thread()
    main.join()
    current = threading.current_thread()
    while True:
        with _lock:
            owners = set(_owners)
        others = [
            t
            for t in threading.enumerate()
            if not t.daemon
            and t.is_alive()
            and t is not main
            and t is not current
            and t not in owners
        ]
        if not others:
            break
        for thread in others:
            thread.join()
    with _lock:
        _exiting = True
        closables = list(_closables)
    for mailbox in closables:
        mailbox.close(drain=True)


def _after_fork_in_child() -> None:
    global _lock, _watcher, _exiting
    _lock = threading.Lock()  # it may have been held by a thread that does not exist here
    _watcher = None
    _exiting = False
    _owners.clear()
    _closables.clear()
    for obj in list(_fork_aware):
        obj.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
