"""Shared fixtures for the protocol test suite.

``MAP_TYPES`` is the registry of mutable map types that every shared test runs against.
Adding a map type is one line below; the native types join automatically when
``safemap.native`` builds.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import redis_server as redis_support
from support.asyncmap import BlockingAsyncActorMap
from support.cachemap import BoundedCache

import safemap

# A hang prints every thread's stack and ends its process instead of stalling the run.
pytest_plugins = ["support.watchdog"]

# A run started in the background by a non-interactive shell (`pytest ... &` in a script)
# inherits SIGINT ignored, and Python then keeps it ignored instead of installing its
# Ctrl-C handler. The tests of how the maps behave under KeyboardInterrupt (and the
# subprocesses they interrupt, which inherit an ignored signal across exec) need Python's
# own behaviour, so the suite restores it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

MAP_TYPES: dict[str, type[Any]] = {
    "LockedMap": safemap.LockedMap,
    "RWLockMap": safemap.RWLockMap,
    "ActorMap": safemap.ActorMap,
    "AsyncActorMap": BlockingAsyncActorMap,  # the asyncio map through a thin sync adapter
}

# The native core is built by every install: a missing one must fail, not be skipped.
MAP_TYPES["ConcurrentMap"] = safemap.ConcurrentMap
MAP_TYPES["SyncMap"] = safemap.SyncMap
MAP_TYPES["PersistentMap"] = safemap.PersistentMap
MAP_TYPES["Cache"] = BoundedCache  # bounded (maxsize 65536): every write runs the policy


# RedisMap runs the shared suite against a server the `redis_server` fixture starts. Without
# a server binary its tests FAIL (CI installs redis-server); SAFEMAP_TEST_REDIS=0 leaves it out.
if redis_support.ENABLED:
    from safemap.redis import RedisMap

    MAP_TYPES["RedisMap"] = RedisMap

# Shared tests that do not apply to a map type, each with its one-line reason (RedisMap's are
# listed in docs/redis.md). A name matches every parametrization of that test function, or
# one with "name[rest-of-id]" (the id without the map type).
_COPY = "reads return decoded copies: object identity is not kept across the network"
_OBJECTS = "uses keys or values the JSON codec cannot represent (custom objects, tuples, maps)"
_KEYS = "uses key objects with their own __eq__/__hash__ (not representable as JSON keys)"
_STORED_ENCODED = (
    "values are stored encoded on the server: the map holds no Python object whose __del__ "
    "could run when it is released"
)
_SHARED = "the data lives on the server: a forked child shares the map instead of copying it"
NOT_APPLICABLE: dict[str, dict[str, str]] = {
    "RedisMap": {
        # tests/test_protocol_api.py
        "test_fromkeys_value_shared": _COPY,
        "test_repr_recursive_does_not_overflow": _OBJECTS,
        "test_repr_propagates_value_repr_error": _OBJECTS,
        "test_eq_uses_identity_first_for_values": _COPY,
        "test_popitem": _COPY,
        "test_setdefault": _COPY,
        "test_copy_is_same_type_shallow_and_independent": _COPY,
        "test_items_view_contains_uses_identity_first": _OBJECTS,
        "test_load": _OBJECTS,
        "test_store": _OBJECTS,
        "test_load_or_store": _OBJECTS,
        "test_load_and_delete": _OBJECTS,
        "test_swap": _OBJECTS,
        "test_compare_and_swap": _OBJECTS,
        "test_compare_and_swap_identity_first": _OBJECTS,
        "test_compare_and_delete": _OBJECTS,
        "test_compare_propagates_value_eq_errors": _OBJECTS,
        "test_compute_absent": _OBJECTS,
        "test_compute_present": _OBJECTS,
        "test_compute_if_absent": _OBJECTS,
        "test_compute_if_present": _OBJECTS,
        "test_merge": _OBJECTS,
        "test_delete_if_identity_first": _OBJECTS,
        "test_snapshot": _COPY,
        "test_sentinel_as_key_is_an_ordinary_key": _OBJECTS,
        # tests/test_concurrency.py
        "test_swap_never_loses_or_duplicates_a_value": _OBJECTS,
        "test_load_or_store_as_mutex": _OBJECTS,
        "test_pop_each_entry_exactly_once": _OBJECTS,
        "test_racing_creators_agree_on_one_object": _COPY,
        "test_iteration_during_churn": _OBJECTS,
        "test_delete_if_removes_only_entries_that_still_match": _OBJECTS,
        # tests/test_mapping_conformance.py (CPython's suite)
        "test_hash_mapping_protocol[test_eq]": _KEYS,
        "test_hash_mapping_protocol[test_getitem]": _KEYS,
        "test_hash_mapping_protocol[test_pop]": _KEYS,
        "test_hash_mapping_protocol[test_repr_deep]": _OBJECTS,
        "test_hash_mapping_protocol[test_setdefault]": _KEYS,
        "test_hash_mapping_protocol[test_update]": _OBJECTS,
        "test_hash_mapping_protocol[test_write]": _KEYS,
        # tests/test_protocol_stateful.py
        "test_protocol_against_dict_model": _KEYS,
        # tests/test_robustness.py
        "test_copy_copy": _COPY,
        "test_copy_deepcopy": _OBJECTS,
        "test_copy_deepcopy_map_containing_itself": _OBJECTS,
        "test_key_eq_raises": _KEYS,
        "test_key_eq_write_error_propagates_and_leaves_map_unchanged": _KEYS,
        "test_key_hash_raises_on_stored_key": _KEYS,
        "test_key_reading_the_map_from_eq_or_hash": _KEYS,
        "test_key_writing_the_map_from_eq_or_hash": _KEYS,
        "test_overwritten_value_is_released": _COPY,
        "test_removed_key_and_value_are_released": _COPY,
        "test_pickle_map_containing_itself": _OBJECTS,
        "test_pickle_nested_maps": _OBJECTS,
        "test_pickle_round_trip": _OBJECTS,
        "test_reads_return_the_stored_object": _COPY,
        "test_rejected_values_are_not_kept": _COPY,
        "test_writing_while_iterating_is_allowed": _OBJECTS,
        # tests/test_gc_reentry.py, tests/test_release_outside_lock.py,
        # tests/test_transaction_commit.py
        "test_finalizers_using_the_map_during_its_operations": _KEYS,
        "test_released_value_del_writes_to_the_map": _STORED_ENCODED,
        "test_commit_is_all_or_nothing_when_a_key_raises": _KEYS,
        "test_commit_lookup_error_of_a_deleted_key_changes_nothing": _KEYS,
        "test_commit_undoes_what_it_applied_when_eq_fails_late": _KEYS,
        # tests/testing/test_faults.py
        "test_fork_while_another_thread_holds_the_map": _SHARED,
        "test_keys_that_release_the_gil_keep_merges_exact": _KEYS,
        "test_reentrant_key_eq_write_is_refused_and_map_unchanged": _KEYS,
    },
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        type_name = callspec.params.get("map_type") if callspec is not None else None
        reasons = NOT_APPLICABLE.get(type_name or "", {})
        base = getattr(item, "originalname", item.name)
        rest = callspec.id.replace(f"{type_name}-", "") if callspec is not None else ""
        reason = reasons.get(base) or reasons.get(f"{base}[{rest}]")
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"{type_name}: {reason}"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """A redis-server on 127.0.0.1 (free port, no persistence) for the whole session;
    ``SAFEMAP_REDIS_URL`` points at it so ``RedisMap()`` uses it. Fails without a binary."""
    if not redis_support.ENABLED:
        pytest.skip("SAFEMAP_TEST_REDIS=0: the RedisMap tests are left out")
    binary = redis_support.find_binary()
    if binary is None:
        pytest.fail(redis_support.MISSING_MESSAGE)
    server = redis_support.RedisServer(binary)
    previous = os.environ.get("SAFEMAP_REDIS_URL")
    os.environ["SAFEMAP_REDIS_URL"] = server.url
    try:
        yield server
    finally:
        if previous is None:
            os.environ.pop("SAFEMAP_REDIS_URL", None)
        else:
            os.environ["SAFEMAP_REDIS_URL"] = previous
        server.stop()


@pytest.fixture(params=list(MAP_TYPES))
def map_type(request: pytest.FixtureRequest) -> type[Any]:
    """Each registered mutable map type in turn (the test id is the type's name)."""
    if request.param == "RedisMap":
        request.getfixturevalue("redis_server")
    return MAP_TYPES[request.param]


@pytest.fixture
def fast_switch() -> Iterator[None]:
    """Make the GIL switch threads very often, so races are likely on the GIL build."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """Every object alive before the test moves to the collector's permanent generation
    until it ends, so that the test's full collections traverse only what it made: a leak
    test collects dozens of times, and by the end of the suite each full collection of its
    whole heap takes a tenth of a second or more. Nothing the test allocates is frozen."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


ThreadRunner = Callable[..., list[Any]]


@pytest.fixture
def run_threads() -> ThreadRunner:
    """``run_threads(target, n, *, timeout=30)`` runs ``target(i)`` in ``n`` daemon threads
    released together by a ``threading.Barrier``; ``run_threads([f, g, ...])`` runs each
    of the given functions (no argument) in a thread of its own. Returns the results in
    thread order and re-raises the first exception any thread raised. A thread still
    running after ``timeout`` seconds fails the test (a deadlock must not hang the run)."""

    def run(
        target: Callable[[int], Any] | list[Callable[[], Any]],
        n: int | None = None,
        *,
        timeout: float = 30.0,
    ) -> list[Any]:
        if isinstance(target, list):
            targets = target
            n = len(targets)
            target = lambda i: targets[i]()  # noqa: E731
        assert n is not None
        barrier = threading.Barrier(n)
        results: list[Any] = [None] * n
        errors: list[BaseException] = []

        def body(i: int) -> None:
            try:
                barrier.wait(timeout)
                results[i] = target(i)
            except BaseException as exc:
                errors.append(exc)
                barrier.abort()

        threads = [
            threading.Thread(target=body, args=(i,), daemon=True, name=f"worker-{i}")
            for i in range(n)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if errors:
            raise errors[0]
        if alive:
            pytest.fail(f"threads still running after {timeout}s (deadlock?): {alive}")
        return results

    return run
