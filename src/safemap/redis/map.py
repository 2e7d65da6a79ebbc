"""``RedisMap``: the ConcurrentMapping protocol on one Redis hash.

Invariants:
- The map is the hash at key ``name``; every entry is one field (the codec's canonical key
  bytes) holding the codec's value bytes. Nothing else of the map's lives in the hash.
- Every call is one server-side atomic step: a single command, or one Lua script. Python
  callbacks run locally between an optimistic read and a commit script that re-checks every
  field the callback's decision depended on, so a commit lands only if nothing it read has
  changed: the whole read-modify-write then takes effect at the commit's instant.
- Writes are never retried after a lost connection (one may have been applied); idempotent
  reads are (``Endpoint.read``).
- Within one process, callers do not conflict with each other: a compute holds its key's
  stripe lock (one of ``_STRIPES``) from its read to its commit, and a transaction holds
  ``_txn_lock`` and every stripe (taken in index order, so no two callers deadlock). Only
  other processes can then make a commit fail, and calls on one key from this process run
  one after another, as in the in-process maps.
- ``_local.state`` is ``"compute"`` while a compute-family callback of this map runs in this
  thread and ``"transaction"`` while a transaction's callback does: re-entry is refused as
  the protocol requires (it could only conflict with itself and retry forever).
"""

from __future__ import annotations

import contextlib
import operator
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TypeVar

import redis.exceptions

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
from .codecs import Codec, get_codec
from .connection import Endpoint
from .errors import RedisConflictError, RedisDecodeError
from .nearcache import ABSENT, NearCache
from .scripts import Scripts

__all__ = ["RedisMap"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_IN_OPERATION = "a compute-family callback of a RedisMap wrote to the same map"
_IN_TRANSACTION = "a transaction callback called the RedisMap's own methods (use the view)"
_SCAN_COUNT = 512
_STRIPES = 64
_LEASE_MS = 10_000


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

    - Every call is atomic on the server: a single command or one Lua script.
    - Compute-family callbacks and ``transaction`` callbacks run locally and commit only if
      nothing they read changed meanwhile; when another process changed it they run again
      (so a callback may run more than once: keep it free of side effects), up to
      ``retry_budget`` attempts with jittered backoff, then
      :class:`~safemap.redis.RedisConflictError` names the keys and nothing was applied.
      Within one process, computes on a key run one after another and a transaction
      excludes the handle's computes and transactions, as in the in-process maps.
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
        "_count_lock",
        "_endpoint",
        "_local",
        "_name",
        "_near",
        "_options_extra",
        "_retry_budget",
        "_scripts",
        "_stripes",
        "_transactions",
        "_txn_lock",
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
        self._scripts = Scripts(self._endpoint.client)
        self._local = threading.local()
        self._transactions = 0  # transactions of this handle running now (any thread)
        self._count_lock = threading.Lock()
        self._new_locks()
        _track(self)
        self._near = NearCache(self._endpoint, self._name) if near_cache else None
        if self._near is not None:
            # A handle dropped without close() still stops its listener thread.
            weakref.finalize(self, self._near.close)
        self.update(other, **kwargs)

    # ------------------------------------------------------------------ lifecycle

    def _new_locks(self) -> None:
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        self._txn_lock = threading.Lock()

    @property
    def name(self) -> str:
        """The Redis key of the hash; ``RedisMap(name=m.name)`` elsewhere opens this map."""
        return self._name

    @property
    def codec(self) -> Codec:
        return self._codec

    def close(self) -> None:
        """Close this handle's connections (the data stays on the server)."""
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

    # --------------------------------------------------------------- guards, codec

    def _state(self) -> str | None:
        return getattr(self._local, "state", None)

    def _check_read(self) -> None:
        if self._state() == "transaction":
            raise RecursiveUpdateError(_IN_TRANSACTION)

    def _check_write(self) -> None:
        state = self._state()
        if state is not None:
            raise RecursiveUpdateError(_IN_TRANSACTION if state == "transaction" else _IN_OPERATION)

    @contextmanager
    def _running(self, state: str) -> Iterator[None]:
        self._local.state = state
        if state == "transaction":
            with self._count_lock:
                self._transactions += 1
        try:
            yield
        finally:
            self._local.state = None
            if state == "transaction":
                with self._count_lock:
                    self._transactions -= 1

    def _field(self, key: Any) -> bytes:
        hash(key)  # unhashable keys raise TypeError, as with dict
        return self._codec.encode_key(key)

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

    def _written(self) -> None:
        """After any write by this handle: its near cache forgets what it held."""
        if self._near is not None:
            self._near.invalidate()

    # ---------------------------------------------------------------- primitives

    def _hget(self, field: bytes) -> bytes | None:
        client = self._endpoint.client
        result: bytes | None = self._endpoint.read(lambda: client.hget(self._name, field))
        return result

    def _near_hit(self, key: Any) -> Any:
        """The near cache's decoded value for ``key`` (``ABSENT`` if known absent), or
        ``_MISS``. One dict lookup: the cache's hit path. Not used while a transaction of
        this handle runs (its callback's reads must raise, which the slow path does)."""
        near = self._near
        if near is None or self._transactions:
            return _MISS
        return near.values.get(key, _MISS)

    def _load_slow(self, key: K) -> tuple[V | None, bool]:
        self._check_read()
        field = self._field(key)
        near = self._near
        if near is None:
            data = self._hget(field)
            return (None, False) if data is None else (self._value(field, data), True)
        data = near.get(field)
        value = None if data is None else self._value(field, data)
        near.remember(key, field, data, value)
        return value, data is not None

    def load(self, key: K) -> tuple[V | None, bool]:
        hit = self._near_hit(key)
        if hit is not _MISS:
            return (None, False) if hit is ABSENT else (hit, True)
        return self._load_slow(key)

    def _encode_stored(self, value: Any) -> bytes:
        """``value`` encoded to be stored; the sentinels are never stored, whatever the codec."""
        if value is MISSING or value is DELETE:
            raise _sentinel_stored(value)
        return self._codec.encode_value(value)

    def store(self, key: K, value: V) -> None:
        self._check_write()
        field = self._field(key)
        data = self._encode_stored(value)
        client = self._endpoint.client
        self._endpoint.call(lambda: client.hset(self._name, field, data))
        self._written()

    def __len__(self) -> int:
        self._check_read()
        client = self._endpoint.client
        length: int = self._endpoint.read(lambda: client.hlen(self._name))
        return length

    def __contains__(self, key: object) -> bool:
        if self._near is not None:
            return self.load(key)[1]  # type: ignore[arg-type]
        self._check_read()
        field = self._field(key)
        client = self._endpoint.client
        return bool(self._endpoint.read(lambda: client.hexists(self._name, field)))

    def _iter_fields(self) -> Iterator[tuple[bytes, bytes]]:
        # HSCAN may return a field more than once (while the hash is rehashed); a field is
        # yielded the first time only, which with HSCAN's own guarantee (a field present
        # for the whole scan is returned at least once) gives "exactly once".
        self._check_read()
        client = self._endpoint.client
        seen: set[bytes] = set()
        cursor = 0
        while True:
            cursor, batch = self._endpoint.read(_scan(client, self._name, cursor))
            for field, data in batch.items():
                if field not in seen:
                    seen.add(field)
                    yield field, data
            if cursor == 0:
                return

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        for field, data in self._iter_fields():
            yield self._key(field), self._value(field, data)

    def __iter__(self) -> Iterator[K]:
        for field, _ in self._iter_fields():
            yield self._key(field)

    def clear(self) -> None:
        self._check_write()
        client = self._endpoint.client
        self._endpoint.call(lambda: client.delete(self._name))
        self._written()

    def _hgetall(self) -> dict[bytes, bytes]:
        client = self._endpoint.client
        raw: dict[bytes, bytes] = self._endpoint.read(lambda: client.hgetall(self._name))
        return raw

    def snapshot(self) -> FrozenMap[K, V]:
        """The map at one instant (one HGETALL), decoded into a FrozenMap."""
        self._check_read()
        raw = self._hgetall()
        return FrozenMap._adopt({self._key(f): self._value(f, d) for f, d in raw.items()})

    # ------------------------------------------------ server-side compound operations

    def _script(self, script: Any, args: list[Any], keys: list[str] | None = None) -> Any:
        client = self._endpoint.client
        keys = keys or [self._name]
        try:
            return self._endpoint.call(lambda: script(keys=keys, args=args, client=client))
        finally:
            self._written()

    def load_or_store(self, key: K, value: V) -> tuple[V, bool]:
        self._check_write()
        field = self._field(key)
        reply = self._script(self._scripts.load_or_store, [field, self._encode_stored(value)])
        if reply[0]:
            return self._value(field, reply[1]), True
        return value, False

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        self._check_write()
        field = self._field(key)
        reply = self._script(self._scripts.load_and_delete, [field])
        if reply[0]:
            return self._value(field, reply[1]), True
        return None, False

    def delete(self, key: K) -> None:
        self._check_write()
        field = self._field(key)
        client = self._endpoint.client
        self._endpoint.call(lambda: client.hdel(self._name, field))
        self._written()

    def swap(self, key: K, value: V) -> tuple[V | None, bool]:
        self._check_write()
        field = self._field(key)
        reply = self._script(self._scripts.swap, [field, self._encode_stored(value)])
        if reply[0]:
            return self._value(field, reply[1]), True
        return None, False

    def compare_and_swap(self, key: K, old: V, new: V) -> bool:
        """Store ``new`` if ``key`` holds a value whose encoding equals ``old``'s."""
        self._check_write()
        field = self._field(key)
        new_data = self._encode_stored(new)
        if old is MISSING or old is DELETE:
            return False  # no entry can hold a sentinel
        args = [field, self._codec.encode_value(old), new_data]
        return bool(self._script(self._scripts.compare_and_swap, args))

    def compare_and_delete(self, key: K, old: V) -> bool:
        """Remove ``key`` if it holds a value whose encoding equals ``old``'s."""
        self._check_write()
        field = self._field(key)
        if old is MISSING or old is DELETE:
            return False  # no entry can hold a sentinel
        args = [field, self._codec.encode_value(old)]
        return bool(self._script(self._scripts.delete_if_equal, args))

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
            args = [part for pair in matches[start : start + 256] for part in pair]
            removed += int(self._script(self._scripts.delete_if_equal, args))
        return removed

    def merge(self, key: K, value: V, fn: Callable[[V, V], V | Delete]) -> V | None:
        """As the protocol's ``merge``. ``merge(k, n, operator.add)`` with an ``int`` ``n``
        runs as one server command (HINCRBY) when the codec stores ints as decimal digits
        and the stored value is an int; otherwise it runs as an optimistic compute."""
        amount: Any = value
        if (
            fn is operator.add
            and type(amount) is int
            and self._codec.integers_are_decimal
            and -(2**63) <= amount < 2**63
        ):
            self._check_write()
            field = self._field(key)
            client = self._endpoint.client
            try:
                total = self._endpoint.call(lambda: client.hincrby(self._name, field, amount))
            except redis.exceptions.ResponseError:
                pass  # not an int of 64 bits (or not a number): the general path decides
            else:
                self._written()
                return total  # type: ignore[no-any-return]
        return super().merge(key, value, fn)

    # ------------------------------------------------------- optimistic operations

    def _backoff(self, attempt: int) -> None:
        # Full jitter over an exponentially growing window (0.1 ms doubling to 20 ms).
        time.sleep(random.uniform(0, min(0.02, 0.0001 * (2 ** min(attempt, 16)))))

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
        lease: tuple[str, str] | None = None,
    ) -> int:
        args: list[Any] = [lease[1] if lease else "", length, len(reads)]
        for field, data in reads.items():
            args += [field, "0", ""] if data is None else [field, "1", data]
        for op, field, data in writes:
            args += [op, field, data]
        keys = [self._name, lease[0]] if lease else [self._name]
        return int(self._script(self._scripts.commit, args, keys))

    def compute(self, key: K, fn: Callable[[K, V | Missing], V | Delete]) -> V | None:
        """As the protocol's ``compute``, run optimistically: ``fn`` runs on the value read
        and its result commits only if the entry is unchanged; otherwise ``fn`` runs again
        on the new value (so ``fn`` may run more than once)."""
        return self._compute(key, fn)

    def _compute(
        self,
        key: K,
        fn: Callable[[K, V | Missing], V | Delete],
        lease: tuple[str, str] | None = None,
    ) -> V | None:
        self._check_write()
        field = self._field(key)
        with self._stripes[hash(field) % _STRIPES]:
            for attempt in range(self._retry_budget):
                data = self._hget(field)
                old = MISSING if data is None else self._value(field, data)
                with self._running("compute"):
                    new = fn(key, old)
                if new is DELETE:
                    if data is None and lease is None:
                        return None  # nothing to change: linearizes at the read
                    writes = [("d", field, b"")] if data is not None else []
                else:
                    encoded = self._encode_stored(new)
                    if encoded == data and lease is None:
                        return new  # an unchanged value: linearizes at the read
                    writes = [("s", field, encoded)]
                outcome = self._commit({field: data}, writes, lease=lease)
                if outcome == 1:
                    return None if new is DELETE else new
                if outcome == -1:
                    raise _LeaseLost
                self._backoff(attempt)
        raise self._conflict("compute", (key,))

    def compute_if_absent(self, key: K, factory: Callable[[K], V | Delete]) -> V | None:
        """The value for ``key``, first storing ``factory(key)`` if absent. ``factory`` runs
        at most once per absent key across every process: the caller that wins a per-key
        lease runs it (the lease is renewed while it runs and checked at commit); the others
        wait for the value. If the lease is lost (a partition longer than the lease), the
        commit is refused and the call returns what the new lease holder stored."""
        self._check_write()
        field = self._field(key)
        lease_key = f"{self._name}:lease:{field.hex()}"
        client = self._endpoint.client
        wait = 0
        while True:
            data = self._hget(field)
            if data is not None:
                return self._value(field, data)  # type: ignore[no-any-return]
            token = uuid.uuid4().hex
            claim = _claim(client, lease_key, token)
            got = self._endpoint.call(claim)
            if not got:
                self._backoff(min(wait, 8))  # another caller runs the factory: wait for it
                wait += 1
                continue
            renewer = _LeaseRenewer(self, lease_key, token)
            try:
                return self._compute(
                    key,
                    lambda k, old: factory(k) if old is MISSING else old,
                    lease=(lease_key, token),
                )
            except _LeaseLost:
                continue  # someone else holds the key's lease now: read what they store
            finally:
                renewer.stop()

    # ------------------------------------------------------------------ transaction

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        """As the protocol's ``transaction``, run optimistically: ``fn`` sees a consistent
        view (every read re-checks what was read before), and its writes commit in one
        script only if nothing it read has changed; otherwise ``fn`` runs again."""
        self._check_write()
        with contextlib.ExitStack() as held:
            held.enter_context(self._txn_lock)
            for stripe in self._stripes:
                held.enter_context(stripe)
            return self._transaction(fn)

    def _transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        for attempt in range(self._retry_budget):
            reads = _TransactionReads(self)
            view: TransactionView[K, V] = TransactionView(reads)
            try:
                with self._running("transaction"):
                    result = fn(view)
            except _Restart:
                view._close()
                self._backoff(attempt)
                continue
            except BaseException:
                view._close()
                raise
            deleted, written = view._take_changes()
            ops = [("d", self._field(k), b"") for k in deleted]
            ops += [("s", self._field(k), self._encode_stored(v)) for k, v in written.items()]
            if not ops and len(reads.fields) <= 1 and reads.length < 0:
                return result  # read at most one field: already linearizable at that read
            if self._commit(reads.fields, ops, length=reads.length) == 1:
                return result
            self._backoff(attempt)
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


os.register_at_fork(after_in_child=_after_fork_in_child)


def _claim(client: Any, lease_key: str, token: str) -> Callable[[], Any]:
    return lambda: client.set(lease_key, token, nx=True, px=_LEASE_MS)


def _scan(client: Any, name: str, cursor: int) -> Callable[[], Any]:
    return lambda: client.hscan(name, cursor, count=_SCAN_COUNT)


class _LeaseLost(Exception):
    """The fenced commit found that the key's lease is no longer ours."""


class _LeaseRenewer:
    """Extends a compute_if_absent lease every third of its life while the factory runs."""

    def __init__(self, owner: RedisMap[Any, Any], lease_key: str, token: str) -> None:
        self._owner, self._key, self._token = owner, lease_key, token
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="safemap-lease")
        self._thread.start()

    def _run(self) -> None:
        script = self._owner._scripts.lease
        client = self._owner._endpoint.client
        while not self._done.wait(_LEASE_MS / 3000):
            try:
                if not script(keys=[self._key], args=[self._token, _LEASE_MS], client=client):
                    return  # lost: the fenced commit will refuse
            except Exception:
                continue  # the connection is down: try again; the fence protects the data

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        script = self._owner._scripts.lease
        client = self._owner._endpoint.client
        with contextlib.suppress(Exception):  # if it fails, the lease expires by itself
            script(keys=[self._key], args=[self._token, 0], client=client)  # release if ours


class _TransactionReads(Mapping[Any, Any]):
    """The base a transaction's view reads: fetches lazily, checking at each fetch that
    everything read before is unchanged (raising ``_Restart`` otherwise), and records
    every field read (``fields``) and, once the whole map was read, its length."""

    def __init__(self, owner: RedisMap[Any, Any]) -> None:
        self._owner = owner
        self.fields: dict[bytes, bytes | None] = {}
        self.length = -1
        self._all: dict[Any, Any] | None = None
        self._values: dict[bytes, Any] = {}

    def _checks(self) -> list[Any]:
        args: list[Any] = [self.length, len(self.fields)]
        for field, data in self.fields.items():
            args += [field, "0", ""] if data is None else [field, "1", data]
        return args

    def _run(self, mode: str, fields: list[bytes]) -> Any:
        owner = owner_ = self._owner
        client = owner._endpoint.client
        args = [mode, *self._checks(), *fields]
        reply = owner._endpoint.read(
            lambda: owner_._scripts.read(keys=[owner._name], args=args, client=client)
        )
        if reply is None:
            raise _Restart
        return reply

    def _lookup(self, key: Any) -> Any:
        owner = self._owner
        field = owner._field(key)
        if field not in self.fields:
            reply = self._run("f", [field])
            self.fields[field] = reply[1] if reply[0] == b"1" else None
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
            raw = dict(zip(flat[::2], flat[1::2], strict=True))
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
