"""Shared machinery of the synchronization models (``_sync*``): who counts as "user code",
reversible patching, and a metaclass that keeps ``isinstance`` working across the swap.

The rule of the detector is that edges come only from synchronization the *program*
performs. The standard library and safemap's own modules use locks, conditions and queues
internally (``queue.Queue`` has a mutex, ``logging`` handlers have locks, ``LockedMap`` has
an ``RLock``); those must create no edges. So when a modelled factory (``threading.Lock``,
``queue.Queue``, ...) is called, :func:`caller_is_internal` looks at the *creating* frame:
standard-library files (not ``site-packages``), frozen modules and safemap's own package
(except the modules listed in ``USER_MODULES``, which are example programs) get the
original, uninstrumented object; everything else gets the modelled one.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import sys
import sysconfig
import threading
from typing import Any

__all__ = [
    "USER_MODULES",
    "FactoryMeta",
    "Patches",
    "caller_is_internal",
    "file_is_internal",
]

_MISSING: Any = object()


def _dirs() -> tuple[str, ...]:
    paths: set[str] = set()
    config = sysconfig.get_paths()
    for raw in (
        config.get("stdlib"),
        config.get("platstdlib"),
        os.path.dirname(os.__file__),
        os.path.dirname(threading.__file__),
    ):
        if raw:
            for variant in (os.path.abspath(raw), os.path.realpath(raw)):
                paths.add(variant.rstrip(os.sep) + os.sep)
    return tuple(sorted(paths))


_STDLIB_DIRS = _dirs()
_SAFEMAP_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
#: Modules inside the safemap package that are user programs (their locks are modelled).
USER_MODULES = ("cli/demo.py", "cli/demo" + os.sep)
_THIRD_PARTY_MARKERS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)

# filename -> internal? Written with single dict stores (atomic), read without a lock.
_verdicts: dict[str, bool] = {}


def _judge(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return True
    if filename.startswith(_SAFEMAP_DIR):
        rest = filename[len(_SAFEMAP_DIR) :]
        return not rest.startswith(USER_MODULES)
    if any(marker in filename for marker in _THIRD_PARTY_MARKERS):
        return False
    return filename.startswith(_STDLIB_DIRS)


def file_is_internal(filename: str) -> bool:
    """Whether code in ``filename`` is the standard library or safemap's own (whose
    synchronization objects are not modelled)."""
    verdict = _verdicts.get(filename)
    if verdict is None:
        verdict = _judge(filename)
        if len(_verdicts) > 4096:
            _verdicts.clear()
        _verdicts[filename] = verdict
    return verdict


def caller_is_internal(depth: int) -> bool:
    """Whether the frame ``depth`` levels above the caller of this function is internal
    (``depth=1``: the caller's caller, e.g. the code that called a factory's ``__new__``)."""
    try:
        frame = sys._getframe(depth + 1)
    except ValueError:
        return False
    return file_is_internal(frame.f_code.co_filename)


# Modelled class -> the original it stands in for (a type, for isinstance/issubclass).
_originals: dict[type, type] = {}


class FactoryMeta(type):
    """Metaclass of the modelled classes installed in place of a module's original class:
    ``isinstance(x, threading.Event)`` stays true for an original ``Event`` (one created
    before install, or by the standard library), and ``issubclass`` likewise. Only the
    exact replacement class gets this widening; user subclasses of it check normally."""

    def __instancecheck__(cls, instance: Any) -> bool:
        if type.__instancecheck__(cls, instance):
            return True
        original = _originals.get(cls)
        return original is not None and isinstance(instance, original)

    def __subclasscheck__(cls, subclass: Any) -> bool:
        if type.__subclasscheck__(cls, subclass):
            return True
        original = _originals.get(cls)
        return (
            original is not None and isinstance(subclass, type) and issubclass(subclass, original)
        )


def stand_in(model: type, original: type, module: str, name: str) -> None:
    """Register ``model`` as the stand-in of ``original`` and give it the original's name
    (so reprs and error messages read as before)."""
    _originals[model] = original
    model.__module__ = module
    model.__name__ = name
    model.__qualname__ = name


class Patches:
    """A reversible list of attribute assignments on modules and classes. :meth:`undo`
    restores each attribute exactly (re-set to the old value, or deleted if the owner had
    none of its own), in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def set(self, owner: Any, name: str, value: Any) -> None:
        old = vars(owner).get(name, _MISSING)
        self._undo.append((owner, name, old))
        setattr(owner, name, value)

    def undo(self) -> None:
        while self._undo:
            owner, name, old = self._undo.pop()
            if old is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(owner, name)
            else:
                setattr(owner, name, old)


# The raw lock type, for stand-ins of ``threading.Lock`` (a function on 3.11/3.12).
RAW_LOCK_TYPE: type = _thread.LockType
