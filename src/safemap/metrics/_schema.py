"""The metrics safemap exports, and how each is read from a ``MapStats``.

One table (``METRICS``) names every metric with its type, labels and help text; the
Prometheus collector, the OpenTelemetry bridge, the Grafana definition and the tests all
read it, so a query can only name what the exporters export. ``samples()`` turns one map's
snapshot into the values of those metrics. Nothing here imports a metrics library.

Labels are bounded by construction: the map's registered name, its type, fixed operation
and result names, shard indexes and breaker states. A key never becomes a label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from ..protocol.stats import LatencyHistogram, MapStats

__all__ = ["BREAKER_STATES", "METRICS", "OPERATIONS", "Metric", "Sample", "samples"]

Kind = Literal["counter", "gauge", "histogram"]


class Metric(NamedTuple):
    """One exported metric. ``name`` is the family name: a counter's samples add
    ``_total``, a histogram's ``_bucket``, ``_sum`` and ``_count``."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str

    def series_names(self) -> tuple[str, ...]:
        """The names of the time series of this metric, as a query names them."""
        if self.kind == "counter":
            return (self.name + "_total",)
        if self.kind == "histogram":
            return tuple(self.name + s for s in ("_bucket", "_sum", "_count"))
        return (self.name,)


class Sample(NamedTuple):
    """The value of one series of a counter or gauge (``metric`` is the family name)."""

    metric: str
    labels: dict[str, str]
    value: float


# Point reads are hits or misses; every write that changes the map is one of the three.
OPERATIONS: tuple[tuple[str, str, str], ...] = (
    ("read", "hit", "hits"),
    ("read", "miss", "misses"),
    ("write", "insert", "inserts"),
    ("write", "update", "updates"),
    ("write", "delete", "deletes"),
)
BREAKER_STATES = ("closed", "open", "half-open", "none")

_M, _MS = ("map",), ("map", "shard")
METRICS: tuple[Metric, ...] = (
    Metric(
        "safemap_map_info", "gauge", ("map", "kind"), "A registered map (value 1) and its type."
    ),
    Metric(
        "safemap_operations",
        "counter",
        ("map", "op", "result"),
        "Point operations: reads (op=read: result=hit|miss) and the writes that changed the "
        "map (op=write: result=insert|update|delete).",
    ),
    Metric("safemap_entries", "gauge", _M, "Entries in the map."),
    Metric("safemap_iterations", "counter", _M, "Iterations of the map started."),
    Metric(
        "safemap_writes_during_iteration",
        "counter",
        _M,
        "Writes made while at least one iteration of the map was in progress.",
    ),
    Metric(
        "safemap_lock_acquisitions",
        "counter",
        _MS,
        "Lock acquisitions, per shard (shard 0 is the whole map for a map with one lock).",
    ),
    Metric(
        "safemap_lock_contentions",
        "counter",
        _MS,
        "Lock acquisitions that found the lock held and waited, per shard.",
    ),
    Metric(
        "safemap_lock_wait_seconds",
        "counter",
        _MS,
        "Time spent waiting in contended lock acquisitions, per shard.",
    ),
    Metric("safemap_shard_entries", "gauge", _MS, "Entries per shard, for sharded maps."),
    Metric(
        "safemap_evictions",
        "counter",
        ("map", "cause"),
        "Entries a bounded map (Cache) removed: cause=size to stay within its maxsize, "
        "cause=expired because their ttl passed.",
    ),
    Metric(
        "safemap_loads",
        "counter",
        ("map", "result"),
        "Loader runs of get_or_compute on a Cache: result=ok stored a value, result=error raised.",
    ),
    Metric(
        "safemap_operation_duration_seconds",
        "histogram",
        ("map", "op"),
        "Latency of the sampled operations (1 in N per operation kind; on with "
        "m.track(latency_every=N)).",
    ),
    Metric("safemap_mailbox_depth", "gauge", _M, "Requests waiting in an actor map's queue."),
    Metric("safemap_mailbox_capacity", "gauge", _M, "The capacity of an actor map's queue."),
    Metric(
        "safemap_mailbox_utilization",
        "gauge",
        _M,
        "Queue depth / capacity of an actor map, in [0, 1].",
    ),
    Metric("safemap_mailbox_peak_depth", "gauge", _M, "The deepest an actor map's queue has been."),
    Metric("safemap_mailbox_accepted", "counter", _M, "Requests admitted to an actor map's queue."),
    Metric("safemap_mailbox_completed", "counter", _M, "Requests an actor map's owner served."),
    Metric(
        "safemap_mailbox_failed", "counter", _M, "Of the completed requests, those that raised."
    ),
    Metric("safemap_mailbox_waits", "counter", _M, "Calls that found the queue full and waited."),
    Metric(
        "safemap_mailbox_timeouts",
        "counter",
        _M,
        "Calls whose deadline passed before admission or while queued.",
    ),
    Metric(
        "safemap_mailbox_rejections",
        "counter",
        _M,
        "Calls refused with MapBusyError (queue full or circuit open).",
    ),
    Metric(
        "safemap_mailbox_wait_seconds",
        "counter",
        _M,
        "Time calls spent waiting for room in a full queue.",
    ),
    Metric(
        "safemap_mailbox_breaker_rejections",
        "counter",
        _M,
        "Of the rejections, calls refused because the circuit breaker was open.",
    ),
    Metric(
        "safemap_mailbox_cancelled",
        "counter",
        _M,
        "Admitted requests withdrawn before the owner started them (never applied).",
    ),
    Metric(
        "safemap_mailbox_dropped",
        "counter",
        _M,
        "Requests applied after their caller stopped waiting (result discarded).",
    ),
    Metric("safemap_mailbox_breaker_trips", "counter", _M, "Times the circuit breaker opened."),
    Metric("safemap_mailbox_closed", "gauge", _M, "1 once the actor map is closed, else 0."),
    Metric(
        "safemap_mailbox_breaker_state",
        "gauge",
        ("map", "state"),
        "The circuit breaker's state of an actor map: 1 for the current state, 0 for others.",
    ),
)
BY_NAME = {m.name: m for m in METRICS}


def samples(name: str, stats: MapStats) -> Iterator[Sample]:
    """The counter and gauge values of the map registered as ``name`` (histograms:
    ``stats.latency``, read by the exporters themselves)."""
    m = {"map": name}
    yield Sample("safemap_map_info", {**m, "kind": stats.kind}, 1)
    for op, result, field in OPERATIONS:
        yield Sample("safemap_operations", {**m, "op": op, "result": result}, getattr(stats, field))
    yield Sample("safemap_entries", m, stats.size)
    yield Sample("safemap_iterations", m, stats.iterations)
    yield Sample("safemap_writes_during_iteration", m, stats.writes_during_iteration)
    if stats.shards:
        for s in stats.shards:
            shard = {**m, "shard": str(s.index)}
            yield Sample("safemap_lock_acquisitions", shard, s.lock_acquisitions)
            yield Sample("safemap_lock_contentions", shard, s.lock_contentions)
            yield Sample("safemap_lock_wait_seconds", shard, s.lock_wait_seconds)
            yield Sample("safemap_shard_entries", shard, s.entries)
    else:  # one lock (or a mailbox): the whole map is shard 0
        shard = {**m, "shard": "0"}
        yield Sample("safemap_lock_acquisitions", shard, stats.lock_acquisitions)
        yield Sample("safemap_lock_contentions", shard, stats.lock_contentions)
        yield Sample("safemap_lock_wait_seconds", shard, stats.lock_wait_seconds)
    if stats.kind == "Cache":  # the maps that evict and count their loads
        yield Sample("safemap_evictions", {**m, "cause": "size"}, stats.evictions_size)
        yield Sample("safemap_evictions", {**m, "cause": "expired"}, stats.evictions_expired)
        yield Sample("safemap_loads", {**m, "result": "ok"}, stats.loads)
        yield Sample("safemap_loads", {**m, "result": "error"}, stats.load_failures)
    box = stats.mailbox
    if box is not None:
        yield Sample("safemap_mailbox_depth", m, box.depth)
        yield Sample("safemap_mailbox_capacity", m, box.capacity)
        yield Sample("safemap_mailbox_utilization", m, box.utilization)
        yield Sample("safemap_mailbox_peak_depth", m, box.peak_depth)
        yield Sample("safemap_mailbox_accepted", m, box.accepted)
        yield Sample("safemap_mailbox_completed", m, box.completed)
        yield Sample("safemap_mailbox_failed", m, box.failed)
        yield Sample("safemap_mailbox_waits", m, box.waits)
        yield Sample("safemap_mailbox_timeouts", m, box.timeouts)
        yield Sample("safemap_mailbox_rejections", m, box.rejected)
        yield Sample("safemap_mailbox_wait_seconds", m, box.wait_seconds)
        yield Sample("safemap_mailbox_breaker_rejections", m, box.rejected_by_breaker)
        yield Sample("safemap_mailbox_cancelled", m, box.cancelled)
        yield Sample("safemap_mailbox_dropped", m, box.dropped)
        yield Sample("safemap_mailbox_breaker_trips", m, box.breaker_trips)
        yield Sample("safemap_mailbox_closed", m, int(box.closed))
        states = BREAKER_STATES if box.breaker in BREAKER_STATES else (*BREAKER_STATES, box.breaker)
        for state in states:
            value = 1 if box.breaker == state else 0
            yield Sample("safemap_mailbox_breaker_state", {**m, "state": state}, value)


def cumulative(h: LatencyHistogram) -> list[tuple[float, int]]:
    """A latency histogram as Prometheus buckets: ``(upper bound, observations <= it)``,
    ending with ``(inf, total)``."""
    out: list[tuple[float, int]] = []
    running = 0
    for bound, count in zip(h.bounds, h.counts, strict=False):
        running += count
        out.append((bound, running))
    out.append((float("inf"), sum(h.counts)))
    return out
