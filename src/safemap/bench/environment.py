"""The machine and interpreter a run measured on (stored in ``results.json``)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from .._version import __version__

__all__ = ["describe_build", "environment", "gil_enabled"]


def gil_enabled() -> bool:
    """Whether the GIL is on now (always on builds that are not free-threaded)."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else bool(is_enabled())


def describe_build() -> str:
    """``"GIL build"`` or ``"free-threaded build, GIL disabled"`` (or enabled)."""
    if not hasattr(sys, "_is_gil_enabled"):
        return "GIL build"
    return "free-threaded build, GIL " + ("enabled" if gil_enabled() else "disabled")


def _processor() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not on every platform
        return None


def environment() -> dict[str, Any]:
    """Python version and build, machine, CPU count, load, safemap version."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "build": describe_build(),
        "gil_enabled": gil_enabled(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _processor(),
        "cpu_count": os.cpu_count(),
        "load_average": _load_average(),
        "safemap": __version__,
        "switch_interval": sys.getswitchinterval(),
    }
