"""``@safemap.cached``: memoize a function in a :class:`~safemap.Cache`, loading each
argument tuple once however many threads (or event loops, for ``async def``) ask.

A drop-in for ``functools.lru_cache`` and ``cachetools.cached``: ``cache_info()``,
``cache_clear()`` and ``cache_parameters()`` as ``lru_cache`` has them; the cache itself
is ``wrapper.cache``. Guarantees in ``docs/cache.md`` ("@cached").
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, overload

from . import Cache

__all__ = ["CacheInfo", "cached"]

F = TypeVar("F", bound=Callable[..., Any])


class CacheInfo(NamedTuple):
    """What ``cache_info()`` returns, as ``functools.lru_cache``'s: ``hits`` are calls
    answered without running the function (a caller that waited for another's call of
    the same arguments included), ``misses`` the calls that ran it."""

    hits: int
    misses: int
    maxsize: int | None
    currsize: int


@overload
def cached(maxsize: F, ttl: float | None = None, typed: bool = False) -> F: ...
@overload
def cached(
    maxsize: int | None = 128,
    ttl: float | None = None,
    typed: bool = False,
    *,
    policy: str = "tinylfu",
) -> Callable[[F], F]: ...


def cached(
    maxsize: Any = 128,
    ttl: float | None = None,
    typed: bool = False,
    *,
    policy: str = "tinylfu",
) -> Any:
    """Memoize a function (or method, or ``async def``) in a ``Cache(maxsize, ttl=ttl,
    policy=policy)``.

    Concurrent calls with equal arguments run the function once: the others wait for its
    result (threads: ``get_or_compute``; coroutines, from any event loop and thread:
    ``aget_or_compute``, where a cancelled waiter leaves the call running for the others).
    An exception is not cached: every caller waiting for that call gets it, and the next
    call runs the function again. Arguments must be hashable (``TypeError`` otherwise), as
    for ``lru_cache``. ``@cached`` without parentheses uses ``maxsize=128``.
    """
    if callable(maxsize) and not isinstance(maxsize, int):
        return cached(128, ttl, typed, policy=policy)(maxsize)
    if maxsize is not None and (isinstance(maxsize, bool) or not isinstance(maxsize, int)):
        raise TypeError(f"maxsize must be an int or None, not {type(maxsize).__name__}")

    def decorate(fn: F) -> F:
        from ..native._core import CachedFunction
        from ..protocol.singleflight import call_once, flights, owner_path

        cache: Cache[Any, Any] = Cache(maxsize=maxsize, ttl=ttl, policy=policy)
        table = flights(cache)  # shared with cache.get_or_compute: one load per key
        wrapper: Any
        if inspect.iscoroutinefunction(fn):
            make_key = CachedFunction._make_key
            count_call = cache._count_call
            get = cache.get
            absent: Any = table  # never a cached value: private

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                key = make_key(args, kwargs, typed)
                value = get(key, absent)
                count_call()  # after the read: an unhashable key is not a call
                if value is not absent:
                    return value
                return await cache.aget_or_compute(key, lambda _k: fn(*args, **kwargs))

            wrapper = async_wrapper
        else:
            # The call, the lookup and a miss's load in C (call_once's owner path on the
            # same flight table); a miss that must wait for another caller's load runs
            # call_once(cache, table, fn, count, key, args, kwargs).
            wrapper = CachedFunction(
                cache,
                call_once,
                (cache, table, fn, cache._count_load),
                typed,
                owner=owner_path(table, fn),
            )

        since = [0, 0]  # calls, misses at the last cache_clear()

        def counts() -> tuple[int, int]:
            raw = cache._stats_raw()
            return raw["calls"], raw["loads"] + raw["load_failures"]

        def cache_info() -> CacheInfo:
            calls, misses = counts()
            calls, misses = calls - since[0], misses - since[1]
            return CacheInfo(max(calls - misses, 0), misses, maxsize, len(cache))

        def cache_clear() -> None:
            """Empty the cache and restart the counts of ``cache_info()``."""
            cache.clear()
            since[:] = counts()

        def cache_parameters() -> dict[str, Any]:
            return {"maxsize": maxsize, "typed": typed, "ttl": ttl, "policy": policy}

        functools.update_wrapper(wrapper, fn)
        wrapper.cache = cache
        wrapper.cache_info = cache_info
        wrapper.cache_clear = cache_clear
        wrapper.cache_parameters = cache_parameters
        return wrapper  # type: ignore[no-any-return]

    return decorate
