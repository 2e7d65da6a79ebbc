"""``safemap.Cache``: a bounded concurrent map (W-TinyLFU or LRU eviction, ttl, an
eviction callback, single-flight loading) and the ``@safemap.cached`` decorator.

The storage, the policy and every hot method are C (``safemap.native._core.CacheBase``,
``src/safemap/native/sm_cache.c``); this module combines them with the protocol ABC. The
guarantees are in ``docs/cache.md``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping

from .._typing import TYPE_CHECKING, Any, TypeVar
from ..native import _COUNTERS as _NATIVE_COUNTERS
from ..native import _core
from ..native import _run_transaction as _run_native_transaction
from ..protocol import ConcurrentMapping
from ..protocol.mapping import _singleflight

if TYPE_CHECKING:
    from ..protocol.stats import MapStats
    from .decorator import CacheInfo, cached

__all__ = ["Cache", "CacheInfo", "cached"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_ABSENT: Any = object()

# The native maps' counters, plus what only a cache counts.
_COUNTERS = (
    *_NATIVE_COUNTERS,
    "loads",
    "load_failures",
    "evictions_size",
    "evictions_expired",
)


class Cache(_core.CacheBase, ConcurrentMapping[K, V]):
    """A concurrent map with a bound: W-TinyLFU (or LRU) eviction, ttl, ``on_evict``.

    ``Cache(maxsize=None, *, ttl=None, weigher=None, policy="tinylfu", on_evict=None,
    timer=None)``; like every map it also takes initial items (``Cache({"a": 1},
    maxsize=10)``); a positional int is ``maxsize`` (``Cache(128)``).

    - ``maxsize``: the bound on the number of entries, or on their total weight with a
      ``weigher(key, value) -> int`` (called with no lock held, except for values made by
      a compute-family callback, which it weighs under the lock); ``None``: unbounded.
      The bound holds at every instant for every reader: an insert evicts BEFORE its
      entry becomes visible, so ``len()``, iteration and ``snapshot()`` never see more.
      An entry heavier than ``maxsize`` is not kept (evicted at once).
    - ``policy``: ``"tinylfu"`` (W-TinyLFU: a 1% LRU window, a frequency sketch as
      admission filter, a segmented LRU main space) or ``"lru"``.
    - ``ttl``: seconds each entry lives after it was written; an expired entry is never
      returned (every read path checks the deadline) and is removed lazily.
      Per-entry deadlines: ``bind(k, v, ttl=...)`` (``docs/scoped.md``).
    - ``on_evict(key, value, cause)``: called once per entry the cache removes on its own
      (``cause`` is ``"size"`` or ``"expired"``; explicit deletes, overwrites and
      ``clear()`` are not evictions), with no lock held, after the write that evicted
      returns its lock; it may use the cache. An exception from it goes to
      ``sys.unraisablehook``.
    - ``timer``: the clock of ``ttl`` (a callable returning seconds, never going
      backwards; default: the monotonic clock), e.g. ``safemap.protocol.expiry.
      ManualClock`` in tests.

    Every protocol guarantee holds (``docs/protocol.md``): atomic calls, weakly
    consistent iteration, ``RecursiveUpdateError`` on re-entry. Reads (``m[k]``, ``get``,
    ``in``, ``load``) take no lock; every write takes the cache's one lock (the policy's).
    ``get_or_compute``/``aget_or_compute`` load a missing key once however many threads or
    event loops ask (the protocol's single-flight), and count ``loads``/``load_failures``.
    """

    __slots__ = ()

    # ------------------------------------------------------------------ options

    @property
    def maxsize(self) -> int | None:
        """The bound (entries, or total weight with a weigher); ``None``: unbounded."""
        return self._options()["maxsize"]  # type: ignore[no-any-return]

    @property
    def ttl(self) -> float | None:
        """Seconds an entry lives after its write, or ``None``."""
        return self._options()["ttl"]  # type: ignore[no-any-return]

    @property
    def policy(self) -> str:
        """``"tinylfu"`` or ``"lru"``."""
        return self._options()["policy"]  # type: ignore[no-any-return]

    # --------------------------------------------------------------- primitives

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        """Run ``fn(view)`` holding the cache's lock and return its result; the view's
        changes land all at once when ``fn`` returns (readers wait for the commit), or
        not at all if it raises. Entries the commit adds are subject to the bound."""
        result: T = self._transact(_run_native_transaction, fn)  # one C call: see docs/native.md
        return result

    def _collect_stats(self) -> MapStats:
        """Exact counters since the cache was made: the map's, plus ``loads``,
        ``load_failures`` and evictions by cause (``docs/cache.md``, "Statistics")."""
        from ..protocol.stats import MapStats

        raw = self._stats_raw()
        return MapStats(kind=type(self).__name__, **{name: raw[name] for name in _COUNTERS})

    # ------------------------------------------------------------------ loading

    # get_or_compute is CacheBase's (C): a hit is one read, and each load is counted in
    # stats() (sm_glue.c, sm_get_or_compute_method).

    async def aget_or_compute(
        self, key: K, loader: Callable[[K], Awaitable[V]], *, timeout: float | None = None
    ) -> V:
        """``get_or_compute`` for asyncio (``ConcurrentMapping.aget_or_compute``): one load
        per key across threads and event loops; a cancelled waiter does not cancel it."""
        value = self.get(key, _ABSENT)
        if value is not _ABSENT:
            return value
        return await _singleflight().aget_or_compute(  # type: ignore[no-any-return]
            self, key, loader, timeout, self._count_load
        )


def __getattr__(name: str) -> Any:
    if name in ("cached", "CacheInfo"):
        from . import decorator

        return getattr(decorator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
