"""Type stub of the C extension ``safemap.protocol._locked``: a critical section that no
signal handler's exception can leave locked (see ``_locked.c``)."""

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

class _Lock(Protocol):
    def acquire(self) -> bool: ...
    def release(self) -> None: ...

FREE_THREADED: bool
"""Whether this is a free-threaded build (whether or not the GIL was turned back on)."""

def locked(lock: _Lock, fn: Callable[..., T], /, *args: Any) -> T: ...
