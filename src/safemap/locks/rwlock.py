"""``RWLock``: a writer-preferring readers-writer lock that refuses to deadlock on misuse.

State, guarded by ``_cond``'s mutex:
- ``_readers`` maps each reading thread's ident to how many read holds it has;
- ``_writer`` is the ident of the writing thread, or ``None``;
- ``_writers_waiting`` counts threads blocked in ``acquire_write``.
Invariant: ``_writer is not None`` implies every key of ``_readers`` is ``_writer`` (the
writer may take nested read holds; nobody else reads while a writer holds the lock).

Writer preference: a thread that does not already hold the lock is not admitted as a reader
while a writer waits, so a stream of readers cannot starve writers. A thread that already
holds the lock (read or write) is always admitted as a reader again: refusing it would
deadlock it against the waiting writer, which waits for that very hold to go.

Interrupts: every wait is inside ``try``/``finally``, so a ``KeyboardInterrupt`` (or any
exception) raised while a thread waits undoes that thread's bookkeeping and wakes the
others; the lock stays usable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["RWLock"]


def _deadline(timeout: float | None) -> float | None:
    """The monotonic deadline for ``timeout`` (``None`` or ``-1``: wait forever)."""
    if timeout is None or timeout == -1:
        return None
    if timeout < 0:
        raise ValueError("timeout must be a non-negative number, -1 or None")
    return time.monotonic() + timeout


class RWLock:
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
    - **Interrupt-safe while waiting**: an exception such as ``KeyboardInterrupt`` raised
      while a thread waits leaves the lock consistent and usable. (Like any lock written in
      Python, e.g. ``threading.Semaphore``, an exception raised by a signal handler at the
      exact instant a hold is being recorded or released can leave that hold taken.)

    ``timeout`` is in seconds; ``None`` or ``-1`` waits forever, ``0`` only tries.
    """

    __slots__ = ("_cond", "_readers", "_writer", "_writers_waiting")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers: dict[int, int] = {}
        self._writer: int | None = None
        self._writers_waiting = 0

    # --------------------------------------------------------------- acquiring

    def acquire_read(self, timeout: float | None = None) -> bool:
        """Take a read hold; return ``False`` if ``timeout`` expired first."""
        deadline = _deadline(timeout)
        me = threading.get_ident()
        with self._cond:
            held = self._readers.get(me, 0)
            if held or self._writer == me:
                self._readers[me] = held + 1
                return True
            if not self._wait(self._can_read, deadline):
                return False
            self._readers[me] = 1
            return True

    def acquire_write(self, timeout: float | None = None) -> bool:
        """Take the write hold; return ``False`` if ``timeout`` expired first.

        Raises ``RuntimeError`` at once if this thread holds the read or the write lock.
        """
        deadline = _deadline(timeout)
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                raise RuntimeError("RWLock: this thread already holds the write lock")
            if me in self._readers:
                raise RuntimeError(
                    "RWLock: this thread holds the read lock and asked for the write lock; "
                    "upgrading would deadlock (release the read lock first)"
                )
            self._writers_waiting += 1
            try:
                if self._wait(self._can_write, deadline):
                    self._writer = me
            finally:
                self._writers_waiting -= 1
                if self._writer != me:
                    # Timed out or interrupted: readers held back for us may go now.
                    self._cond.notify_all()
            return self._writer == me

    def _can_read(self) -> bool:
        return self._writer is None and not self._writers_waiting

    def _can_write(self) -> bool:
        return self._writer is None and not self._readers

    def _wait(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Wait on ``_cond`` (held) until ``ready()`` or the deadline; return ``ready()``."""
        while not ready():
            if deadline is None:
                self._cond.wait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    # --------------------------------------------------------------- releasing

    def release_read(self) -> None:
        """Release one read hold of this thread; ``RuntimeError`` if it holds none."""
        me = threading.get_ident()
        with self._cond:
            held = self._readers.get(me, 0)
            if not held:
                raise RuntimeError("RWLock: release_read() by a thread that holds no read lock")
            if held > 1:
                self._readers[me] = held - 1
            else:
                del self._readers[me]
                if not self._readers:
                    self._cond.notify_all()

    def release_write(self) -> None:
        """Release this thread's write hold; ``RuntimeError`` if it does not hold it."""
        with self._cond:
            if self._writer != threading.get_ident():
                raise RuntimeError("RWLock: release_write() by a thread that does not hold it")
            self._writer = None
            self._cond.notify_all()

    # ------------------------------------------------------------ introspection

    def held_by_current_thread(self) -> bool:
        """Whether the calling thread holds the lock, for reading or for writing."""
        me = threading.get_ident()
        return self._writer == me or me in self._readers

    def write_held_by_current_thread(self) -> bool:
        """Whether the calling thread holds the write lock."""
        return self._writer == threading.get_ident()

    def __repr__(self) -> str:
        with self._cond:
            state = (
                "write-locked"
                if self._writer is not None
                else f"{sum(self._readers.values())} read holds"
                if self._readers
                else "unlocked"
            )
            return f"<{type(self).__name__} {state}, {self._writers_waiting} writers waiting>"

    # ------------------------------------------------------- context managers

    def read(self, timeout: float | None = None) -> _Hold:
        """``with lock.read():`` holds the read lock for the block.

        Raises ``TimeoutError`` if ``timeout`` expires before the lock is acquired.
        """
        return _Hold(self.acquire_read, self.release_read, timeout, "read")

    def write(self, timeout: float | None = None) -> _Hold:
        """``with lock.write():`` holds the write lock for the block.

        Raises ``TimeoutError`` if ``timeout`` expires before the lock is acquired.
        """
        return _Hold(self.acquire_write, self.release_write, timeout, "write")


class _Hold:
    """Context manager for one read or write hold of an :class:`RWLock`."""

    __slots__ = ("_acquire", "_kind", "_release", "_timeout")

    def __init__(
        self,
        acquire: Callable[[float | None], bool],
        release: Callable[[], None],
        timeout: float | None,
        kind: str,
    ) -> None:
        self._acquire = acquire
        self._release = release
        self._timeout = timeout
        self._kind = kind

    def __enter__(self) -> None:
        if not self._acquire(self._timeout):
            raise TimeoutError(f"RWLock: {self._kind} lock not acquired within {self._timeout}s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()
