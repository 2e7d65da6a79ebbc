"""The data of a benchmark run and its JSON form (schema ``safemap-bench/1``).

Everything the outputs show comes from :class:`BenchResults`; ``results.json`` is
``BenchResults.to_json()`` and :meth:`BenchResults.from_json` reads it back unchanged. The
schema is documented field by field in ``docs/bench.md``; a change that removes or
renames a field changes :data:`SCHEMA`.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "SCHEMA",
    "BenchResults",
    "ImplInfo",
    "LatencyResult",
    "Measurement",
    "Recommendation",
    "RoundResult",
    "WorkloadInfo",
]

SCHEMA = "safemap-bench/1"


@dataclass(frozen=True)
class WorkloadInfo:
    """What a workload is: the definition shown in the report and stored in the JSON."""

    name: str
    family: str  # "go-sync-map", "xsync", "conc-map-bench", "contention", "atomicity", "custom"
    anchor: str  # the benchmark it reproduces, and how it was scaled
    description: str  # the per-operation body, precisely
    profile: str  # a short phrase: what dominates (used in recommendation reasons)
    ops: tuple[str, ...]  # the BenchMap operations it calls
    known_state: bool  # its final state is known exactly and verified
    bounded: str  # "duration" or "ops"


@dataclass(frozen=True)
class ImplInfo:
    """An implementation, available or skipped."""

    name: str
    kind: str  # "safemap" or "peer"
    safe: bool
    available: bool
    summary: str = ""
    strength: str = ""  # why it wins with parallel threads (in a recommendation's reason)
    cost: str = ""  # why its calls are cheap: the reason on GIL builds
    non_atomic: tuple[str, ...] = ()
    skipped_reason: str | None = None
    install: str | None = None


@dataclass(frozen=True)
class RoundResult:
    """One timed run of one (workload, implementation, threads) cell."""

    ops: int
    seconds: float

    @property
    def throughput(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Measurement:
    """All rounds of one (workload, implementation, threads) cell, and its checks."""

    workload: str
    impl: str
    threads: int
    rounds: list[RoundResult] = field(default_factory=list)
    exceptions: int = 0
    anomalies: int = 0  # per-operation results that contradict the workload's definition
    lost: int = 0  # updates missing from the verified final state
    problems: list[str] = field(default_factory=list)  # what the checks found, in words
    checked: bool = False  # the final state was known and verified

    @property
    def throughput(self) -> float:
        """Median throughput over the rounds, in operations per second (all threads)."""
        if not self.rounds:
            return 0.0
        return statistics.median(r.throughput for r in self.rounds)

    @property
    def ns_per_op(self) -> float:
        """Mean time one thread spends per operation: ``threads / throughput``."""
        t = self.throughput
        return self.threads / t * 1e9 if t > 0 else 0.0

    @property
    def correct(self) -> bool:
        """No exception, no anomaly, no lost update, no problem found."""
        return not (self.exceptions or self.anomalies or self.lost or self.problems)

    @property
    def status(self) -> str:
        return "ok" if self.correct else "failed"

    def failure_summary(self) -> str:
        """A few words on what failed (empty when correct)."""
        parts = []
        if self.lost:
            parts.append(f"lost {self.lost}")
        if self.anomalies:
            parts.append(f"{self.anomalies} wrong results")
        if self.exceptions:
            parts.append(f"{self.exceptions} exceptions")
        if self.problems and not parts:
            parts.append("checks failed")
        return ", ".join(parts)


@dataclass(frozen=True)
class LatencyResult:
    """Single-thread cost of one operation on one implementation."""

    impl: str
    op: str
    median_ns: float
    p90_ns: float
    samples: int


@dataclass(frozen=True)
class Recommendation:
    """The advisor's choice for one workload."""

    workload: str
    impl: str | None  # None when no implementation qualified
    runner_up: str | None
    speedup: float | None  # impl's score / runner_up's score
    limit_ratio: float | None  # impl's score / the unsafe dict's score, if measured
    reason: str


def _ints(d: dict[str, Any], *names: str) -> None:
    for name in names:
        d[name] = int(d[name])


@dataclass
class BenchResults:
    """A whole run: environment, configuration, definitions, measurements, advice."""

    created: str
    command: str
    environment: dict[str, Any]
    config: dict[str, Any]
    implementations: list[ImplInfo]
    workloads: list[WorkloadInfo]
    measurements: list[Measurement] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    schema: str = SCHEMA

    # ------------------------------------------------------------------ queries

    def impl(self, name: str) -> ImplInfo:
        return next(i for i in self.implementations if i.name == name)

    def measured_impls(self) -> list[str]:
        """Names of the implementations that ran, in registry order."""
        ran = {m.impl for m in self.measurements}
        return [i.name for i in self.implementations if i.name in ran]

    def thread_counts(self) -> list[int]:
        return sorted({m.threads for m in self.measurements})

    def cells(self, workload: str) -> list[Measurement]:
        return [m for m in self.measurements if m.workload == workload]

    def cell(self, workload: str, impl: str, threads: int) -> Measurement | None:
        for m in self.measurements:
            if (m.workload, m.impl, m.threads) == (workload, impl, threads):
                return m
        return None

    def recommendation(self, workload: str) -> Recommendation | None:
        return next((r for r in self.recommendations if r.workload == workload), None)

    # --------------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for m_dict, m in zip(d["measurements"], self.measurements, strict=True):
            m_dict["throughput"] = m.throughput
            m_dict["ns_per_op"] = m.ns_per_op
            m_dict["status"] = m.status
            for r_dict, r in zip(m_dict["rounds"], m.rounds, strict=True):
                r_dict["throughput"] = r.throughput
        return {"schema": d.pop("schema"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResults:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document (schema: {d.get('schema')!r})")
        measurements = []
        for m in d["measurements"]:
            m = {k: v for k, v in m.items() if k not in ("throughput", "ns_per_op", "status")}
            m["rounds"] = [RoundResult(int(r["ops"]), float(r["seconds"])) for r in m["rounds"]]
            _ints(m, "threads", "exceptions", "anomalies", "lost")
            m["problems"] = list(m["problems"])
            measurements.append(Measurement(**m))
        return cls(
            created=d["created"],
            command=d["command"],
            environment=dict(d["environment"]),
            config=dict(d["config"]),
            implementations=[
                ImplInfo(**{**i, "non_atomic": tuple(i["non_atomic"])})
                for i in d["implementations"]
            ],
            workloads=[WorkloadInfo(**{**w, "ops": tuple(w["ops"])}) for w in d["workloads"]],
            measurements=measurements,
            latency=[LatencyResult(**x) for x in d["latency"]],
            recommendations=[Recommendation(**r) for r in d["recommendations"]],
            schema=d["schema"],
        )

    @classmethod
    def from_json(cls, text: str) -> BenchResults:
        return cls.from_dict(json.loads(text))
