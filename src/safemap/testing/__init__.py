"""Tools to prove a concurrent map correct: record histories, check linearizability, stress,
and check that tests leave nothing running.

- :class:`History` records concurrent calls (thread, call, result, invocation/response time).
- :func:`check_linearizable` decides whether a history is linearizable (Wing & Gong / Lowe,
  P-compositional, memoized, time-bounded: ``ok`` is ``True``, ``False`` or ``None``).
- :func:`stress` runs random, seeded, contended workloads on any protocol map and checks them;
  a map that blocks fails it with :class:`StuckOperationsError` instead of hanging it.
- :func:`no_leaks` fails code that leaves threads, open actor maps or pending asyncio tasks
  behind (:class:`LeakError`); ``pytest --safemap-leaks`` applies it to every test.

See ``docs/testing.md`` for the algorithm, its guarantees and its limits.

The names are imported on first use (PEP 562): the package's pytest plugin lives here
and is loaded in every pytest run, so importing the package costs nothing until a tool
is used.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checker import Counterexample, LinearizabilityResult, MapModel, check_linearizable
    from .history import History, Operation, Recorder
    from .leaks import Leak, LeakError, no_leaks
    from .model import Outcome
    from .stress import StressResult, StuckOperation, StuckOperationsError, stress

# Public name -> the module that defines it, imported on first access.
_LAZY: dict[str, str] = {
    "Counterexample": "checker",
    "LinearizabilityResult": "checker",
    "MapModel": "checker",
    "check_linearizable": "checker",
    "History": "history",
    "Operation": "history",
    "Recorder": "history",
    "Leak": "leaks",
    "LeakError": "leaks",
    "no_leaks": "leaks",
    "Outcome": "model",
    "StressResult": "stress",
    "StuckOperation": "stress",
    "StuckOperationsError": "stress",
    "stress": "stress",
}

__all__ = [
    "Counterexample",
    "History",
    "Leak",
    "LeakError",
    "LinearizabilityResult",
    "MapModel",
    "Operation",
    "Outcome",
    "Recorder",
    "StressResult",
    "StuckOperation",
    "StuckOperationsError",
    "check_linearizable",
    "no_leaks",
    "stress",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'safemap.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups are plain module attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps ``safemap.testing.stress`` the function. The import system binds a submodule
    on its package when it is first imported, whoever imports it and whenever; the public
    function ``stress`` shares its submodule's name, and with lazy names that binding
    could come after the function's and replace it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "stress" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
