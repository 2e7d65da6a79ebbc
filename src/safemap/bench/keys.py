"""Keys, key distributions and operation schedules shared by the workload definitions.

Random choices are drawn *before* a measurement starts and replayed during it, so the
measured loop costs one list index per choice instead of a call into ``random`` (Go's
benchmarks draw with a few-nanosecond ``fastrand``; a Python ``random`` call would cost
as much as the map operation it chooses). Every draw is seeded, so a schedule is the same
in every run and for every implementation.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Mapping, Sequence

__all__ = [
    "SCHEDULE_LENGTH",
    "XSYNC_KEY_PREFIX",
    "ZIPF_S",
    "ZIPF_V",
    "ZipfSampler",
    "cycle_to",
    "draw_indices",
    "next_pow2",
    "shuffled_slots",
    "string_keys",
]

XSYNC_KEY_PREFIX = "what_a_looooooooooooooooooooooong_key_prefix_"
"""The key prefix of xsync's map benchmarks: keys are ``prefix + str(i)``."""

SCHEDULE_LENGTH = 1 << 14
"""Length of a pre-drawn per-thread schedule (a power of two: replayed with a mask)."""

ZIPF_S = 1.1
ZIPF_V = 1.0
"""Zipf parameters (Go's ``rand.NewZipf(r, s, v, n-1)``: P(k) is proportional to
``(v + k) ** -s``). The anchors name no parameters for their skewed keys; ``s = 1.1`` is
the common choice in Go benchmarks of skewed key access."""


def string_keys(n: int, prefix: str = XSYNC_KEY_PREFIX) -> list[str]:
    """``n`` keys ``prefix + str(i)``, as xsync's benchmarks build them."""
    return [prefix + str(i) for i in range(n)]


def next_pow2(n: int) -> int:
    """The smallest power of two >= ``n`` (1 for ``n <= 1``)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


class ZipfSampler:
    """Draws key indices in ``[0, n)`` with P(k) proportional to ``(v + k) ** -s``.

    Index 0 is the most frequent key. Sampling inverts the cumulative distribution with a
    binary search, so it is exact for any ``s > 0``.
    """

    def __init__(self, n: int, s: float = ZIPF_S, v: float = ZIPF_V) -> None:
        if n < 1:
            raise ValueError("a Zipf distribution needs at least one key")
        if s <= 0 or v < 1:
            raise ValueError("Zipf needs s > 0 and v >= 1")
        self.n = n
        weights = [(v + k) ** -s for k in range(n)]
        self._cdf = list(itertools.accumulate(weights))
        self._total = self._cdf[-1]

    def probability(self, k: int) -> float:
        """The probability of index ``k``."""
        below = self._cdf[k - 1] if k else 0.0
        return float((self._cdf[k] - below) / self._total)

    def sample(self, rng: random.Random) -> int:
        """One index."""
        return min(bisect.bisect_right(self._cdf, rng.random() * self._total), self.n - 1)


def draw_indices(n: int, count: int, distribution: str, rng: random.Random) -> list[int]:
    """``count`` key indices in ``[0, n)``, ``"uniform"`` or ``"zipf"``-distributed."""
    if distribution == "uniform":
        return [rng.randrange(n) for _ in range(count)]
    if distribution == "zipf":
        zipf = ZipfSampler(n)
        return [zipf.sample(rng) for _ in range(count)]
    raise ValueError(f"unknown key distribution {distribution!r} (use 'uniform' or 'zipf')")


def shuffled_slots(mix: Mapping[str, int], rng: random.Random) -> list[str]:
    """The 100-slot operation array of conc-map-bench: each operation ``mix[op]`` times,
    shuffled once. Replayed cyclically, it gives the mix's exact proportions over every
    100 consecutive operations.
    """
    total = sum(mix.values())
    if total != 100 or any(v < 0 for v in mix.values()):
        raise ValueError(f"operation percentages must be >= 0 and sum to 100, not {total}")
    slots: list[str] = [op for op, count in mix.items() for _ in range(count)]
    rng.shuffle(slots)
    return slots


def cycle_to(seq: Sequence[str], length: int) -> list[str]:
    """``seq`` repeated cyclically up to ``length`` items."""
    return [seq[i % len(seq)] for i in range(length)]
