"""Every workload, by family, and selection by name, glob pattern or family."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from .atomicity import atomicity_workloads
from .bustle import bustle_workloads
from .contention import contention_workloads
from .gosync import GO_WORKLOADS
from .mixes import MixSpec, custom_workload, xsync_workloads
from .workload import Workload

__all__ = ["FAMILIES", "all_workloads", "select_workloads"]

FAMILIES: tuple[str, ...] = (
    "go-sync-map",
    "xsync",
    "conc-map-bench",
    "contention",
    "atomicity",
    "custom",
)


def all_workloads(
    *, keys: int = 1000, capacity: int, custom: MixSpec | None = None
) -> list[Workload]:
    """The built-in workloads (and the user's mix, if any), in report order."""
    workloads: list[Workload] = [*GO_WORKLOADS]
    workloads += xsync_workloads(keys)
    workloads += bustle_workloads(capacity)
    workloads += contention_workloads(keys)
    workloads += atomicity_workloads()
    if custom is not None:
        workloads.append(custom_workload(custom))
    return workloads


def select_workloads(workloads: Sequence[Workload], patterns: Iterable[str]) -> list[Workload]:
    """The workloads matching any pattern: a name, a glob (``LoadOrStore*``) or a family,
    case-insensitive. Raises ``ValueError`` for a pattern that matches nothing."""
    patterns = [p.strip().lower() for p in patterns if p.strip()]
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {
            w.name
            for w in workloads
            if fnmatch.fnmatchcase(w.name.lower(), pattern) or w.info.family == pattern
        }
        if not hits:
            raise ValueError(
                f"no workload matches {pattern!r}; names: {', '.join(w.name for w in workloads)}"
                f"; families: {', '.join(FAMILIES)}"
            )
        chosen |= hits
    return [w for w in workloads if w.name in chosen]
