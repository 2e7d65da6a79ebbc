"""``RWLock``: a writer-preferring readers-writer lock that refuses to deadlock on misuse.

The state machine is written in C (``_rwlock.c``) so that nothing that can strike the
calling thread at an arbitrary instant can find it half-updated:

- a signal handler (``KeyboardInterrupt``) runs only after a *wait* was interrupted, once
  the waiting thread has left the lock's bookkeeping entirely; if it raises, the exception
  propagates with nothing held and nothing registered; otherwise the acquire resumes;
- the cyclic garbage collector cannot start inside a state change (no state change runs
  Python code or allocates a Python object), so a finalizer, ``__del__`` or weakref
  callback that uses the lock from the thread holding it behaves as any nested call;
- no internal mutex is held while a thread blocks or runs Python code.

Holds belong to threads, keyed by a per-thread serial number that is never reused: a hold
leaked by a thread that ended stays taken and never passes to a later thread that gets the
same thread identifier. After ``os.fork()`` the child forgets every hold and waiter of the
threads that do not exist there and keeps those of the forking thread.
"""

from __future__ import annotations

import os

from ._rwlock import RWLockCore, _after_fork_in_child

__all__ = ["RWLock"]


class RWLock(RWLockCore):
    """A readers-writer lock: many readers at once, or one writer.

    Guarantees:

    - **Writer-preferring**: once a writer waits, threads that do not already hold the lock
      are not admitted as readers until that writer has had its turn.
    - **No silent deadlock on misuse**: a thread holding the read lock that asks for the
      write lock gets ``RuntimeError`` at once (an upgrade would deadlock against other
      readers); so does a thread asking again for the write lock it holds, and a thread
      releasing a hold it does not have.
    - **Re-entrant reads**: a thread holding the lock (read or write) may take read holds
      again; each must be released.
    - **Interrupt-safe**: an exception such as ``KeyboardInterrupt`` raised by a signal
      handler while a thread waits leaves the lock consistent and usable, with nothing
      taken by that thread; a hold is taken or released entirely or not at all. ``with
      lock.read():`` / ``with lock.write():`` release on any exception raised in the block.
    - **Safe from the garbage collector**: a finalizer (``__del__``, ``weakref.finalize``,
      a weakref callback) that runs on a thread inside any method of the lock and uses the
      lock behaves as the same call made at that point: it never deadlocks on the lock's
      internals and never corrupts it.
    - **Holds belong to threads**: only the thread that took a hold can release it. A hold
      kept by a thread that ends stays taken (as with ``threading.Lock``) and never passes
      to another thread, even one reusing the dead thread's identifier.
    - **Fork**: in a child process the holds and waits of threads other than the forking
      thread are forgotten; the forking thread keeps its holds.

    ``timeout`` is in seconds; ``None`` or ``-1`` waits forever, ``0`` only tries.
    """

    # safemap.race's model of RWLock keeps its happens-before clocks here (None
    # otherwise); nothing else uses it.
    __slots__ = ("_race",)

    def __init__(self) -> None:
        self._race: object = None


if hasattr(os, "register_at_fork"):
    # Registered at import, before any map module registers its own hook: hooks run in
    # registration order in the child, so maps see their locks already reset.
    os.register_at_fork(after_in_child=_after_fork_in_child)
