"""``RedisMap``: the ConcurrentMapping protocol on one Redis hash.

Invariants:
- The map is the hash at key ``name``; every entry is one field (the codec's canonical key
  bytes) holding the codec's value bytes. Nothing else of the map's lives in the hash.
- Every call is one server-side atomic step: a single command, or one Lua script. Python
  callbacks run locally between an optimistic read and a commit script that re-checks every
  field the callback's decision depended on, so a commit lands only if nothing it read has
  changed: the whole read-modify-write then takes effect at the commit's instant.
- Round trips: every single-key operation is one; a compute, or a transaction, is one when
  this handle already knows the current values of what it reads (``_seen``), else one per
  read plus the commit; a conflicting commit returns the current values of what it checked,
  so a retry needs no extra read. ``compute_if_absent`` on an absent key is two.
- ``_seen`` maps a field to ``(bytes or None, group)``: what this handle last learnt the
  field held, and a token shared by exactly the entries learnt from one server reply (so
  entries with one token were all true at one instant). It is a hint, never trusted for a
  result: a compute or transaction that reads from it commits (or, when it writes nothing
  or raises, validates) with a check of every value it used, and a callback that read
  several entries from it read entries of one group only, so it never sees a mix of two
  states (a stale state is a real past one, and is refused at the check).
- Writes are never retried after a lost connection (one may have been applied); idempotent
  reads are (``Endpoint.read``).
- Within one process, callers do not conflict with each other: a compute holds ``_rw``
  shared and its key's stripe lock (one of ``_STRIPES``) from its read to its commit, and
  a transaction holds ``_rw`` exclusively. Only other processes can then make a commit
  fail, and calls on one key from this process run one after another, as in the
  in-process maps. The removal of a bound entry (``_delete_bound``) holds ``_rw`` shared
  too, so no binding of this handle is dropped while one of its transactions runs.
- ``_local.state`` is ``"compute"`` while a compute-family callback of this map runs in this
  thread and ``"transaction"`` while a transaction's callback does: re-entry is refused as
  the protocol requires (it could only conflict with itself and retry forever).
- Interrupts (an exception a signal handler raises, such as ``KeyboardInterrupt``, at any
  call's return, backward jump or function entry of the main thread) never leave a lock
  held. Every hold of ``_rw`` and a stripe is taken inside the ``try`` whose ``finally``
  releases it, and each release is a C call made first thing in its own ``try`` that
  ignores ``RuntimeError``: both locks check that the releasing thread holds them (a stripe
  is an ``RLock``), so the release of a lock whose acquisition was interrupted raises and
  is ignored, and never drops another thread's hold. ``_local.held`` is true while this
  thread holds them: a call re-entering then (a finalizer run inside the section) takes
  nothing, so no release can drop an outer hold of the same thread.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import operator
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import redis.exceptions

from ..locks import RWLock
from ..protocol import (
    DELETE,
    MISSING,
    ConcurrentMapping,
    FrozenMap,
    RecursiveUpdateError,
    TransactionView,
)
from ..protocol.mapping import _sentinel_stored
from ..protocol.sentinels import Delete, Missing
from ..protocol.variants import plain_class
from . import counters as c
from .codecs import Codec, get_codec
from .connection import Endpoint
from .errors import RedisConflictError, RedisDecodeError
from .nearcache import ABSENT, NearCache
from .scripts import Scripts

if TYPE_CHECKING:
    from ..protocol.stats import MapStats

__all__ = ["RedisMap"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_HITS, _MISSES = c.HITS, c.MISSES
_IN_OPERATION = "a compute-family callback of a RedisMap wrote to the same map"
_IN_TRANSACTION = "a transaction callback called the RedisMap's own methods (use the view)"
_SCAN_COUNT = 512
_UPDATE_BATCH = 512  # fields per HSET in update(): bounded, so one call never stalls the server
_STRIPES = 64
_LEASE_MS = 10_000
_SEEN_MAX = 1024  # fields remembered in ``_seen``; it is emptied when full
_FIELDS_MAX = 4096  # str keys whose field is cached; the cache is emptied when full
_SEEN_VALUE_MAX = 8192  # larger values are not remembered (so ``_seen`` stays under ~8 MiB)


class _Restart(BaseException):
    """A transaction read found that what it read earlier has changed: start again.

    A BaseException so a callback's ``except Exception`` cannot swallow it; if one does
    anyway, the commit's own check still refuses the stale result."""


class RedisMap(ConcurrentMapping[K, V]):
    """A :class:`~safemap.ConcurrentMapping` stored in one Redis hash, shared by every
    process and host that opens the same ``name``.

    ``RedisMap(*args, url=None, client=None, name=None, codec="json", **kwargs)`` is built
    like ``dict``; ``url`` defaults to ``$SAFEMAP_REDIS_URL``, then
    ``redis://127.0.0.1:6379/0``; ``client`` (a ``redis.Redis``) lends its connection
    settings instead. ``name=None`` creates a fresh map with a unique name; passing a
    name attaches to that map (the data given is then stored into it).

    Guarantees (beyond those of every ``ConcurrentMapping``, across processes and hosts):

    - Every call is atomic on the server: a single command or one Lua script, each one
      round trip; a compute or transaction is one round trip when the handle already
      knows what it reads (see the RedisMap documentation for the exact counts).
    - Compute-family callbacks and ``transaction`` callbacks run locally and commit only if
      nothing they read changed meanwhile; when another process changed it they run again
      (so a callback may run more than once: keep it free of side effects), up to
      ``retry_budget`` attempts with jittered backoff, then
      :class:`~safemap.redis.RedisConflictError` names the keys and nothing was applied.
      A callback never sees a mix of two states. Within one process, computes on a key run
      one after another and a transaction excludes the handle's computes and transactions,
      as in the in-process maps.
    - ``compute_if_absent`` runs its factory at most once per key across processes, under a
      lease (see the RedisMap documentation for what a network partition can still do).
    - Values are copies made through the codec: a read returns an equal object, never the
      one stored; values compare by their canonical encoding.
    - A lost connection raises :class:`~safemap.redis.RedisConnectionError` (a
      ``ConnectionError``); a compound call is then wholly applied or not at all.
    """

    _value_identity = False  # reads return copies: bound entries are removed by equality
    __slots__ = (
        "__weakref__",
        "_codec",
        "_codec_option",
        "_counters",
        "_endpoint",
        "_features",
        "_fields",
        "_local",
        "_name",
        "_near",
        "_options_extra",
        "_retry_budget",
        "_rw",
        "_seen",
        "_stripes",
        "_tls",
        "_transactions",
        "_url",
        "_user_client",
    )

    def __init__(
        self,
        other: Any = (),
        /,
        *,
        url: str | None = None,
        client: Any = None,
        name: str | None = None,
        codec: str | Codec = "json",
        near_cache: bool = False,
        timeout: float | None = 5.0,
        connect_timeout: float | None = 2.0,
        retry_budget: int = 200,
        read_retries: int = 1,
        **kwargs: V,
    ) -> None:
        if retry_budget < 1:
            raise ValueError("retry_budget must be at least 1")
        self._codec = get_codec(codec)
        self._codec_option = codec
        self._url = url
        self._user_client = client
        self._retry_budget = retry_budget
        self._options_extra = {
            "near_cache": near_cache,
            "timeout": timeout,
            "connect_timeout": connect_timeout,
            "retry_budget": retry_budget,
            "read_retries": read_retries,
        }
        self._endpoint = Endpoint(
            url,
            client,
            timeout=timeout,
            connect_timeout=connect_timeout,
            read_retries=read_retries,
        )
        self._name = name if name is not None else f"safemap:{{{uuid.uuid4().hex}}}"
        self._local = _Local()
        # Transactions of this handle running now: written only by the thread that holds
        # _rw exclusively (see _running), read without a lock by the near cache's hit path.
        self._transactions = 0
        self._counters = c.Counters()
        self._tls = self._counters.local  # (the near cache's hit path reads it directly)
        self._seen: dict[bytes, tuple[bytes | None, object]] = {}
        self._fields: dict[str, bytes] = {}  # str key -> its field (see _field)
        self._features: dict[str, bool] | None = None
        self._new_locks()
        _track(self)
        self._near = NearCache(self._endpoint, self._name) if near_cache else None
        if self._near is not None:
            # A handle dropped without close() still stops its listener thread.
            weakref.finalize(self, self._near.close)
        self.update(other, **kwargs)

    # ------------------------------------------------------------------ lifecycle

    def _new_locks(self) -> None:
        # RLocks for their owner check on release (see the module doc), not for re-entry.
        self._stripes = [threading.RLock() for _ in range(_STRIPES)]
        self._rw = RWLock()  # computes hold it shared, transactions exclusively

    @property
    def name(self) -> str:
        """The Redis key of the hash; ``RedisMap(name=m.name)`` elsewhere opens this map."""
        return self._name

    @property
    def codec(self) -> Codec:
        return self._codec

    def close(self) -> None:
        """Close this handle's connections (the data stays on the server). Every later
        call on this handle raises :class:`~safemap.MapClosedError`; a call in flight
        completes. Closing twice is allowed."""
        if self._near is not None:
            self._near.close()
        self._endpoint.close()

    def __enter__(self: _M) -> _M:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"codec": self._codec_option, **self._options_extra}
        if self._user_client is not None:
            options["client"] = self._user_client
        else:
            options["url"] = self._url
        return options

    def server_features(self) -> dict[str, bool]:
        """What the server offers beyond Redis 7.0, asked once per handle (COMMAND INFO):
        ``"hgetdel"`` (Redis 8.0+: ``load_and_delete`` is then one HGETDEL instead of a
        script) and ``"field_ttl"`` (hash-field expiry, Redis 7.4+; no operation of the
        map needs it yet)."""
        features = self._features
        if features is None:
            try:
                reply = self._endpoint.read("COMMAND", "INFO", "HGETDEL", "HEXPIRE")
            except redis.exceptions.ResponseError:  # e.g. an ACL user without COMMAND
                reply = [None, None]
            features = {"hgetdel": bool(reply[0]), "field_ttl": bool(reply[1])}
            self._features = features
        return features

    # --------------------------------------------------------------- guards, codec

    def _state(self) -> str | None:
        return self._local.state

    def _check_read(self) -> None:
        if self._state() == "transaction":
            raise RecursiveUpdateError(_IN_TRANSACTION)

    def _check_write(self) -> None:
        state = self._state()
        if state is not None:
            raise RecursiveUpdateError(_IN_TRANSACTION if state == "transaction" else _IN_OPERATION)

    @contextmanager
    def _running(self, state: str) -> Iterator[None]:
        # Nothing between the first store and the ``try`` checks for signals (attribute
        # stores and int arithmetic only), so an interrupt leaves both changes or neither.
        # A transaction holds _rw exclusively: no other thread writes _transactions now.
        local, transaction = self._local, state == "transaction"
        local.state = state
        if transaction:
            self._transactions += 1
        try:
            yield
        finally:
            local.state = None
            if transaction:
                self._transactions -= 1

    def _field(self, key: Any) -> bytes:
        if type(key) is not str:
            hash(key)  # unhashable keys raise TypeError, as with dict
            return self._codec.encode_key(key)
        # Plain str keys (the common case) are cached: the cache holds nothing else, so a
        # lookup compares str with str only and runs no code of the caller's.
        fields = self._fields
        field = fields.get(key)
        if field is None:
            field = self._codec.encode_key(key)
            if len(fields) >= _FIELDS_MAX:
                fields.clear()
            fields[key] = field
        return field

    def _value(self, field: bytes, data: bytes) -> Any:
        try:
            return self._codec.decode_value(data)
        except RedisDecodeError as exc:
            exc.map_name, exc.field = self._name, field
            exc.args = (f"{exc.args[0]} (map {self._name!r}, field {field!r})",)
            raise
        except (ValueError, TypeError, EOFError) as exc:
            raise RedisDecodeError(
                f"cannot decode the value of field {field!r} in map {self._name!r}: {exc}",
                self._name,
                field,
            ) from None

    def _key(self, field: bytes) -> Any:
        try:
            return self._codec.decode_key(field)
        except (ValueError, TypeError) as exc:
            raise RedisDecodeError(
                f"cannot decode field {field!r} of map {self._name!r} as a key: {exc}",
                self._name,
                field,
            ) from None

    # ----------------------------------------------------- bookkeeping of writes

    def _wrote(
        self, inserts: int = 0, updates: int = 0, deletes: int = 0, *, writes: int = 1
    ) -> None:
        """After any write by this handle (``writes`` keys written in one command): count
        it, and its near cache forgets what it held (so the handle reads its own writes)."""
        cell = self._counters.cell()
        cell[c.INSERTS] += inserts
        cell[c.UPDATES] += updates
        cell[c.DELETES] += deletes
        if self._counters.iterating:
            cell[c.WRITES_DURING_ITERATION] += writes
        if self._near is not None:
            self._near.invalidate()

    def _remember(self, field: bytes, data: bytes | None, group: object) -> None:
        """Record in ``_seen`` that ``field`` held ``data`` at the instant of ``group``."""
        seen = self._seen
        if data is not None and len(data) > _SEEN_VALUE_MAX:
            seen.pop(field, None)
            return
        if len(seen) >= _SEEN_MAX and field not in seen:
            seen.clear()
        seen[field] = (data, group)

    def _read(self, hit: bool) -> None:
        self._counters.cell()[c.HITS if hit else c.MISSES] += 1

    def _hold(self, stripe: Any, *, exclusive: bool) -> None:
        """Take ``_rw`` (shared, or ``exclusive``), then ``stripe`` if not None, counting
        acquisitions and timing waits: for :meth:`_holding` only."""
        self._local.held = True
        cell = self._counters.cell()
        self._take(cell, self._rw.acquire_write if exclusive else self._rw.acquire_read)
        if stripe is not None:
            self._take(cell, stripe.acquire)

    def _holding(self, stripe: Any, exclusive: bool, body: Callable[..., T], *args: Any) -> T:
        """``body(*args)``, holding ``_rw`` (shared, or ``exclusive``) and then ``stripe``
        if not None, unless this thread holds them already; released whatever ``body``
        raises, and whatever interrupts the acquisitions (module doc)."""
        local = self._local
        outer = not local.held
        try:
            if outer:
                self._hold(stripe, exclusive=exclusive)
            return body(*args)
        finally:
            if outer:
                local.held = False
                try:  # not suppress(): its __enter__ is a call before the release
                    if stripe is not None:
                        stripe.release()
                except RuntimeError:
                    pass  # interrupted before it was taken
                finally:
                    try:
                        if exclusive:
                            self._rw.release_write()
                        else:
                            self._rw.release_read()
                    except RuntimeError:
                        pass  # interrupted before it was taken

    def _stripe(self, field: bytes) -> Any:
        return self._stripes[hash(field) % _STRIPES]

    def _take(self, cell: list[float], acquire: Callable[..., object]) -> None:
        """Take a lock by ``acquire`` (``acquire(0)`` only tries: a lock's or an
        ``RWLock``'s), counting the acquisition and, if it had to wait, the wait."""
        cell[c.LOCK_ACQUISITIONS] += 1
        if not acquire(0):
            self._wait(cell, acquire)

    @staticmethod
    def _wait(cell: list[float], acquire: Callable[[], object]) -> None:
        start = time.perf_counter()
        acquire()
        cell[c.LOCK_CONTENTIONS] += 1
        cell[c.LOCK_WAIT] += time.perf_counter() - start

    # ---------------------------------------------------------------- primitives

    def _hget(self, field: bytes) -> bytes | None:
        result: bytes | None = self._endpoint.read("HGET", self._name, field)
        return result

    def _near_hit(self, key: Any) -> Any:
        """The near cache's decoded value for ``key`` (``ABSENT`` if known absent), or
        ``_MISS``; a hit is counted. One dict lookup: the cache's hit path. Not used while
        a transaction of this handle runs (its callback's reads must raise, which the slow
        path does)."""
        near = self._near
        if near is None or self._transactions:
            return _MISS
        hit = near.values.get(key, _MISS)
        if hit is not _MISS:
            try:
                cell = self._tls.cell
            except AttributeError:
                cell = self._counters.cell()
            cell[_MISSES if hit is ABSENT else _HITS] += 1
        return hit

    def _load_slow(self, key: K) -> tuple[V | None, bool]:
        self._check_read()
        field = self._field(key)
        near = self._near
        if near is None:
            data = self._hget(field)
            if data is None:
                self._read(False)
                return None, False
            value = self._value(field, data)
            self._read(True)
            return value, True
        data = near.get(field)
        value = None if data is None else self._value(field, data)
        near.remember(key, field, data, value)
        self._read(data is not None)
        return value, data is not None

    def load(self, key: K) -> tuple[V | None, bool]:
        hit = self._near_hit(key)
        if hit is _MISS:
            return self._load_slow(key)
        return (None, False) if hit is ABSENT else (hit, True)

    def _encode_stored(self, value: Any) -> bytes:
        """``value`` encoded to be stored; the sentinels are never stored, whatever the codec."""
        if value is MISSING or value is DELETE:
            raise _sentinel_stored(value)
        return self._codec.encode_value(value)

    def store(self, key: K, value: V) -> None:
        self._check_write()
        field = self._field(key)
        data = self._encode_stored(value)
        added = self._endpoint.call("HSET", self._name, field, data)
        self._remember(field, data, object())
        self._wrote(inserts=added, updates=1 - added)

    def _store_items(self, items: list[tuple[K, V]]) -> None:
        # update(): one HSET per _UPDATE_BATCH items, each HSET atomic on the server; every
        # key and value is encoded first, so one that cannot be encoded stores nothing.
        self._check_write()
        encoded = [(self._field(key), self._encode_stored(value)) for key, value in items]
        for start in range(0, len(encoded), _UPDATE_BATCH):
            batch = encoded[start : start + _UPDATE_BATCH]
            added = self._endpoint.call("HSET", self._name, *itertools.chain.from_iterable(batch))
            group = object()
            for field, data in batch:
                self._remember(field, data, group)
            self._wrote(inserts=added, updates=len(batch) - added, writes=len(batch))

    def __len__(self) -> int:
        self._check_read()
        length: int = self._endpoint.read("HLEN", self._name)
        return length

    def __contains__(self, key: object) -> bool:
        if self._near is not None:
            return self.load(key)[1]  # type: ignore[arg-type]
        self._check_read()
        field = self._field(key)
        found = bool(self._endpoint.read("HEXISTS", self._name, field))
        self._read(found)
        return found

    def _iter_fields(self) -> Iterator[tuple[bytes, bytes]]:
        # HSCAN may return a field more than once (while the hash is rehashed); a field is
        # yielded the first time only, which with HSCAN's own guarantee (a field present
        # for the whole scan is returned at least once) gives "exactly once".
        self._check_read()
        seen: set[bytes] = set()
        cursor = b"0"
        while True:
            cursor, flat = self._endpoint.read("HSCAN", self._name, cursor, "COUNT", _SCAN_COUNT)
            for field, data in zip(flat[::2], flat[1::2], strict=True):
                if field not in seen:
                    seen.add(field)
                    yield field, data
            if cursor == b"0":
                return

    def _counted(self, fields: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        """``fields``, counted as one iteration of the map while it runs."""
        counters = self._counters
        counters.iteration_started()
        try:
            yield from fields
        finally:
            counters.iteration_ended()

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        for field, data in self._counted(self._iter_fields()):
            yield self._key(field), self._value(field, data)

    def __iter__(self) -> Iterator[K]:
        for field, _ in self._counted(self._iter_fields()):
            yield self._key(field)

    def clear(self) -> None:
        self._check_write()
        removed = int(self._endpoint.script(Scripts.clear, [self._name], []))
        self._seen.clear()
        self._wrote(deletes=removed)

    def _hgetall(self) -> dict[bytes, bytes]:
        flat = self._endpoint.read("HGETALL", self._name)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def snapshot(self) -> FrozenMap[K, V]:
        """The map at one instant (one HGETALL), decoded into a FrozenMap."""
        self._check_read()
        raw = self._hgetall()
        return FrozenMap._adopt({self._key(f): self._value(f, d) for f, d in raw.items()})

    # ------------------------------------------------ server-side compound operations

    def load_or_store(self, key: K, value: V) -> tuple[V, bool]:
        self._check_write()
        field = self._field(key)
        data = self._encode_stored(value)
        reply = self._endpoint.script(Scripts.load_or_store, [self._name], [field, data])
        if reply[0]:
            self._remember(field, reply[1], object())
            return self._value(field, reply[1]), True
        self._remember(field, data, object())
        self._wrote(inserts=1)
        return value, False

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        self._check_write()
        field = self._field(key)
        if self.server_features()["hgetdel"]:
            data = self._endpoint.call("HGETDEL", self._name, "FIELDS", 1, field)[0]
        else:
            reply = self._endpoint.script(Scripts.load_and_delete, [self._name], [field])
            data = reply[1] if reply[0] else None
        self._remember(field, None, object())
        if data is None:
            return None, False
        self._wrote(deletes=1)
        return self._value(field, data), True

    def _hdel(self, key: K) -> bool:
        self._check_write()
        field = self._field(key)
        removed = bool(self._endpoint.call("HDEL", self._name, field))
        self._remember(field, None, object())
        if removed:
            self._wrote(deletes=1)
        return removed

    def delete(self, key: K) -> None:
        self._hdel(key)

    def __delitem__(self, key: K) -> None:
        if not self._hdel(key):
            raise KeyError(key)

    def swap(self, key: K, value: V) -> tuple[V | None, bool]:
        self._check_write()
        field = self._field(key)
        data = self._encode_stored(value)
        reply = self._endpoint.script(Scripts.swap, [self._name], [field, data])
        self._remember(field, data, object())
        if reply[0]:
            self._wrote(updates=1)
            return self._value(field, reply[1]), True
        self._wrote(inserts=1)
        return None, False

    def compare_and_swap(self, key: K, old: V, new: V) -> bool:
        """Store ``new`` if ``key`` holds a value whose encoding equals ``old``'s."""
        self._check_write()
        field = self._field(key)
        new_data = self._encode_stored(new)
        if old is MISSING or old is DELETE:
            return False  # no entry can hold a sentinel
        args = [field, self._codec.encode_value(old), new_data]
        if self._endpoint.script(Scripts.compare_and_swap, [self._name], args):
            self._remember(field, new_data, object())
            self._wrote(updates=1)
            return True
        self._seen.pop(field, None)
        return False

    def compare_and_delete(self, key: K, old: V) -> bool:
        """Remove ``key`` if it holds a value whose encoding equals ``old``'s."""
        self._check_write()
        field = self._field(key)
        if old is MISSING or old is DELETE:
            return False  # no entry can hold a sentinel
        args = [field, self._codec.encode_value(old)]
        if self._endpoint.script(Scripts.delete_if_equal, [self._name], args):
            self._remember(field, None, object())
            self._wrote(deletes=1)
            return True
        self._seen.pop(field, None)
        return False

    def _delete_bound(self, key: K, old: V) -> bool:
        """``compare_and_delete``, holding ``_rw`` shared: the removal of a bound entry
        (``protocol.expiry``), which so never lands while a transaction of this handle
        runs. The transaction's view judges what it read by the bindings registered when it
        looks, and a binding is dropped right after its removal: a removal landing between
        the view's read and that look would leave it a due value with no binding, which
        it would return as live."""
        self._check_write()
        # The plain class's own method: the expiring variant's sees a due entry as absent.
        delete = plain_class(type(self)).compare_and_delete
        return self._holding(None, False, delete, self, key, old)

    def delete_if(self, pred: Callable[[K, V], object]) -> int:
        """Evaluate ``pred`` over a weakly consistent pass (nothing held while it runs),
        then remove, in batches each applied by one script, every match still holding the
        value ``pred`` saw. If ``pred`` raises, nothing is removed."""
        self._check_write()
        matches = [
            (field, data)
            for field, data in self._iter_fields()
            if pred(self._key(field), self._value(field, data))
        ]
        removed = 0
        for start in range(0, len(matches), 256):
            batch = matches[start : start + 256]
            args = [part for pair in batch for part in pair]
            removed += int(self._endpoint.script(Scripts.delete_if_equal, [self._name], args))
            for field, _ in batch:
                self._seen.pop(field, None)
        if removed:
            self._wrote(deletes=removed)
        return removed

    def merge(self, key: K, value: V, fn: Callable[[V, V], V | Delete]) -> V | None:
        """As the protocol's ``merge``. ``merge(k, n, operator.add)`` with an ``int`` ``n``
        runs as one server step (HINCRBY in a script) when the codec stores ints as decimal
        digits and the stored value is an int of 64 bits; otherwise it runs as an
        optimistic compute."""
        amount: Any = value
        if (
            fn is operator.add
            and type(amount) is int
            and self._codec.integers_are_decimal
            and -(2**63) <= amount < 2**63
        ):
            self._check_write()
            field = self._field(key)
            try:
                existed, total = self._endpoint.script(
                    Scripts.merge_add, [self._name], [field, amount]
                )
            except redis.exceptions.ResponseError:
                pass  # not an int of 64 bits (or not a number): the general path decides
            else:
                self._remember(field, self._codec.encode_value(total), object())
                self._wrote(inserts=1 - existed, updates=existed)
                return total  # type: ignore[no-any-return]
        return super().merge(key, value, fn)

    # ------------------------------------------------------- optimistic operations

    def _backoff(self, attempt: int) -> None:
        # The first retry is immediate: a refused commit returned the current values, so
        # the retry has what it needs and usually lands. Later ones sleep first, with full
        # jitter over an exponentially growing window (0.1 ms doubling to 20 ms).
        if attempt:
            time.sleep(random.uniform(0, min(0.02, 0.0001 * (2 ** min(attempt - 1, 16)))))

    def _conflict(self, what: str, keys: tuple[object, ...]) -> RedisConflictError:
        return RedisConflictError(
            f"{what} on RedisMap {self._name!r} gave up after {self._retry_budget} attempts:"
            f" concurrent writers kept changing {list(keys)!r}; nothing was applied",
            keys,
        )

    def _commit(
        self,
        reads: Mapping[bytes, bytes | None],
        writes: list[tuple[str, bytes, bytes]],
        *,
        length: int = -1,
    ) -> dict[bytes, bytes | None] | None:
        """Apply ``writes`` if every field of ``reads`` still holds what was read (and, with
        ``length`` >= 0, the hash still has that many fields); one round trip. Returns
        ``None`` if applied, else the current values of ``reads`` at the commit's instant
        (empty if the length changed). Either way ``_seen`` learns the fields' values at
        that instant."""
        args: list[Any] = [length, len(reads)]
        for field, data in reads.items():
            args += [field, "0", ""] if data is None else [field, "1", data]
        for op, field, data in writes:
            args += [op, field, data]
        reply = self._endpoint.script(Scripts.commit, [self._name], args)
        group = object()
        if reply[0] == 1:
            for field, data in reads.items():
                self._remember(field, data, group)
            for op, field, data in writes:
                self._remember(field, data if op == "s" else None, group)
            if writes:
                self._wrote(inserts=reply[1], updates=reply[2], deletes=reply[3])
            return None
        return self._learn(reads, reply, group)

    def _learn(
        self, reads: Mapping[bytes, bytes | None], reply: list[Any], group: object
    ) -> dict[bytes, bytes | None]:
        """The current values a conflict reply carries for ``reads`` (none if the length
        changed), also recorded in ``_seen`` as one group."""
        if len(reply) == 1:  # the length changed: nothing learnt about the fields
            for field in reads:
                self._seen.pop(field, None)
            return {}
        current: dict[bytes, bytes | None] = {}
        for field, flag, data in zip(reads, reply[1::2], reply[2::2], strict=True):
            current[field] = data if flag == b"1" else None
            self._remember(field, current[field], group)
        return current

    def compute(self, key: K, fn: Callable[[K, V | Missing], V | Delete]) -> V | None:
        """As the protocol's ``compute``, run optimistically: ``fn`` runs on the value read
        (or last known to this handle) and its result commits only if the entry still holds
        that value; otherwise ``fn`` runs again on the current one (so ``fn`` may run more
        than once). One round trip when this handle knows the current value."""
        self._check_write()
        field = self._field(key)
        return self._holding(self._stripe(field), False, self._compute_keyed, key, field, fn)

    def _compute_keyed(
        self, key: K, field: bytes, fn: Callable[[K, V | Missing], V | Delete]
    ) -> V | None:
        local = self._local
        known = self._seen.get(field)
        data = self._hget(field) if known is None else known[0]
        fresh = known is None  # read during this call (else only a hint to verify)
        conflicts = 0
        for _ in range(self._retry_budget):
            old = MISSING if data is None else self._value(field, data)
            try:
                local.state = "compute"  # (as _running, without a generator's cost)
                try:
                    new = fn(key, old)
                finally:
                    local.state = None
            except Exception:
                current = None if fresh else self._commit({field: data}, [])
                if current is None:
                    raise  # fn raised on the current value: that is its outcome
                data, fresh = current[field], True
                continue
            if new is DELETE:
                writes = [("d", field, b"")] if data is not None else []
            else:
                encoded = self._encode_stored(new)
                writes = [] if encoded == data else [("s", field, encoded)]
            if fresh and not writes:
                return None if new is DELETE else new  # nothing to change: at the read
            current = self._commit({field: data}, writes)
            if current is None:
                return None if new is DELETE else new
            self._backoff(conflicts)  # (the first retry is immediate)
            conflicts += 1
            data, fresh = current[field], True
        raise self._conflict("compute", (key,))

    def compute_if_absent(self, key: K, factory: Callable[[K], V | Delete]) -> V | None:
        """The value for ``key``, first storing ``factory(key)`` if absent. ``factory`` runs
        at most once per absent key across every process: the caller that wins a per-key
        lease runs it (the lease is renewed while it runs and checked at commit); the others
        wait for the value. If the lease is lost (a partition longer than the lease), the
        commit is refused and the call returns what the new lease holder stored. One round
        trip when the key is present, two when this caller runs the factory."""
        self._check_write()
        field = self._field(key)
        wait = 0
        while True:
            result = self._holding(
                self._stripe(field), False, self._claim_keyed, key, field, factory
            )
            if result is not _AGAIN:
                return result  # type: ignore[no-any-return]
            self._backoff(min(wait, 8))  # another caller runs the factory: wait for it
            wait += 1

    def _claim_keyed(self, key: K, field: bytes, factory: Callable[[K], V | Delete]) -> Any:
        """One attempt of compute_if_absent: its result, or ``_AGAIN`` while another caller
        holds the key's lease (or this one lost it)."""
        lease_key = f"{self._name}:lease:{field.hex()}"
        keys = [self._name, lease_key]
        token = uuid.uuid4().hex
        reply = self._endpoint.script(Scripts.claim, keys, [field, token, _LEASE_MS])
        if reply[0] == 1:
            return self._value(field, reply[1])
        if reply[0] != 0:
            return _AGAIN
        try:
            _LEASES.hold(self._endpoint, lease_key, token)
            with self._running("compute"):
                new = factory(key)
            args: list[Any] = [field, token, "n", ""]
            if new is not DELETE:
                args[2:] = ["s", self._encode_stored(new)]
            done = self._endpoint.script(Scripts.fenced_put, keys, args)
        except BaseException:
            with contextlib.suppress(Exception):  # else it expires by itself
                self._endpoint.script(Scripts.lease, [lease_key], [token, 0])
            raise
        finally:
            _LEASES.drop(token, None)  # a C call: no signal check before it
        if done[0] == 0:
            stored = new is not DELETE
            self._remember(field, args[3] if stored else None, object())
            if stored:
                self._wrote(inserts=1)
            return None if new is DELETE else new
        if done[0] == 1:
            return self._value(field, done[1])
        return _AGAIN  # -1: the lease was lost; whoever holds it now stores the value

    # ------------------------------------------------------------------ transaction

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        """As the protocol's ``transaction``, run optimistically: ``fn`` sees a consistent
        view (every read re-checks what was read before, or comes from values this handle
        learnt at one instant), and its writes commit in one script only if nothing it
        read has changed; otherwise ``fn`` runs again. One round trip when this handle
        knows the current values of what ``fn`` reads."""
        self._check_write()
        result: T = self._holding(None, True, self._transaction, fn)
        return result

    def _transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        conflicts = 0
        for _ in range(self._retry_budget):
            reads = _TransactionReads(self)
            view: TransactionView[K, V] = TransactionView(reads)
            try:
                with self._running("transaction"):
                    result = fn(view)
            except _Restart:
                view._close()
                self._backoff(conflicts)
                conflicts += 1
                continue
            except Exception:
                view._close()
                if not reads.speculative:
                    raise  # fn raised on the current state: that is its outcome
                if self._commit(reads.fields, [], length=reads.length) is None:
                    raise  # the state it saw is still current: the same outcome
                continue
            except BaseException:
                view._close()
                raise
            deleted, written = view._take_changes()
            ops = [("d", self._field(k), b"") for k in deleted]
            ops += [("s", self._field(k), self._encode_stored(v)) for k, v in written.items()]
            if not ops and not reads.speculative:
                return result  # every read was checked at the last one: linearizes there
            if self._commit(reads.fields, ops, length=reads.length) is None:
                return result
            self._backoff(conflicts)
            conflicts += 1
        raise self._conflict("transaction", ())

    # --------------------------------------------------------------------- dict API

    def __getitem__(self, key: K) -> V:
        hit = self._near_hit(key)
        if hit is _MISS:
            value, found = self._load_slow(key)
            if found:
                return value  # type: ignore[return-value]
        elif hit is not ABSENT:
            return hit  # type: ignore[no-any-return]
        raise KeyError(key)

    def get(self, key: K, default: Any = None, /) -> Any:
        hit = self._near_hit(key)
        if hit is _MISS:
            value, found = self._load_slow(key)
            return value if found else default
        return default if hit is ABSENT else hit

    # ------------------------------------------------------------------- statistics

    def _collect_stats(self) -> MapStats:
        """This handle's statistics: its own operations (other handles and processes on
        the same map count in their own), the map's size from the server (HLEN)."""
        from ..protocol.stats import MapStats

        totals = self._counters.totals()
        return MapStats(
            kind=type(self).__name__,
            hits=int(totals[c.HITS]),
            misses=int(totals[c.MISSES]),
            inserts=int(totals[c.INSERTS]),
            updates=int(totals[c.UPDATES]),
            deletes=int(totals[c.DELETES]),
            size=len(self),
            iterations=int(totals[c.ITERATIONS]),
            writes_during_iteration=int(totals[c.WRITES_DURING_ITERATION]),
            lock_acquisitions=int(totals[c.LOCK_ACQUISITIONS]),
            lock_contentions=int(totals[c.LOCK_CONTENTIONS]),
            lock_wait_seconds=totals[c.LOCK_WAIT],
            notes=(
                "counts are this handle's own operations: other handles and processes "
                "using the same map count in their own statistics",
                "size is the server's (HLEN) at the snapshot, so it includes every client's writes",
                "locks are this handle's in-process stripe and transaction locks; waits "
                "for other processes show as retries, not as lock waits",
            ),
        )


_M = TypeVar("_M", bound=RedisMap[Any, Any])
# Maps are unhashable (mutable mappings), so they are tracked by id with weak references.
_LIVE_MAPS: dict[int, weakref.ref[RedisMap[Any, Any]]] = {}


def _track(m: RedisMap[Any, Any]) -> None:
    key = id(m)
    _LIVE_MAPS[key] = weakref.ref(m, lambda _ref: _LIVE_MAPS.pop(key, None))


def _after_fork_in_child() -> None:
    # Only the forking thread survives: locks other threads held would never be released.
    # The forking thread holds none of them (fork from a callback is not supported).
    for ref in list(_LIVE_MAPS.values()):
        m = ref()
        if m is not None:
            m._new_locks()
            m._endpoint.after_fork_in_child()
    _LEASES.after_fork_in_child()


class _Local(threading.local):
    """One handle's per-thread state (module doc)."""

    state: str | None = None
    held = False


class _LeaseKeeper:
    """Renews every compute_if_absent lease this process holds, every third of its life,
    from one thread (started when a lease is taken and none runs; it ends when none is
    held), so taking a lease costs no thread start.

    A lease is known by its token. ``hold`` is called inside the ``try`` whose ``finally``
    calls ``drop(token, None)``: ``drop`` is the dict's own ``pop`` (a C call, no check for
    signals before it runs, no lock), so an interrupt can never leave a lease renewed for
    ever. ``hold`` takes the lock as the module doc's sections do."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())  # RLock: owner-checked release
        self._held: dict[str, tuple[Endpoint, str]] = {}  # token -> (endpoint, lease key)
        self._due: list[tuple[float, str]] = []  # heap of (next renewal, token)
        self._thread: threading.Thread | None = None
        self.drop = self._held.pop

    def hold(self, endpoint: Endpoint, lease_key: str, token: str) -> None:
        cond = self._cond
        try:
            cond.acquire()
            self._held[token] = (endpoint, lease_key)
            heapq.heappush(self._due, (time.monotonic() + _LEASE_MS / 3000, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="safemap-lease")
                self._thread.start()
            cond.notify()
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                cond.release()
            except RuntimeError:
                pass  # interrupted before it was taken

    def _run(self) -> None:
        while True:
            with self._cond:  # (no signal reaches this thread: a plain with is safe)
                while True:
                    while self._due and self._due[0][1] not in self._held:
                        heapq.heappop(self._due)  # dropped
                    if not self._due:
                        self._thread = None
                        return
                    wait = self._due[0][0] - time.monotonic()
                    if wait <= 0:
                        _, token = heapq.heappop(self._due)
                        lease = self._held.get(token)  # dropped just now (without the lock)?
                        if lease is None:
                            continue
                        heapq.heappush(self._due, (time.monotonic() + _LEASE_MS / 3000, token))
                        break
                    self._cond.wait(wait)
            endpoint, lease_key = lease
            # If this fails (connection down), the next renewal tries again; the fence at
            # commit protects the data if the lease expires meanwhile.
            with contextlib.suppress(Exception):
                endpoint.script(Scripts.lease, [lease_key], [token, _LEASE_MS])

    def after_fork_in_child(self) -> None:
        self.__init__()  # type: ignore[misc]  # the parent's leases and thread are not ours


_LEASES = _LeaseKeeper()

os.register_at_fork(after_in_child=_after_fork_in_child)


class _TransactionReads(Mapping[Any, Any]):
    """The base a transaction's view reads. A field is served from the owner's ``_seen``
    while every such read so far came from one group and nothing was read from the server
    (``speculative``: the commit then checks them); otherwise it is fetched, each fetch
    checking that everything read before is unchanged (raising ``_Restart`` otherwise,
    after the owner learnt the current values). ``fields`` records every field read and,
    once the whole map was read, ``length`` its size."""

    def __init__(self, owner: RedisMap[Any, Any]) -> None:
        self._owner = owner
        self.fields: dict[bytes, bytes | None] = {}
        self.length = -1
        self.speculative = False  # some value came from _seen (unchecked)
        self.fresh = False  # some value came from the server in this attempt
        self._group: object = None
        self._all: dict[Any, Any] | None = None
        self._values: dict[bytes, Any] = {}

    def _run(self, mode: str, fields: list[bytes]) -> list[Any]:
        owner = self._owner
        args: list[Any] = [mode, self.length, len(self.fields)]
        for field, data in self.fields.items():
            args += [field, "0", ""] if data is None else [field, "1", data]
        args += fields
        reply: list[Any] = owner._endpoint.script(
            Scripts.read, [owner._name], args, idempotent=True
        )
        self.fresh = True
        if reply[0] != 1:
            owner._learn(self.fields, reply, object())
            raise _Restart
        self.speculative = False  # everything read so far was checked at this instant
        return reply

    def _lookup(self, key: Any) -> Any:
        owner = self._owner
        field = owner._field(key)
        if field not in self.fields:
            known = None if self.fresh else owner._seen.get(field)
            if known is not None and (self._group is None or known[1] is self._group):
                self._group = known[1]
                self.speculative = True
                self.fields[field] = known[0]
            else:
                reply = self._run("f", [field])
                self.fields[field] = reply[2] if reply[1] == b"1" else None
        data = self.fields[field]
        if data is None:
            return _ABSENT
        if field not in self._values:
            self._values[field] = owner._value(field, data)
        return self._values[field]

    def __getitem__(self, key: Any) -> Any:
        value = self._lookup(key)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self._lookup(key) is not _ABSENT

    def _load_all(self) -> dict[Any, Any]:
        if self._all is None:
            owner = self._owner
            flat = self._run("a", [])
            raw = dict(zip(flat[1::2], flat[2::2], strict=True))
            self.fields = {**dict.fromkeys(self.fields), **raw}  # absent ones stay absent
            self.length = len(raw)
            self._all = {owner._key(f): owner._value(f, d) for f, d in raw.items()}
        return self._all

    def __iter__(self) -> Iterator[Any]:
        return iter(self._load_all())

    def __len__(self) -> int:
        return len(self._load_all())


_ABSENT: Any = object()
_MISS: Any = object()
_AGAIN: Any = object()  # compute_if_absent: the key's lease is another caller's; wait
