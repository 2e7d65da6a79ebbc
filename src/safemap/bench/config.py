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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .bustle import QUICK_CAPACITY, THOROUGH_CAPACITY
from .mixes import MIX_OPERATIONS, MixSpec

__all__ = [
    "MIX_FILE_SCHEMA",
    "BenchConfig",
    "Setting",
    "load_mix_file",
    "parse_mix",
    "preset",
    "with_overrides",
]


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
    """``--quick``: the whole default matrix in about a minute on 2 cores (short cells,
    1 and 2 threads, 3 rounds so that the round-to-round spread is measured and a lead
    within it is called a tie). Otherwise thorough: longer cells, 1-8 threads, 3 rounds."""
    if quick:
        return BenchConfig(
            quick=True,
            duration=0.006,
            threads=(1, 2),
            rounds=3,
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


@dataclass(frozen=True)
class Setting:
    """One setting of a mix file: its name, what a valid value is, and its default."""

    name: str
    valid: Callable[[Any], bool]
    expected: str  # a valid value, in words, for the error message
    default: Any = None  # None: required


def _is_int(value: Any) -> bool:
    # TOML's true/false are Python bools, which are ints: never accept them as numbers.
    return isinstance(value, int) and not isinstance(value, bool)


def _percentages(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and _is_int(v) and v >= 0 for k, v in value.items())
    )


MIX_FILE_SCHEMA: tuple[Setting, ...] = (
    Setting(
        "name", lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string", "Custom"
    ),
    Setting("keys", lambda v: _is_int(v) and v >= 1, "an integer >= 1", 1000),
    Setting("distribution", lambda v: v in ("uniform", "zipf"), '"uniform" or "zipf"', "uniform"),
    Setting("value_size", lambda v: _is_int(v) and v >= 0, "an integer >= 0", 0),
    Setting(
        "threads",
        lambda v: isinstance(v, list) and bool(v) and all(_is_int(t) and t >= 1 for t in v),
        "a non-empty list of integers >= 1",
        [],
    ),
    Setting("prefill", lambda v: isinstance(v, bool), "true or false", True),
    Setting("mix", _percentages, "a [mix] table of operation = integer percentage (>= 0)"),
)
"""Every setting a mix file may hold: a value is used only if it is exactly of this type
and range; nothing is converted (``"no"`` is not false, ``1.5`` is not 1)."""


def load_mix_file(path: Path) -> MixSpec:
    """Read a mix from a TOML file (format in the module docstring).

    Raises ``ValueError`` (one line naming the file and the setting) for a setting that
    is unknown, missing, of the wrong type or out of range, and ``OSError`` if the file
    cannot be read.
    """
    with path.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
    known = {s.name for s in MIX_FILE_SCHEMA}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for setting in MIX_FILE_SCHEMA:
        if setting.name not in data:
            if setting.default is None:
                raise ValueError(f"{path}: {setting.name}: required ({setting.expected})")
            values[setting.name] = setting.default
            continue
        value = data[setting.name]
        if not setting.valid(value):
            raise ValueError(f"{path}: {setting.name} must be {setting.expected}, not {value!r}")
        values[setting.name] = value
    try:
        return MixSpec(
            mix=dict(values["mix"]),
            name=values["name"],
            keys=values["keys"],
            distribution=values["distribution"],
            value_size=values["value_size"],
            threads=tuple(values["threads"]),
            prefill=values["prefill"],
        )
    except ValueError as exc:  # the mix itself: unknown operations, a sum other than 100
        raise ValueError(f"{path}: mix: {exc}") from None


def with_overrides(spec: MixSpec, **changes: Any) -> MixSpec:
    """``spec`` with the given fields replaced (``None`` values are ignored)."""
    return replace(spec, **{k: v for k, v in changes.items() if v is not None})
