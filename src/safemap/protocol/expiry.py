"""Entries with a deadline (``bind(..., ttl=)``): the clock, the per-map binding registry,
the read-hiding mixin and the one shared sweeper thread.

The guarantee: **no read ever returns an expired entry**, whichever thread reads and
whether or not anyone has removed it yet. A map pays for this only once it has made a ttl
binding: its first one switches it (``safemap.protocol.variants``) to a variant with the
:class:`Expiring` mixin, whose read paths treat a due entry as absent. Maps without ttl
bindings keep their class and their speed.

Invariants:
- A binding is *registered before* its value is stored and *dropped only after* its value
  has left the map (or was found not to be there): so a read that found a bound value and
  then finds no binding for it knows the binding was dropped meanwhile, which it detects by
  the registry's generation (``_MapState.gen``, bumped on every drop) and retries.
- A read decides per key, from the key's own binding and the clock read *after* the value
  was read: a value returned as present was unexpired at the instant it was read. A value
  found due is reported absent only once it is known to be in the map at or after its
  deadline (removed by this read, or read again); never because of someone else's sweep
  being in progress.
- Removal is a compare-and-delete of exactly the bound object (identity; equality for map
  types whose reads return copies): a newer value, even an equal one, survives.
- One sweeper thread serves every map: it removes due entries and runs the removals that
  must not run where they were triggered (weak-reference callbacks, dying threads). It is
  started on first use, holds maps only weakly, and exits as soon as no binding needs it.
  Wake-ups go through a ``queue.SimpleQueue`` (safe to put from ``__del__`` and weak
  reference callbacks); its lock is never taken from such callbacks.
"""

from __future__ import annotations

import heapq
import itertools
import os
import queue
import reprlib
import threading
import time
import weakref
from collections.abc import Callable, ItemsView, Iterator, KeysView, MutableMapping, ValuesView
from typing import Any, Protocol, TypeVar

from ._locked import locked
from .errors import MapClosedError, RecursiveUpdateError
from .frozen import FrozenMap
from .mapping import ConcurrentMapping, _ItemsView, _ValuesView
from .sentinels import DELETE, MISSING
from .sidecar import _table as _sidecars
from .sidecar import existing_sidecar, sidecar
from .variants import plain_class, switch

__all__ = ["Expiring", "ManualClock", "now", "set_clock", "sweeper_thread"]

T = TypeVar("T")

# ---------------------------------------------------------------------------- clock

_clock: Callable[[], float] = time.monotonic


def now() -> float:
    """The current time on the expiry clock (``time.monotonic`` unless replaced)."""
    return _clock()


def set_clock(clock: Callable[[], float]) -> Callable[[], float]:
    """Make ``clock`` (a callable returning seconds as a float, never going backwards) the
    clock of every ttl deadline; return the previous one. Set it before making ttl
    bindings: a deadline is ``clock() + ttl`` at the moment of binding. Tests use a
    :class:`ManualClock`."""
    global _clock
    previous, _clock = _clock, clock
    _sweeper.wake()
    return previous


class ManualClock:
    """A clock that moves only when told to (``advance``): for tests of code that uses ttl
    bindings. ``set_clock(ManualClock())`` installs it; ``advance`` wakes the sweeper."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0)."""
        if not seconds >= 0:
            raise ValueError(f"a clock never goes backwards: advance({seconds!r})")
        locked(self._lock, self._advance, seconds)
        _sweeper.wake()

    def _advance(self, seconds: float) -> None:
        self._now += seconds


# ----------------------------------------------------------------- reporting failures


class _Raiser:
    """Routes an exception to ``sys.unraisablehook`` (raising it from ``__del__``)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __del__(self) -> None:
        raise self.exc


def report_unraisable(exc: BaseException, note: str) -> None:
    """Report ``exc`` as unraisable (``sys.unraisablehook``), with ``note`` attached: for a
    failure in a cleanup that has no caller to raise into."""
    exc.add_note(note)
    _Raiser(exc)  # dropped at once: its __del__ raises, which reports ``exc``


# ------------------------------------------------------------------- bound entries


class Bound(Protocol):
    """What the registry and the sweeper need of a binding (``scoped.Binding``)."""

    key: Any
    value: Any
    deadline: float | None

    @property
    def ended(self) -> bool: ...

    def _end(self, *, soft: bool = False) -> bool | None: ...

    def _forget(self) -> None: ...


KeyBindings = tuple[Bound, ...] | dict[int, tuple[Bound, ...]]
"""A key's pending ttl bindings: a tuple of them, or, in maps whose values match by
identity, once the key is bound to a second object (a key bound again and again, to a new
object each time, with a long ttl), a dict from each object's ``id`` to its bindings. In
those maps a tuple holds one object's bindings, so that a read of a key, and a new
binding, cost the same however many objects the key was bound to (each binding holds its
object: two pending bindings' objects share an ``id`` only if they are one object)."""


class _MapState:
    """One map's bindings (kept in its sidecar; holds the map only weakly)."""

    __slots__ = (
        "__weakref__",
        "bindings",
        "gen",
        "heap",
        "identity",
        "lock",
        "map_ref",
        "plain",
        "ttl",
    )

    def __init__(self, m: ConcurrentMapping[Any, Any]) -> None:
        self.lock = threading.Lock()
        self.plain: type[Any] = plain_class(type(m))  # its own methods, without the mixin
        self.identity: bool = getattr(self.plain, "_value_identity", True)
        self.bindings: set[Bound] = set()  # every binding that has not ended
        # key -> its ttl bindings (``KeyBindings``). Written under ``lock``; read without
        # it: tuples are replaced, never changed; a dict's items are replaced one by one.
        self.ttl: dict[Any, KeyBindings] = {}
        self.heap: list[tuple[float, int, Bound]] = []  # this map's ttl deadlines
        self.gen = 0  # bumped on every drop of a ttl binding (readers retry on a change)
        ref = weakref.ref(self)
        self.map_ref = weakref.ref(m, lambda _r: _sweeper.submit(_MapGone(ref)))

    def same(self, a: object, b: object) -> bool:
        return a is b if self.identity else (a is b or bool(a == b))

    def find(self, key: Any, value: object) -> Bound | None:
        """The ttl binding of ``key`` for exactly ``value`` that ends first, if any (the
        same object bound twice expires at the earlier deadline). Looks only at that
        object's bindings where values match by identity (see ``KeyBindings``)."""
        bound = self.ttl.get(key)
        if bound is None:
            return None
        if not isinstance(bound, tuple):
            bound = bound.get(id(value), ())
        found: Bound | None = None
        for b in bound:
            if self.same(b.value, value) and (found is None or b.deadline < found.deadline):  # type: ignore[operator]
                found = b
        return found

    def add(self, b: Bound) -> None:
        locked(self.lock, self._add, b)

    def _add(self, b: Bound) -> None:
        self.bindings.add(b)
        if b.deadline is not None:
            bound = self.ttl.get(b.key)
            if bound is None:
                self.ttl[b.key] = (b,)
            elif isinstance(bound, tuple):
                first = bound[0].value
                if not self.identity or first is b.value:
                    self.ttl[b.key] = (*bound, b)
                else:  # a second object: one group per object from now on
                    self.ttl[b.key] = {id(first): bound, id(b.value): (b,)}
            else:
                bound[id(b.value)] = (*bound.get(id(b.value), ()), b)
            heapq.heappush(self.heap, (b.deadline, next(_seq), b))

    def drop(self, b: Bound) -> None:
        locked(self.lock, self._drop, b)

    def _drop(self, b: Bound) -> None:
        self.bindings.discard(b)
        if b.deadline is not None:
            self.gen += 1
            self._unlist(b)
            heap = self.heap  # bindings mostly end in deadline order: prune the top
            while heap and heap[0][2] not in self.bindings:
                heapq.heappop(heap)

    def _unlist(self, b: Bound) -> None:
        """Take ``b`` out of its key's ``KeyBindings`` (under the lock; ``b.value`` is still
        set: a binding clears it after its drop)."""
        bound = self.ttl.get(b.key)
        if bound is None:
            return
        if isinstance(bound, tuple):
            rest = tuple(x for x in bound if x is not b)
            if rest:
                self.ttl[b.key] = rest
            else:
                del self.ttl[b.key]
            return
        rest = tuple(x for x in bound.get(id(b.value), ()) if x is not b)
        if rest:
            bound[id(b.value)] = rest
            return
        bound.pop(id(b.value), None)
        if len(bound) == 1:  # one object again: back to the tuple
            self.ttl[b.key] = next(iter(bound.values()))
        elif not bound:
            del self.ttl[b.key]

    def due(self, t: float) -> list[Bound]:
        """This map's registered ttl bindings whose deadline is ``<= t``: not dropped yet,
        whether or not someone has claimed them (a removal may be in progress)."""
        return locked(self.lock, self._due, t)

    def _due(self, t: float) -> list[Bound]:
        heap = self.heap
        while heap and heap[0][2] not in self.bindings:
            heapq.heappop(heap)
        if not heap or heap[0][0] > t:
            return []
        return [b for d, _, b in heap if d <= t and b in self.bindings]

    def remove(self, key: Any, value: object) -> bool:
        """Remove ``key`` if it holds exactly ``value``; return whether it did. Uses the
        map's own methods (never the mixin's, which would see a due value as absent). A
        closed map (an actor map after ``close()``) is left alone: nobody reads it any more.
        """
        m = self.map_ref()
        if m is None:
            return False
        try:
            return self._remove(m, key, value)
        except MapClosedError:
            return False

    def _remove(self, m: Any, key: Any, value: object) -> bool:
        plain = self.plain
        if not self.identity:
            # A map whose transactions do not exclude its own compare_and_delete (RedisMap's
            # commit optimistically) has ``_delete_bound``, which they do exclude: so no
            # binding is dropped while a transaction's view may hold its value (_LiveView).
            delete = getattr(plain, "_delete_bound", plain.compare_and_delete)
            return bool(delete(m, key, value))
        current, found = plain.load(m, key)
        if not found or current is not value:
            return False  # nothing to do: no write at all
        removed = False

        def delete_if_same(_key: Any, old: Any) -> Any:
            nonlocal removed
            removed = old is value  # set on every run: a retrying compute runs it again
            if old is MISSING or removed:
                return DELETE
            return old

        plain.compute(m, key, delete_if_same)
        return removed


_seq = itertools.count()


def state_of(m: ConcurrentMapping[Any, Any]) -> _MapState:
    """The binding registry of ``m``, created on first use."""
    sc = sidecar(m)
    st: _MapState | None = getattr(sc, "bindings", None)
    if st is None:
        st = vars(sc).setdefault("bindings", _MapState(m))
    return st


def _state(m: object) -> _MapState | None:
    sc = existing_sidecar(m)
    return None if sc is None else getattr(sc, "bindings", None)


class _MapGone:
    """Sweeper job: a map was collected; its bindings end without touching it."""

    __slots__ = ("ref",)

    def __init__(self, ref: weakref.ref[_MapState]) -> None:
        self.ref = ref

    def __call__(self) -> None:
        st = self.ref()
        if st is not None:
            for b in list(st.bindings):
                b._forget()


def start_expiring(m: ConcurrentMapping[Any, Any]) -> None:
    """Switch ``m`` to its expiring variant (once; later calls change nothing)."""
    switch(m, add=Expiring)


# ------------------------------------------------------------------------- sweeper

POLL_INTERVAL = 0.02  # seconds between checks of owner threads that cannot be hooked


class _Sweeper:
    """The one background thread: due ttl entries, queued removals, polled owner threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inbox: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self.heap: list[tuple[float, int, Bound]] = []
        self.polled: list[tuple[threading.Thread, Bound]] = []
        self.pending = 0  # bindings that may still need this thread
        self.thread: threading.Thread | None = None

    def _ensure(self) -> None:  # under self.lock
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="safemap-sweeper", daemon=True)
            self.thread.start()

    def hold(self) -> None:
        """One more binding may need the sweeper: keep it running (start it if needed)."""
        locked(self.lock, self._hold)

    def _hold(self) -> None:
        self.pending += 1
        self._ensure()

    def unhold(self) -> None:
        locked(self.lock, self._unhold)
        self.wake()

    def _unhold(self) -> None:
        self.pending -= 1

    def schedule(self, b: Bound) -> None:
        locked(self.lock, self._schedule, b)
        self.wake()

    def _schedule(self, b: Bound) -> None:
        assert b.deadline is not None
        heapq.heappush(self.heap, (b.deadline, next(_seq), b))
        self._ensure()

    def poll(self, thread: threading.Thread, b: Bound) -> None:
        locked(self.lock, self._poll, thread, b)
        self.wake()

    def _poll(self, thread: threading.Thread, b: Bound) -> None:
        self.polled.append((thread, b))
        self._ensure()

    def wake(self) -> None:
        self.inbox.put(None)

    def submit(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the sweeper thread (safe from ``__del__`` and weakref callbacks;
        the caller holds a binding that keeps the sweeper running)."""
        self.inbox.put(job)

    def _run(self) -> None:
        # The sweeper's own thread runs no signal handler (only the main thread does), so a
        # plain ``with`` is safe here; the methods above run on any thread and take the lock
        # with ``locked`` (see ``safemap.protocol._locked``).
        while True:
            with self.lock:
                t = _clock()
                work: list[Bound] = []
                heap = self.heap
                while heap and (heap[0][2].ended or heap[0][0] <= t):
                    b = heapq.heappop(heap)[2]
                    if not b.ended:
                        work.append(b)
                still: list[tuple[threading.Thread, Bound]] = []
                for thread, b in self.polled:
                    if b.ended:
                        continue
                    if thread.ident is not None and not thread.is_alive():
                        work.append(b)
                    else:
                        still.append((thread, b))
                self.polled = still
                if not work and self.pending <= 0 and not still and self.inbox.empty():
                    heap.clear()
                    self.thread = None
                    return
                timeout: float | None = None
                if heap:
                    timeout = max(0.0, heap[0][0] - t)
                if still:
                    timeout = POLL_INTERVAL if timeout is None else min(timeout, POLL_INTERVAL)
            for b in work:
                _run_reporting(b._end)
            if work:
                continue
            try:
                job = self.inbox.get(timeout=timeout)
            except queue.Empty:
                continue
            if job is not None:
                _run_reporting(job)


def _run_reporting(job: Callable[[], object]) -> None:
    try:
        job()
    except BaseException as exc:  # reported, never raised into this thread
        report_unraisable(exc, "safemap: removing a bound entry failed")


_sweeper = _Sweeper()


def sweeper_thread() -> threading.Thread | None:
    """The running sweeper thread, or ``None`` when no binding needs one."""
    return _sweeper.thread


def _after_fork_in_child() -> None:
    # Reset in place (other modules hold this object): the child has no sweeper thread, and
    # the parent's lock may have been held by a thread that does not exist here.
    _sweeper.__init__()  # type: ignore[misc]


os.register_at_fork(after_in_child=_after_fork_in_child)


# -------------------------------------------------------------------- the read mixin


def _visible(st: _MapState, key: Any, value: Any, gen: int) -> int:
    """For a value read after ``st.gen`` was ``gen``: 1 visible, 0 expired (the caller
    confirms), -1 unknown (a binding was dropped since: read the key again)."""
    b = st.find(key, value)
    if st.gen != gen:
        return -1
    if b is None or _clock() < b.deadline:  # type: ignore[operator]  # ttl bindings have one
        return 1
    return 0


_ABSENT: Any = object()  # never a value: private to this module
_next_gets: dict[type, Callable[[Any, Any, Any], Any]] = {}


def _next_get(cls: type) -> Callable[[Any, Any, Any], Any]:
    """``get`` as the class after :class:`Expiring` in ``cls``'s MRO defines it (another
    variant's, or the map's own), unbound: what ``super().get`` would call, found once per
    class."""
    found = _next_gets.get(cls)
    if found is None:
        mro = cls.__mro__
        for c in mro[mro.index(Expiring) + 1 :]:
            if "get" in vars(c):
                found = vars(c)["get"]
                break
        assert found is not None  # ConcurrentMapping defines it
        _next_gets[cls] = found
    return found


class Expiring:
    """The mixin of maps with ttl bindings: every read treats a due entry as absent.

    Reads return only values that were unexpired at the instant they were read; the
    compute family (and everything built on it) hands a due entry to its callback as
    ``MISSING``. A due entry found by a read is removed by that read when it may write
    (otherwise by the sweeper)."""

    __slots__ = ()
    variant_rank = 50

    # ------------------------------------------------------------- single-key reads

    def load(self, key: Any) -> tuple[Any, bool]:
        sc = existing_sidecar(self)
        st: _MapState | None = None if sc is None else getattr(sc, "bindings", None)
        load = super().load  # type: ignore[misc]
        if st is None:
            return load(key)  # type: ignore[no-any-return]
        ttl = st.ttl
        while True:
            gen = st.gen
            value, found = load(key)
            if not found:
                return None, False
            # The binding of this very value that ends first, if any (``find`` inlined:
            # this is every read's path).
            bound = ttl.get(key)
            b: Bound | None = None
            if bound is not None:
                if st.identity and type(bound) is tuple:  # one object's bindings
                    if bound[0].value is value:
                        b = bound[0] if len(bound) == 1 else st.find(key, value)
                else:
                    b = st.find(key, value)
            if st.gen != gen:
                continue  # a binding was dropped meanwhile: maybe one of this value's
            if b is None or _clock() < b.deadline:  # type: ignore[operator]  # ttl: one
                return value, True
            try:
                removed = b._end(soft=True)
            except RecursiveUpdateError:
                removed = None
            if removed:
                return None, False  # it was there, due, when this read removed it
            again, found = load(key)  # read again: due and still there means absent now
            if found and st.same(again, value) and st.find(key, again) is b:
                return None, False

    def get(self, key: Any, default: Any = None, /) -> Any:
        # The common cases in one pass, deciding exactly as ``load`` does (without its tuple
        # and bound-method overhead): a value read with no binding dropped meanwhile is
        # visible if its key has no ttl binding of that very object, or one, not yet due.
        # Anything else (a due entry, the object bound twice) goes through ``load``.
        entry = _sidecars.get(id(self))
        if entry is not None and entry[0]() is self:
            st = getattr(entry[1], "bindings", None)
            if st is not None:
                gen = st.gen
                get = _next_gets.get(type(self)) or _next_get(type(self))
                value = get(self, key, _ABSENT)
                if value is _ABSENT:
                    return default
                bound = st.ttl.get(key)
                # Read before the generation's check: a binding dropped after it still
                # decides for the value read.
                mine = None
                if bound is not None and st.identity:
                    if type(bound) is dict:  # several objects' bindings
                        bound = bound.get(id(value))
                    if bound is not None:  # one object's bindings
                        mine = bound[0]
                        if mine.value is not value:
                            bound = None  # of another object: this value is not bound
                if st.gen == gen:
                    if bound is None:
                        return value
                    if mine is not None and len(bound) == 1 and _clock() < mine.deadline:
                        return value
        value, found = self.load(key)
        return value if found else default

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    # ---------------------------------------------------------------- whole-map reads

    def _iter_items(self) -> Iterator[tuple[Any, Any]]:
        st = _state(self)
        if st is None:
            yield from super()._iter_items()  # type: ignore[misc]
            return
        # The generation is taken before the map's iterator starts: some iterators (the
        # actor maps') read every entry at once, long before they yield it.
        gen = st.gen
        for key, value in super()._iter_items():  # type: ignore[misc]
            seen = _visible(st, key, value, gen)
            if seen == 1:
                yield key, value
            elif seen == -1:  # a binding was dropped since the start: ask the key itself
                value, found = self.load(key)
                if found:
                    yield key, value

    def __iter__(self) -> Iterator[Any]:
        for key, _ in self._iter_items():
            yield key

    def keys(self) -> KeysView[Any]:
        return KeysView(self)

    def values(self) -> ValuesView[Any]:
        return _ValuesView(self)

    def items(self) -> ItemsView[Any, Any]:
        return _ItemsView(self)

    def snapshot(self) -> FrozenMap[Any, Any]:
        st = _state(self)
        snapshot = super().snapshot  # type: ignore[misc]
        if st is None:
            return snapshot()  # type: ignore[no-any-return]
        attempt = -1
        while True:
            attempt += 1
            before = _clock()  # deadlines <= before: due at the snapshot's instant
            gen = st.gen
            snap: FrozenMap[Any, Any] = snapshot()
            after = _clock()
            hidden: list[Any] = []
            ambiguous = False
            for key in list(st.ttl):
                if key not in snap:
                    continue
                b = st.find(key, snap[key])
                if b is None or b.deadline > after:  # type: ignore[operator]  # ttl: one
                    continue
                if b.deadline <= before or attempt >= 3:  # type: ignore[operator]
                    hidden.append(key)
                else:
                    ambiguous = True  # due between the clock reads: unknown at the instant
            if ambiguous or st.gen != gen:
                # Try again for a snapshot of one instant; after a few tries (a snapshot
                # slower than the gaps between deadlines), hiding the undecided entries
                # keeps the guarantee that matters: nothing expired is returned.
                continue
            for key in hidden:
                snap = snap.delete(key)
            return snap

    def __len__(self) -> int:
        st = _state(self)
        length = super().__len__  # type: ignore[misc]
        if st is None:
            return length()  # type: ignore[no-any-return]
        while True:
            gen = st.gen
            due = st.due(_clock())
            if due:  # reclaim them first (lazily, here), then count
                for b in due:
                    try:
                        b._end(soft=True)
                    except RecursiveUpdateError:
                        return len(self.snapshot())  # may not write here: count a snapshot
                    if b in st.bindings:  # someone else is removing it right now
                        return len(self.snapshot())
                continue
            n: int = length()
            if not st.due(_clock()) and st.gen == gen:
                return n

    # ------------------------------------------------------------ the compute family

    def compute(self, key: Any, fn: Callable[[Any, Any], Any]) -> Any:
        compute = super().compute  # type: ignore[misc]
        st = _state(self)
        if st is None:
            return compute(key, fn)

        def unless_due(k: Any, old: Any) -> Any:
            # Under the key's lock: ``old`` cannot leave the map, so its binding cannot be
            # dropped meanwhile; a due value is absent to ``fn``.
            if old is not MISSING:
                b = st.find(k, old)
                if b is not None and b.deadline is not None and _clock() >= b.deadline:
                    old = MISSING
            return fn(k, old)

        return compute(key, unless_due)

    # Everything derived from ``compute``/``load``/``_iter_items``/``snapshot`` takes the
    # protocol's own definition, which calls the methods above (a native map's faster
    # override would read the entries directly).
    load_or_store = ConcurrentMapping.load_or_store
    setdefault = ConcurrentMapping.setdefault
    load_and_delete = ConcurrentMapping.load_and_delete
    pop = ConcurrentMapping.pop
    __delitem__ = ConcurrentMapping.__delitem__
    delete = ConcurrentMapping.delete
    popitem = ConcurrentMapping.popitem
    swap = ConcurrentMapping.swap
    compare_and_swap = ConcurrentMapping.compare_and_swap
    compare_and_delete = ConcurrentMapping.compare_and_delete
    compute_if_absent = ConcurrentMapping.compute_if_absent
    compute_if_present = ConcurrentMapping.compute_if_present
    merge = ConcurrentMapping.merge
    delete_if = ConcurrentMapping.delete_if
    range = ConcurrentMapping.range
    copy = ConcurrentMapping.copy
    __copy__ = ConcurrentMapping.__copy__
    __deepcopy__ = ConcurrentMapping.__deepcopy__
    __reduce__ = ConcurrentMapping.__reduce__
    __eq__ = ConcurrentMapping.__eq__
    __or__ = ConcurrentMapping.__or__
    __ror__ = ConcurrentMapping.__ror__
    __hash__ = None  # type: ignore[assignment]

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        try:
            data = self.snapshot()._data
        except Exception:  # e.g. a closed actor map: its own repr says so
            return super().__repr__()
        return f"{type(self).__name__}({data!r})"

    @classmethod
    def fromkeys(cls, iterable: Any, value: Any = None) -> Any:
        return plain_class(cls).fromkeys(iterable, value)

    def transaction(self, fn: Callable[[MutableMapping[Any, Any]], T]) -> T:
        st = _state(self)
        run = super().transaction  # type: ignore[misc]
        if st is None:
            return run(fn)  # type: ignore[no-any-return]
        return run(lambda view: fn(_LiveView(view, st)))  # type: ignore[no-any-return]


class _LiveView(MutableMapping[Any, Any]):
    """A transaction's view that hides due entries. It judges a value it read by the
    bindings registered when it looks, which is exact because no ttl binding of a value
    it read is dropped while the transaction runs: a binding is dropped only after its
    entry's removal, and every map's transaction excludes that removal (the in-process
    maps' by their locks, RedisMap's through ``_delete_bound``). Only the clock moves."""

    __slots__ = ("_st", "_view")

    def __init__(self, view: MutableMapping[Any, Any], st: _MapState) -> None:
        self._view = view
        self._st = st

    def _due(self, key: Any, value: Any) -> bool:
        b = self._st.find(key, value)
        return b is not None and b.deadline is not None and _clock() >= b.deadline

    def __getitem__(self, key: Any) -> Any:
        value = self._view[key]
        if self._due(key, value):
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._view[key] = value

    def __delitem__(self, key: Any) -> None:
        self[key]  # KeyError for a due entry
        del self._view[key]

    def __iter__(self) -> Iterator[Any]:
        return iter([k for k, v in list(self._view.items()) if not self._due(k, v)])

    def __len__(self) -> int:
        return sum(1 for _ in self)
