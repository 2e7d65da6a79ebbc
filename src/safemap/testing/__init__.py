"""Tools to prove a concurrent map correct: record histories, check linearizability, stress.

- :class:`History` records concurrent calls (thread, call, result, invocation/response time).
- :func:`check_linearizable` decides whether a history is linearizable (Wing & Gong / Lowe,
  P-compositional, memoized, time-bounded: ``ok`` is ``True``, ``False`` or ``None``).
- :func:`stress` runs random, seeded, contended workloads on any protocol map and checks them;
  a map that blocks fails it with :class:`StuckOperationsError` instead of hanging it.

See ``docs/testing.md`` for the algorithm, its guarantees and its limits.
"""

from .checker import Counterexample, LinearizabilityResult, MapModel, check_linearizable
from .history import History, Operation, Recorder
from .model import Outcome
from .stress import StressResult, StuckOperation, StuckOperationsError, stress

__all__ = [
    "Counterexample",
    "History",
    "LinearizabilityResult",
    "MapModel",
    "Operation",
    "Outcome",
    "Recorder",
    "StressResult",
    "StuckOperation",
    "StuckOperationsError",
    "check_linearizable",
    "stress",
]
