"""The synchronization the race detector understands, installed by ``race.enable()``.

:func:`install` puts happens-before models in place of the synchronization objects of
``threading``, ``queue``, ``concurrent.futures`` and safemap (its maps and ``RWLock``);
:func:`uninstall` restores every patched module attribute and class attribute exactly.
Both are idempotent. The edges are exactly the list in ``docs/race.md``
("Happens-before"); how each object is modelled is documented in:

- :mod:`._sync_threading`: ``Lock``, ``RLock``, ``Condition``, ``Semaphore``,
  ``BoundedSemaphore``, ``Event``, ``Barrier``, ``Thread`` (and so ``Timer``);
- :mod:`._sync_queue`: ``Queue``, ``LifoQueue``, ``PriorityQueue``, ``SimpleQueue``;
- :mod:`._sync_futures`: ``ThreadPoolExecutor`` and its futures;
- :mod:`._sync_maps`: every ``ConcurrentMapping`` and ``RWLock``.

What is modelled, and from when:

- Locks, conditions, semaphores, events, barriers, queues and ``RWLock`` are modelled when
  **created by user code while installed**: the module attributes (``threading.Lock``,
  ``queue.Queue``, ...) are replaced by modelled classes, which hand out the original,
  unmodelled object when called from the standard library or from safemap's own modules
  (so ``queue``'s mutex, ``logging``'s handler locks, ``LockedMap``'s ``RLock`` and the
  detector's own locks create no edges). **An object created before install creates no
  edges**, and neither does one created through a name bound before install (``from
  threading import Lock`` executed before ``enable()``): enable the detector first
  (``SAFEMAP_RACE`` or the pytest plugin do so before user modules are imported).
  ``isinstance(x, threading.Lock)``-style checks accept both kinds; a user subclass
  defined while installed is modelled.
- ``Thread`` (``start``/``join``/``is_alive``), ``ThreadPoolExecutor``/``Future`` and the
  safemap maps are patched in place: every operation performed while installed is
  modelled, whenever the object was created.

Not modelled (no edges): raw ``_thread`` locks and threads, ``asyncio``, process pools,
``multiprocessing``, futures not made by a thread pool.
"""

from __future__ import annotations

import _thread

from . import _sync_futures, _sync_maps, _sync_queue, _sync_threading
from ._sync_base import Patches

__all__ = ["install", "installed", "uninstall"]

_lock = _thread.allocate_lock()  # serialises install/uninstall
_patches: Patches | None = None


def install() -> None:
    """Start modelling synchronization (see the module docstring); no-op if installed."""
    global _patches
    with _lock:
        if _patches is not None:
            return
        patches = Patches()
        try:
            _sync_threading.install(patches)
            _sync_queue.install(patches)
            _sync_futures.install(patches)
            _sync_maps.install(patches)
        except BaseException:
            _sync_maps.uninstall()
            patches.undo()
            raise
        _patches = patches


def uninstall() -> None:
    """Restore every patched attribute exactly; no-op if not installed. Objects created
    while installed keep their models (their edges stay consistent if the detector is
    enabled again)."""
    global _patches
    with _lock:
        patches = _patches
        if patches is None:
            return
        _patches = None
        _sync_maps.uninstall()
        patches.undo()


def installed() -> bool:
    """Whether the models are in place."""
    return _patches is not None
