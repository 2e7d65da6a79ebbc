"""The implementations ``safemap bench`` measures, discovered by trying imports.

:func:`discover` never fails because an implementation is missing: safemap's native maps
and actor map, and the optional peers, are imported when they can be; one that cannot is
returned as :class:`Skipped` with the reason and the command that installs it. Map types
that ``safemap`` itself exports later are found too (any concrete, thread-callable
:class:`~safemap.ConcurrentMapping` in ``safemap.__all__``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .peers import CereggiiDict, FtUtilsDict, LockedDict, RWLockedDict, UnsafeDict
from .protocol import BenchMap

__all__ = ["Impl", "Skipped", "close_map", "discover", "select"]


@dataclass(frozen=True)
class Impl:
    """One implementation to measure.

    ``safe`` is false only for the bare ``dict``: it is measured as the limit and never
    recommended. ``non_atomic`` names the operations this implementation can only compose
    from several calls; the advisor does not recommend it for a workload using them.
    """

    name: str
    factory: Callable[[], BenchMap]
    kind: str  # "safemap" or "peer"
    summary: str
    safe: bool = True
    non_atomic: frozenset[str] = frozenset()

    @property
    def strength(self) -> str:
        """Why it wins when threads run in parallel (free-threaded builds)."""
        return _WHY.get(self.name, _WHY_FALLBACK)[0]

    @property
    def cost(self) -> str:
        """Why it wins when calls take turns (GIL builds): what makes a call cheap."""
        return _WHY.get(self.name, _WHY_FALLBACK)[1]


@dataclass(frozen=True)
class Skipped:
    """An implementation that is not installed here, and how to install it."""

    name: str
    kind: str  # "safemap" or "peer"
    reason: str
    install: str


def close_map(m: object) -> None:
    """Release what a map holds beyond memory (``ActorMap``'s owner thread)."""
    close = getattr(m, "close", None)
    if callable(close):
        close()


_WHY: dict[str, tuple[str, str]] = {
    # name: (why it wins with parallel threads, why its calls are cheap under the GIL)
    "LockedMap": (
        "one mutex is cheapest when calls rarely overlap",
        "one C-level mutex around a dict: little work per call",
    ),
    "RWLockMap": ("readers share its lock", "a readers-writer lock around a dict"),
    "ConcurrentMap": (
        "its reads take no lock and each write locks one shard",
        "native code with lock-free reads: the least work per call",
    ),
    "SyncMap": (
        "its reads take no lock",
        "native code with lock-free reads: the least work per call",
    ),
    "PersistentMap": (
        "its reads and snapshots take no lock: a snapshot shares the current version",
        "native code; a snapshot is one reference to an immutable version",
    ),
    "Cache": (
        "its reads take no lock (accesses are recorded in per-thread buffers)",
        "native code with lock-free reads; writes keep its bound under one lock",
    ),
    "ActorMap": (
        "one owner thread serves every call in order",
        "one owner thread serves every call in order",
    ),
    "dict+Lock": (
        "one lock is cheapest when calls rarely overlap",
        "a plain dict under one lock: little work per call",
    ),
    "dict+RWLock": ("readers share the lock", "a dict under a readers-writer lock"),
    "cereggii.AtomicDict": ("its operations are lock-free", "lock-free native code"),
    "ft_utils.ConcurrentDict": (
        "its get/set/delete scale on free-threaded builds",
        "native get/set/delete",
    ),
}
_WHY_FALLBACK = ("it was the fastest correct map measured", "the least work per call")

_SAFEMAP_TYPES: tuple[tuple[str, str, str], ...] = (
    # (module, class, install hint when the import fails)
    ("safemap", "LockedMap", "pip install safemap"),
    ("safemap", "RWLockMap", "pip install safemap"),
    (
        "safemap.native",
        "ConcurrentMap",
        "pip install --force-reinstall safemap  (builds the native core; needs a C compiler)",
    ),
    (
        "safemap.native",
        "SyncMap",
        "pip install --force-reinstall safemap  (builds the native core; needs a C compiler)",
    ),
    ("safemap.actor", "ActorMap", "pip install safemap  (safemap.actor ships with safemap)"),
)


def _first_line(doc: str | None) -> str:
    text = " ".join((doc or "").split())
    return text.split(". ")[0].rstrip(".")


def _threaded_map_type(obj: object) -> bool:
    """A ConcurrentMapping whose methods are called from threads (not asyncio)."""
    from safemap import ConcurrentMapping

    return (
        isinstance(obj, type)
        and issubclass(obj, ConcurrentMapping)
        and obj is not ConcurrentMapping
        and not inspect.iscoroutinefunction(getattr(obj, "load", None))
    )


def _safemap_factory(cls: type[Any]) -> Callable[[], BenchMap]:
    if cls.__name__ == "ActorMap":
        return lambda: cls(daemon=True)
    return cls


def _creation_failure(factory: Callable[[], BenchMap]) -> str | None:
    """``None`` if ``factory()`` builds a map (closed again at once), else why not."""
    try:
        close_map(factory())
    except Exception as exc:
        return f"cannot be created: {type(exc).__name__}: {exc}"
    return None


def _safemap_impls() -> tuple[list[Impl], list[Skipped]]:
    found: list[Impl] = []
    skipped: list[Skipped] = []
    seen: set[object] = set()
    candidates: list[tuple[str, object, str]] = []  # name, class, install
    for module, name, install in _SAFEMAP_TYPES:
        try:
            cls: object = getattr(importlib.import_module(module), name)
        except Exception as exc:  # ImportError, or a half-built extension raising anything
            skipped.append(
                Skipped(name, "safemap", f"{module}.{name} cannot be imported: {exc}", install)
            )
            continue
        candidates.append((name, cls, install))
    import safemap

    for name in getattr(safemap, "__all__", ()):
        candidates.append((name, getattr(safemap, name, None), ""))
    for name, cls, install in candidates:
        if cls in seen or not _threaded_map_type(cls):
            continue
        assert isinstance(cls, type)
        seen.add(cls)
        factory = _safemap_factory(cls)
        failure = _creation_failure(factory)
        if failure is not None:
            skipped.append(Skipped(name, "safemap", f"{name} {failure}", install))
            continue
        found.append(Impl(name, factory, "safemap", _first_line(cls.__doc__)))
    return found, skipped


def _available(module: str) -> str | None:
    """``None`` if ``module`` imports, else the reason it does not."""
    try:
        importlib.import_module(module)
    except Exception as exc:
        return f"{module} cannot be imported: {exc}"
    return None


def _peer_impls() -> tuple[list[Impl], list[Skipped]]:
    found = [
        Impl(
            "dict",
            UnsafeDict,
            "peer",
            "a bare dict with no synchronization: the limit, unsafe",
            safe=False,
            non_atomic=UnsafeDict.NON_ATOMIC,
        ),
        Impl(
            "dict+Lock",
            LockedDict,
            "peer",
            "dict with every operation under one threading.Lock",
        ),
    ]
    skipped: list[Skipped] = []
    optional: tuple[tuple[str, str, Callable[[], BenchMap], str, frozenset[str], str], ...]
    optional = (
        (
            "dict+RWLock",
            "readerwriterlock",
            RWLockedDict,
            "dict under readerwriterlock's fair readers-writer lock",
            RWLockedDict.NON_ATOMIC,
            "pip install readerwriterlock",
        ),
        (
            "cereggii.AtomicDict",
            "cereggii",
            CereggiiDict,
            "cereggii's lock-free AtomicDict",
            CereggiiDict.NON_ATOMIC,
            "pip install cereggii",
        ),
        (
            "ft_utils.ConcurrentDict",
            "ft_utils",
            FtUtilsDict,
            "ft_utils' ConcurrentDict (get/set/delete only)",
            FtUtilsDict.NON_ATOMIC,
            "pip install ft_utils  (Python 3.13+)",
        ),
    )
    for name, module, factory, summary, non_atomic, install in optional:
        reason = _available(module)
        if reason is None:
            failure = _creation_failure(factory)
            reason = None if failure is None else f"{name} {failure}"
        if reason is not None:
            skipped.append(Skipped(name, "peer", reason, install))
            continue
        found.append(Impl(name, factory, "peer", summary, non_atomic=non_atomic))
    return found, skipped


def discover() -> tuple[list[Impl], list[Skipped]]:
    """Every implementation that can run here (safemap's first), and the ones skipped."""
    ours, our_skips = _safemap_impls()
    peers, peer_skips = _peer_impls()
    return ours + peers, our_skips + peer_skips


def select(impls: Iterable[Impl], names: Iterable[str]) -> list[Impl]:
    """The implementations named in ``names`` (case-insensitive), in ``impls`` order.

    Raises ``ValueError`` naming any unknown name.
    """
    impls = list(impls)
    wanted = {n.strip().lower() for n in names if n.strip()}
    known = {i.name.lower() for i in impls}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(
            f"unknown implementation(s): {', '.join(unknown)}; "
            f"available: {', '.join(i.name for i in impls)}"
        )
    return [i for i in impls if i.name.lower() in wanted]
