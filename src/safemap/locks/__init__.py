"""Synchronization primitives the maps are built on."""

from . import _rwlock
from .rwlock import RWLock

__all__ = ["RWLock"]


def _register_contention_backend() -> None:
    """Hand the native locks' sampler to the contention profiler's registry
    (``safemap.protocol.contention``), in builds that have it."""
    import importlib

    try:
        contention = importlib.import_module("safemap.protocol.contention")
    except ModuleNotFoundError as exc:  # pragma: no cover - a build without the profiler
        if exc.name != "safemap.protocol.contention":
            raise
        return
    contention.register_backend(_rwlock._set_contention_sampling)


_register_contention_backend()
