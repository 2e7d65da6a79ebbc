"""Per-map side state for opt-in features, kept outside the map object.

The maps keep no spare attribute for features most of them never use (bound entries,
in-flight loads, hot keys, sampled latency): the native maps have a fixed C layout and
the pure ones ``__slots__``. A feature keeps its state in the map's *sidecar*, a plain
namespace created on first use and dropped when the map is collected.

Invariants:
- One sidecar per live map, whichever thread asks first (creation is under one lock,
  taken by ``_locked.locked`` so that no signal handler's exception can leave it held;
  lookups of an existing sidecar take no lock).
- The table holds the map weakly: a sidecar never keeps its map alive. A sidecar must not
  hold a strong reference to its map either (that would be a cycle through the table,
  which is never collected); features hold ``weakref.ref(map)`` where they need the map.
- A map's id can be reused after it is collected: an entry is found only through its live
  weak reference, and the collected map's entry is removed by that reference's callback.
"""

from __future__ import annotations

import threading
import weakref
from types import SimpleNamespace

from ._locked import locked

__all__ = ["existing_sidecar", "sidecar"]

_lock = threading.RLock()  # re-entered by `forget`, a weakref callback GC may run while held
_table: dict[int, tuple[weakref.ref[object], SimpleNamespace]] = {}


def existing_sidecar(obj: object) -> SimpleNamespace | None:
    """The sidecar of ``obj`` if some feature made one, else ``None`` (never creates)."""
    entry = _table.get(id(obj))
    if entry is not None and entry[0]() is obj:
        return entry[1]
    return None


def sidecar(obj: object) -> SimpleNamespace:
    """The sidecar of ``obj``, created empty on first use. ``obj`` must support weak
    references (every safemap map does)."""
    found = existing_sidecar(obj)
    if found is not None:
        return found
    return locked(_lock, _create, obj)


def _create(obj: object) -> SimpleNamespace:
    found = existing_sidecar(obj)
    if found is None:
        key = id(obj)

        def forget(ref: weakref.ref[object], key: int = key) -> None:
            locked(_lock, _forget, key, ref)

        found = SimpleNamespace()
        _table[key] = (weakref.ref(obj, forget), found)
    return found


def _forget(key: int, ref: weakref.ref[object]) -> None:
    entry = _table.get(key)
    if entry is not None and entry[0] is ref:
        del _table[key]
