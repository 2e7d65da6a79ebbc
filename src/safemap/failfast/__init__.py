"""Go-style fail-fast checked dict: :func:`checked` and :class:`CheckedDict`.

``checked(mapping=None, /, *, name=None, confined=False)`` returns a
:class:`CheckedDict`, a C subtype of ``dict`` (``isinstance(d, dict)`` holds, every
method behaves as ``dict``'s) whose operations check for overlapping use by several
threads and raise at once, in the thread that detects it, with Go's messages:

- :class:`ConcurrentWriteError` (``concurrent map writes``): a write while another
  thread is inside a write;
- :class:`ConcurrentReadWriteError` (``concurrent map read and map write``): a write
  while another thread is inside a read, or a read while another thread is inside a
  write;
- :class:`ConcurrentIterationError` (``concurrent map iteration and map write``): a write
  while another thread's iteration is in progress (from its first ``next()`` until the
  iterator is exhausted or dropped), or an iteration step while another thread writes;
- :class:`ThreadConfinementError` (``map confined to thread``, only with
  ``confined=True``): any use by a thread other than the first one that used the map
  after its creation.

Guarantees:

- **Deterministic**: an overlap is detected whenever it happens (not by sampling): a
  write during another thread's iteration is reported even when it keeps the size,
  which plain ``dict`` never notices.
- **Never a false alarm**: an error needs another thread to be inside an operation (or an
  iteration span) of the same map at that moment. Re-entry by the same thread (a key's
  ``__eq__`` reading the dict, nested loops, writing to the dict one is iterating) is
  plain ``dict`` behaviour; strictly sequential use from several threads is fine unless
  ``confined=True``.
- The refused operation does not touch the dict.
- Cheap: a few loads and stores per operation, no stack captured unless an error is
  raised (numbers in ``docs/checked.md``).

Results of copying: ``copy()``, ``copy.copy``, ``copy.deepcopy``, pickling, ``d | other``
and ``CheckedDict.fromkeys`` give a new ``CheckedDict`` (same ``name`` and confinement,
not yet pinned to a thread); ``other | d`` (``other`` a plain dict) gives a plain
``dict``. Each of these, and ``update(d)``, ``|= d``, ``CheckedDict(d)`` and ``checked(d)``
with a ``CheckedDict`` ``d``, reads ``d`` as ONE operation: a write by another thread during
the copy is detected, so a copy is never torn.

In a child made by ``os.fork()``, what other threads (which do not exist there) were doing
with a map is forgotten: the maps are usable in the child.

Not detected (see ``docs/checked.md``): two complete operations that do not overlap in
time (sequential use is not misuse unless confined); access that bypasses the methods (C
code calling ``PyDict_*`` directly, ``dict.__setitem__(d, k, v)``); and copies made by
``dict`` itself (``dict(d)``, ``{**d}``, ``f(**d)``, ``plain.update(d)``), which read ``d``
key by key, each step checked but not the copy as a whole (use ``d.copy()``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, overload

from . import _core
from ._core import CheckedDict
from ._views import CheckedItemsView, CheckedKeysView, CheckedValuesView
from .errors import (
    ConcurrentIterationError,
    ConcurrentMapMisuse,
    ConcurrentReadWriteError,
    ConcurrentWriteError,
    ThreadConfinementError,
    _make_error,
)

__all__ = [
    "CheckedDict",
    "ConcurrentIterationError",
    "ConcurrentMapMisuse",
    "ConcurrentReadWriteError",
    "ConcurrentWriteError",
    "ThreadConfinementError",
    "checked",
]

K = TypeVar("K")
V = TypeVar("V")

_core._set_hooks(_make_error, CheckedKeysView, CheckedValuesView, CheckedItemsView)

if hasattr(os, "register_at_fork"):
    # A fork child has only the forking thread: what other threads were doing with a
    # map (an operation, an iteration, a pin) is forgotten there.
    os.register_at_fork(after_in_child=_core._after_fork_child)


@overload
def checked(
    mapping: None = None, /, *, name: str | None = None, confined: bool = False
) -> CheckedDict[Any, Any]: ...
@overload
def checked(
    mapping: Mapping[K, V] | Iterable[tuple[K, V]],
    /,
    *,
    name: str | None = None,
    confined: bool = False,
) -> CheckedDict[K, V]: ...
def checked(
    mapping: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None = None,
    /,
    *,
    name: str | None = None,
    confined: bool = False,
) -> CheckedDict[Any, Any]:
    """A new :class:`CheckedDict` holding the items of ``mapping`` (a mapping or an
    iterable of pairs, as ``dict(mapping)``).

    ``name`` names the map in error messages (default: its id). ``confined=True`` pins
    the map to the first thread that uses it after this call; any other thread then gets
    :class:`ThreadConfinementError`. Filling the map from ``mapping`` here does not pin
    it.
    """
    return _core._new(mapping, name, confined)
