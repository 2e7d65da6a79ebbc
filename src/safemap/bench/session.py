"""Run a whole benchmark: choose implementations and workloads, measure every cell in
interleaved order, run the latency pass, and advise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .advisor import recommend
from .catalog import all_workloads, select_workloads
from .config import BenchConfig
from .environment import environment
from .latency import measure_latency
from .registry import Impl, Skipped, discover, select
from .results import BenchResults, ImplInfo, Measurement, RoundResult
from .runner import plan as plan_cells
from .runner import run_cell
from .workload import Workload

__all__ = ["Plan", "Reporter", "make_plan", "run_plan"]


class Reporter:
    """Progress callbacks (the CLI drives a rich progress bar with them); no-ops here."""

    def start(self, total: int) -> None:
        """``total`` steps are coming."""

    def step(self, label: str) -> None:
        """A step begins; ``label`` says what it measures."""


@dataclass(frozen=True)
class Plan:
    """What a run will measure."""

    config: BenchConfig
    impls: list[Impl]
    skipped: list[Skipped]
    workloads: list[Workload]


def make_plan(config: BenchConfig) -> Plan:
    """Resolve the configuration's names against what is installed.

    Raises ``ValueError`` for an unknown implementation or a workload pattern that
    matches nothing. An implementation named with ``--impl`` but not installed is
    reported as skipped, not an error.
    """
    impls, skipped = discover()
    if config.impls:
        wanted = {n.lower() for n in config.impls}
        skipped = [s for s in skipped if s.name.lower() in wanted]
        missing = {s.name.lower() for s in skipped}
        impls = select(impls, [n for n in config.impls if n.lower() not in missing])
    workloads = all_workloads(keys=config.keys, capacity=config.capacity, custom=config.custom)
    if config.workloads:
        workloads = select_workloads(workloads, config.workloads)
    elif config.custom is not None:
        workloads = [w for w in workloads if w.info.family == "custom"]
    return Plan(config, impls, skipped, workloads)


def _impl_infos(plan: Plan) -> list[ImplInfo]:
    infos = [
        ImplInfo(
            name=i.name,
            kind=i.kind,
            safe=i.safe,
            available=True,
            summary=i.summary,
            strength=i.strength,
            cost=i.cost,
            non_atomic=tuple(sorted(i.non_atomic)),
        )
        for i in plan.impls
    ]
    infos += [
        ImplInfo(
            name=s.name,
            kind=s.kind,
            safe=True,
            available=False,
            skipped_reason=s.reason,
            install=s.install,
        )
        for s in plan.skipped
    ]
    return infos


def run_plan(
    plan: Plan,
    *,
    command: str,
    reporter: Reporter | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BenchResults:
    """Measure everything in ``plan`` and return the results with recommendations."""
    reporter = reporter or Reporter()
    config = plan.config
    cells = plan_cells(plan.workloads, plan.impls, config.threads, config.rounds)
    latency_steps = config.latency_rounds * len(plan.impls) if config.latency_rounds else 0
    reporter.start(len(cells) + latency_steps)
    created = clock().isoformat(timespec="seconds")
    env = environment()  # before the run: its load average is the other processes'

    measurements: dict[tuple[str, str, int], Measurement] = {}
    for cell in cells:
        reporter.step(f"{cell.workload.name} · {cell.impl.name} · {cell.threads} thr")
        key = (cell.workload.name, cell.impl.name, cell.threads)
        m = measurements.setdefault(key, Measurement(*key))
        outcome = run_cell(
            cell.workload,
            cell.impl.factory,
            cell.threads,
            duration=config.duration,
            ops_per_thread=config.ops,
        )
        m.rounds.append(RoundResult(outcome.ops, outcome.seconds))
        m.exceptions += outcome.exceptions
        m.anomalies += outcome.anomalies
        m.lost += outcome.verdict.lost
        m.checked = outcome.verdict.known_state
        for problem in [*outcome.errors, *outcome.verdict.problems]:
            if problem not in m.problems:
                m.problems.append(problem)

    latency = []
    if latency_steps:
        latency = measure_latency(
            plan.impls,
            rounds=config.latency_rounds,
            tick=lambda: reporter.step("per-operation latency"),
        )

    results = BenchResults(
        created=created,
        command=command,
        environment=env,
        config=config.to_dict(),
        implementations=_impl_infos(plan),
        workloads=[w.info for w in plan.workloads],
        measurements=list(measurements.values()),
        latency=latency,
    )
    results.recommendations = recommend(results)
    return results
