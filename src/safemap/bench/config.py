"""What a run measures: presets (``--quick`` and the thorough default), and the user's
mix from ``--mix`` or a TOML file.

A mix file (all keys but ``[mix]`` optional; the percentages must sum to 100)::

    name = "sessions"        # the workload's name in the report (default "Custom")
    keys = 10000             # key count (default 1000)
    distribution = "zipf"    # "uniform" (default) or "zipf"
    value_size = 64          # bytes per value; 0 (default): small int values
    threads = [1, 2, 4]      # thread counts (default: the preset's)
    prefill = true           # start with every key present (default true)

    [mix]                    # percent of operations
    load = 80
    store = 10
    delete = 5
    load_or_store = 5

Command-line flags (``--keys``, ``--dist``, ``--value-size``, ``--threads``) override the
file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .bustle import QUICK_CAPACITY, THOROUGH_CAPACITY
from .mixes import MIX_OPERATIONS, MixSpec

__all__ = ["BenchConfig", "load_mix_file", "parse_mix", "preset", "with_overrides"]


@dataclass(frozen=True)
class BenchConfig:
    """Everything that decides what a run measures."""

    quick: bool
    duration: float  # seconds per cell and round (duration-bounded workloads)
    threads: tuple[int, ...]
    rounds: int  # interleaved repetitions of every cell; the median is reported
    capacity: int  # conc-map-bench capacity (its operation count)
    latency_rounds: int  # samples per operation in the latency pass (0: skip it)
    keys: int = 1000  # key count of the xsync mixes and IterateWhileWriting
    ops: int | None = None  # an operation budget per thread instead of a duration
    workloads: tuple[str, ...] = ()  # names, globs or families; empty: all
    impls: tuple[str, ...] = ()  # implementation names; empty: all available
    custom: MixSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        """The configuration as stored in ``results.json``."""
        return {
            "quick": self.quick,
            "duration": self.duration,
            "threads": list(self.threads),
            "rounds": self.rounds,
            "capacity": self.capacity,
            "latency_rounds": self.latency_rounds,
            "keys": self.keys,
            "ops": self.ops,
            "workloads": list(self.workloads),
            "impls": list(self.impls),
            "custom": None
            if self.custom is None
            else {
                "name": self.custom.name,
                "mix": dict(self.custom.mix),
                "keys": self.custom.keys,
                "distribution": self.custom.distribution,
                "value_size": self.custom.value_size,
                "prefill": self.custom.prefill,
            },
        }


def preset(quick: bool) -> BenchConfig:
    """``--quick``: the whole default matrix in under a minute on 2 cores (short cells,
    1 and 2 threads, one round). Otherwise thorough: longer cells, 1-8 threads, 3 rounds."""
    if quick:
        return BenchConfig(
            quick=True,
            duration=0.03,
            threads=(1, 2),
            rounds=1,
            capacity=QUICK_CAPACITY,
            latency_rounds=5,
        )
    return BenchConfig(
        quick=False,
        duration=0.25,
        threads=(1, 2, 4, 8),
        rounds=3,
        capacity=THOROUGH_CAPACITY,
        latency_rounds=21,
    )


def parse_mix(text: str) -> dict[str, int]:
    """``"load=90,store=5,delete=5"`` -> ``{"load": 90, "store": 5, "delete": 5}``."""
    mix: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"bad mix item {part.strip()!r}: use OP=PERCENT, e.g. load=90")
        if name not in MIX_OPERATIONS:
            raise ValueError(f"unknown operation {name!r}; use {', '.join(MIX_OPERATIONS)}")
        mix[name] = mix.get(name, 0) + int(value)
    return mix


def load_mix_file(path: Path) -> MixSpec:
    """Read a mix from a TOML file (format in the module docstring)."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    known = {"name", "keys", "distribution", "value_size", "threads", "prefill", "mix"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    mix = data.get("mix")
    if not isinstance(mix, dict) or not mix:
        raise ValueError(f"{path}: a [mix] table of operation percentages is required")
    if not all(isinstance(v, int) for v in mix.values()):
        raise ValueError(f"{path}: [mix] percentages must be integers")
    threads = data.get("threads", [])
    if not isinstance(threads, list) or not all(isinstance(t, int) and t > 0 for t in threads):
        raise ValueError(f"{path}: threads must be a list of positive integers")
    return MixSpec(
        mix={str(k): int(v) for k, v in mix.items()},
        name=str(data.get("name", "Custom")),
        keys=int(data.get("keys", 1000)),
        distribution=str(data.get("distribution", "uniform")),
        value_size=int(data.get("value_size", 0)),
        threads=tuple(threads),
        prefill=bool(data.get("prefill", True)),
    )


def with_overrides(spec: MixSpec, **changes: Any) -> MixSpec:
    """``spec`` with the given fields replaced (``None`` values are ignored)."""
    return replace(spec, **{k: v for k, v in changes.items() if v is not None})
