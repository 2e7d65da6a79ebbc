"""``MapStats``: one frozen snapshot of a map's statistics, the same type for every map.

Every map's ``stats()`` returns a :class:`MapStats`. Counters are cumulative since the map
was made and exact unless named in ``inexact`` (with the reason in ``notes``); take two
snapshots and ``later.minus(earlier)`` for the rates over an interval. ``size`` and the
gauges are values at the snapshot, not counters.

The fields are read one after another while other threads keep working, so a snapshot is
not one instant: ``inserts - deletes`` can differ from ``size`` by the operations that ran
while it was taken.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["LatencyHistogram", "MailboxStats", "MapStats", "ShardStats"]


@dataclass(frozen=True, slots=True)
class ShardStats:
    """One shard (or, for a map with one lock, the whole map) of a sharded map."""

    index: int
    entries: int
    """Entries in the shard at the snapshot."""
    lock_acquisitions: int
    lock_contentions: int
    """Acquisitions that found the lock held and had to wait."""
    lock_wait_seconds: float
    """Total time spent waiting in those contended acquisitions."""

    def minus(self, earlier: ShardStats) -> ShardStats:
        return ShardStats(
            self.index,
            self.entries,
            self.lock_acquisitions - earlier.lock_acquisitions,
            self.lock_contentions - earlier.lock_contentions,
            self.lock_wait_seconds - earlier.lock_wait_seconds,
        )


@dataclass(frozen=True, slots=True)
class MailboxStats:
    """The request queue of an actor map (``ActorMap``, ``AsyncActorMap``)."""

    depth: int
    """Requests waiting now (gauge)."""
    capacity: int
    """The queue's ``maxsize``."""
    peak_depth: int
    accepted: int
    completed: int
    failed: int
    """Of ``completed``, requests whose operation raised."""
    waits: int
    """Calls that found the queue full and waited for room."""
    timeouts: int
    """Calls whose deadline passed (before admission or while their request was queued)."""
    rejected: int
    """Calls refused with ``MapBusyError`` (queue full or circuit open); no effect."""
    breaker: str
    """The circuit breaker's state: ``"closed"``, ``"open"``, ``"half-open"`` or ``"none"``."""
    wait_seconds: float = 0.0
    """Total time the ``waits`` spent waiting for room in the queue."""
    rejected_by_breaker: int = 0
    """Of ``rejected``, calls refused because the circuit breaker was open."""
    cancelled: int = 0
    """Admitted requests withdrawn before the owner started them (deadline passed, caller
    cancelled or interrupted, ``close(drain=False)``): never applied."""
    dropped: int = 0
    """Requests whose caller stopped waiting after the owner had started them: applied,
    their result discarded."""
    breaker_trips: int = 0
    """How many times the circuit opened."""
    closed: bool = False
    """Whether the map was closed (gauge)."""

    @property
    def utilization(self) -> float:
        """``depth / capacity``, in [0, 1]: alert above 0.85, as the Go seeds do."""
        return self.depth / self.capacity if self.capacity else 0.0

    def minus(self, earlier: MailboxStats) -> MailboxStats:
        gauges = {"depth", "capacity", "peak_depth", "breaker", "closed"}
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name) - getattr(earlier, f.name)
                for f in dataclasses.fields(self)
                if f.name not in gauges
            },
        )


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Sampled latencies of one operation kind: ``counts[i]`` operations took less than
    ``bounds[i]`` seconds (and at least ``bounds[i-1]``); the last count is the overflow.
    ``sample_every`` is N of "1 in N": multiply counts by it to estimate totals."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum_seconds: float
    sample_every: int

    def minus(self, earlier: LatencyHistogram) -> LatencyHistogram:
        counts = tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True))
        return LatencyHistogram(
            self.bounds, counts, self.sum_seconds - earlier.sum_seconds, self.sample_every
        )


_GAUGES = frozenset(
    {"kind", "size", "inexact", "notes", "shards", "mailbox", "hot_keys", "latency"}
)


@dataclass(frozen=True, slots=True)
class MapStats:
    """A snapshot of one map's statistics (``m.stats()``).

    Point reads are ``m[k]``, ``get``, ``in`` and ``load``: each is a hit or a miss.
    Every write that changes the map counts once as an insert (a new key), an update (a
    different value object for a present key) or a delete (a key removed; ``clear()``
    counts each); a write that leaves a key holding the very object it held counts nothing.
    """

    kind: str
    """The map's type name."""
    hits: int
    misses: int
    inserts: int
    updates: int
    deletes: int
    size: int
    """Entries at the snapshot (gauge)."""
    iterations: int
    """Iterations started (``iter``, the views, ``range``)."""
    writes_during_iteration: int
    """Writes made while at least one iteration of this map was in progress: the warning
    sign of code that mutates what it (or another thread) is walking."""
    lock_acquisitions: int
    lock_contentions: int
    """Acquisitions that found a lock held (the map's locks, or the mailbox's)."""
    lock_wait_seconds: float
    """Time spent waiting in contended acquisitions (only the slow path is timed)."""
    shards: tuple[ShardStats, ...] = ()
    """Per-shard detail for sharded maps (empty otherwise)."""
    mailbox: MailboxStats | None = None
    """The request queue, for actor maps."""
    hot_keys: tuple[tuple[object, int], ...] = ()
    """The most used keys and their (over-)estimated counts, most used first, when hot-key
    tracking is on for this map (empty otherwise)."""
    latency: dict[str, LatencyHistogram] = field(default_factory=dict)
    """Sampled latency per operation kind, when latency sampling is on."""
    inexact: frozenset[str] = frozenset()
    """Names of the counters that are not exact on this build of this map."""
    loads: int = 0
    """Loads by ``get_or_compute``/``aget_or_compute`` that returned a value (``Cache``
    counts them; other maps report 0)."""
    load_failures: int = 0
    """Loads that raised (nothing was stored)."""
    evictions_size: int = 0
    """Entries a bounded map removed to stay within its size or weight bound (also counted
    in ``deletes``)."""
    evictions_expired: int = 0
    """Entries a map with a ttl removed because their deadline passed (also in
    ``deletes``)."""
    notes: tuple[str, ...] = ()
    """Why each of ``inexact`` is so, and other caveats, in words."""

    @property
    def evictions(self) -> int:
        """Entries removed by the map itself, every cause together."""
        return self.evictions_size + self.evictions_expired

    @property
    def hit_ratio(self) -> float | None:
        """``hits / (hits + misses)``, or ``None`` before the first point read."""
        reads = self.hits + self.misses
        return self.hits / reads if reads else None

    def minus(self, earlier: MapStats) -> MapStats:
        """The counters' increase since ``earlier`` (a snapshot of the same map); gauges,
        hot keys and notes are this snapshot's."""
        changes: dict[str, object] = {
            f.name: getattr(self, f.name) - getattr(earlier, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _GAUGES
        }
        if len(self.shards) == len(earlier.shards):
            changes["shards"] = tuple(
                s.minus(e) for s, e in zip(self.shards, earlier.shards, strict=True)
            )
        if self.mailbox is not None and earlier.mailbox is not None:
            changes["mailbox"] = self.mailbox.minus(earlier.mailbox)
        changes["latency"] = {
            op: h.minus(earlier.latency[op]) if op in earlier.latency else h
            for op, h in self.latency.items()
        }
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
