"""``safemap.testing.no_leaks`` and the ``--safemap-leaks`` pytest plugin.

Every test that leaks on purpose catches the ``LeakError`` itself and then stops what it
leaked, so this module leaves nothing behind (it passes under ``--safemap-leaks`` too).
The plugin's runs are separate pytest processes (``runpytest_subprocess``), loading the
plugin through its entry point as a user's pytest does.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from safemap.actor import ActorMap, AsyncActorMap, _lifecycle
from safemap.testing import Leak, LeakError, no_leaks
from safemap.testing import leaks as leaks_module

pytest_plugins = ["pytester"]

JOIN = 30.0  # deadlock guard for joins: a bug fails the test instead of hanging it
SHORT = 0.05  # retry time for checks that must fail (a clean check returns at once)


class Parked:
    """Threads that wait until released, and are released and joined at the end."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, name: str = "parked", target: Callable[..., None] | None = None) -> Any:
        thread = threading.Thread(target=target or _parked, args=(self.release,), name=name)
        self.threads.append(thread)
        thread.start()
        return thread

    def stop(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(JOIN)
            assert not thread.is_alive()


def _parked(release: threading.Event) -> None:
    release.wait()


def _other_parked(release: threading.Event) -> None:
    release.wait()


@pytest.fixture
def parked() -> Iterator[Parked]:
    p = Parked()
    try:
        yield p
    finally:
        p.stop()


def _only(error: LeakError) -> Leak:
    assert len(error.leaks) == 1, str(error)
    return error.leaks[0]


# ------------------------------------------------------------------ what is caught


def test_leaked_thread_is_named_with_its_current_stack(parked: Parked) -> None:
    with pytest.raises(LeakError) as info, no_leaks(timeout=SHORT):
        parked.start("worker-1")
    leak = _only(info.value)
    assert (leak.kind, leak.name) == ("thread", "worker-1")
    assert f"started with {__name__}._parked" in leak.what
    assert "in _parked\n    release.wait()" in leak.stack  # where it is now
    assert "_bootstrap" not in leak.stack  # threading's own frames say nothing
    assert "thread 'worker-1'" in str(info.value) and "release.wait()" in str(info.value)


def _open_map() -> ActorMap[str, int]:
    # The next line is the creation site the report must show, last.
    return ActorMap(name="accounts")


def test_leaked_actor_map_is_named_with_its_creation_site() -> None:
    with pytest.raises(LeakError) as info, no_leaks(timeout=SHORT):
        m = _open_map()
    try:
        leak = _only(info.value)  # the map, not also its owner thread
        assert (leak.kind, leak.name) == ("actor map", "accounts")
        assert "ActorMap" in leak.what and "not closed" in leak.what
        assert 'in _open_map\n    return ActorMap(name="accounts")' in leak.stack
        assert leak.stack.rstrip().endswith('return ActorMap(name="accounts")')  # innermost last
        assert "safemap/actor" not in leak.stack
    finally:
        m.close()


async def _forever() -> None:
    await _deep_sleep()


async def _deep_sleep() -> None:
    await asyncio.sleep(3600)


def test_leaked_task_is_named_with_its_await_chain() -> None:
    async def main() -> LeakError:
        with pytest.raises(LeakError) as info:
            async with no_leaks(timeout=SHORT):
                task = asyncio.create_task(_forever(), name="poller")
        task.cancel()
        return info.value

    leak = _only(asyncio.run(main()))
    assert (leak.kind, leak.name) == ("task", "poller")
    assert f"running {__name__}._forever" in leak.what
    # The whole chain down to where it is suspended, not only the task's own coroutine.
    assert "in _forever\n    await _deep_sleep()" in leak.stack
    assert "in _deep_sleep\n    await asyncio.sleep(3600)" in leak.stack


def test_leaked_async_actor_map_is_named() -> None:
    async def main() -> LeakError:
        with pytest.raises(LeakError) as info:
            async with no_leaks(timeout=SHORT):
                m: AsyncActorMap[str, int] = AsyncActorMap(name="sessions")
                await m.store("k", 1)
        await m.aclose()
        return info.value

    leak = _only(asyncio.run(main()))
    assert (leak.kind, leak.name) == ("actor map", "sessions")
    assert "AsyncActorMap" in leak.what
    assert 'AsyncActorMap(name="sessions")' in leak.stack


def test_every_leak_is_listed(parked: Parked) -> None:
    with pytest.raises(LeakError) as info, no_leaks(timeout=SHORT):
        parked.start("a")
        parked.start("b")
        m = ActorMap(name="c")
    m.close()
    assert sorted((leak.kind, leak.name) for leak in info.value.leaks) == [
        ("actor map", "c"),
        ("thread", "a"),
        ("thread", "b"),
    ]
    assert str(info.value).startswith("3 leaks found, still there after 0.05 s:")


# ------------------------------------------------------------------ what is not a leak


def _clean_sync() -> int:
    done = []
    workers = [threading.Thread(target=done.append, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(JOIN)
    with ActorMap() as m:
        m["k"] = 1
    return len(done) + m.closed


async def _clean_async() -> int:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    async with AsyncActorMap() as m:
        await m.store("k", 1)
    return _clean_sync()


def test_clean_code_passes_as_context_manager() -> None:
    with no_leaks():
        assert _clean_sync() == 5

    async def main() -> int:
        async with no_leaks():
            return await _clean_async()

    assert asyncio.run(main()) == 5


def test_clean_code_passes_as_decorator() -> None:
    checked = no_leaks()(_clean_sync)
    assert checked() == 5
    assert checked.__name__ == "_clean_sync"
    checked_async = no_leaks()(_clean_async)
    assert checked_async.__name__ == "_clean_async"
    assert asyncio.run(checked_async()) == 5


def test_decorator_checks_each_call(parked: Parked) -> None:
    @no_leaks(timeout=SHORT)
    def leaky(name: str) -> str:
        parked.start(name)
        return name

    with pytest.raises(LeakError) as info:
        leaky("first")
    assert _only(info.value).name == "first"
    with pytest.raises(LeakError) as info:
        leaky("second")
    assert _only(info.value).name == "second"  # the first is older than this call


def test_async_decorator_catches_a_task() -> None:
    @no_leaks(timeout=SHORT)
    async def leaky() -> asyncio.Task[None]:
        return asyncio.create_task(_forever(), name="left-behind")

    async def main() -> LeakError:
        with pytest.raises(LeakError) as info:
            await leaky()
        for task in asyncio.all_tasks():
            if task.get_name() == "left-behind":
                task.cancel()
        return info.value

    assert _only(asyncio.run(main())).name == "left-behind"


def test_what_existed_on_entry_is_not_a_leak(parked: Parked) -> None:
    parked.start("older")
    with ActorMap(name="older-map"), no_leaks():
        pass


def test_a_dropped_actor_map_is_not_a_leak() -> None:
    # Dropping it closes it; its owner thread ends once the queue drains, during the retry.
    with no_leaks(timeout=JOIN):
        m: ActorMap[str, int] = ActorMap(name="dropped")
        m["k"] = 1
        del m


class _Cycle:
    def __init__(self) -> None:
        self.me = self
        self.m: ActorMap[str, int] = ActorMap(name="in-a-cycle")


def test_a_map_only_garbage_holds_is_not_a_leak() -> None:
    # Only a collection frees it (and its finalizer closes it): the check collects.
    gc.disable()
    try:
        with no_leaks(timeout=JOIN):
            _Cycle()
    finally:
        gc.enable()


async def _new_async_map() -> AsyncActorMap[str, int]:
    return AsyncActorMap(name="made-on-the-loop")


def test_a_map_made_by_a_loop_thread_and_dropped_here_is_not_a_leak() -> None:
    # On free-threaded builds, a map created on an event loop's thread and dropped here is
    # freed only once that thread merges its reference counts, which a loop idle in select
    # does not do, or once a collection does it: the check collects.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="loop")
    thread.start()
    try:
        with no_leaks(timeout=JOIN):
            future = asyncio.run_coroutine_threadsafe(_new_async_map(), loop)
            assert future.result(JOIN).closed is False
            del future
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(JOIN)
        loop.close()
    assert not thread.is_alive()


def test_an_async_actor_map_whose_loop_closed_is_not_a_leak() -> None:
    async def use() -> AsyncActorMap[str, int]:
        m: AsyncActorMap[str, int] = AsyncActorMap()
        await m.store("k", 1)
        return m

    with no_leaks():
        m = asyncio.run(use())  # asyncio.run closed the loop: the map is closed with it
    assert m.closed


def test_the_actor_exit_watcher_is_not_a_leak() -> None:
    assert "safemap-actor-exit-watcher" in leaks_module.DEFAULT_IGNORED_THREADS
    with no_leaks():
        ActorMap().close()  # the first non-daemon map of a process starts the watcher


# ------------------------------------------------------------------ the retry


def _on_first_check(release: threading.Event) -> Callable[[], None]:
    """Make the check's first look set ``release`` once it has seen what it found."""
    original = leaks_module._Check.leaks
    first = threading.Event()

    def leaks(self: Any) -> list[Leak]:
        found = original(self)
        if not first.is_set():
            first.set()
            assert found, "the first look must see the thread or task still there"
            release.set()
        return found

    leaks_module._Check.leaks = leaks  # type: ignore[method-assign]
    return lambda: setattr(leaks_module._Check, "leaks", original)


def test_retry_lets_a_finishing_thread_finish() -> None:
    # The thread ends only after the first look saw it alive: without the retry this fails.
    release = threading.Event()
    restore = _on_first_check(release)
    try:
        with no_leaks(timeout=JOIN):
            threading.Thread(target=_parked, args=(release,), name="finishing").start()
    finally:
        restore()
        release.set()


def test_retry_lets_a_finishing_task_finish_on_the_loop() -> None:
    # The task can end only if the loop runs during the retry (the async pause).
    release = threading.Event()

    async def finishing() -> None:
        while not release.is_set():
            await asyncio.sleep(0)

    async def main() -> None:
        async with no_leaks(timeout=JOIN):
            task = asyncio.create_task(finishing(), name="finishing")
        assert task.done()

    restore = _on_first_check(release)
    try:
        asyncio.run(main())
    finally:
        restore()
        release.set()


# ------------------------------------------------------------------ ignore lists


# Any text, with fnmatch's special characters made likely ("[a]" as a pattern matches "a").
_NAMES = st.text(
    st.sampled_from("a[]*?!-") | st.characters(codec="utf-8", exclude_categories=["Cs"]),
    min_size=1,
    max_size=12,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_NAMES)
@example(name="[a]")  # as a pattern, matches only "a"
def test_ignore_threads_by_exact_name(name: str) -> None:
    # Exact even when the name holds fnmatch's special characters ("[x]", "*", "?").
    p = Parked()
    try:
        with no_leaks(ignore_threads=[name]):
            p.start(name)
    finally:
        p.stop()


# The fixture spans every example on purpose (each failing check collects twice).
@pytest.mark.usefixtures("frozen_heap")
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(prefix=_NAMES.filter(lambda s: not set(s) & set("*?[]")), rest=_NAMES)
def test_ignore_threads_by_pattern(prefix: str, rest: str) -> None:
    p = Parked()
    try:
        with no_leaks(ignore_threads=[prefix + "*"]):
            p.start(prefix + rest)
        with pytest.raises(LeakError), no_leaks(ignore_threads=[prefix + "*"], timeout=SHORT):
            p.start(prefix[:-1])  # shorter than the prefix: cannot match, still caught
    finally:
        p.stop()


def test_ignore_functions_by_start_function(parked: Parked) -> None:
    with no_leaks(ignore_functions=[f"{__name__}._parked"]):
        parked.start("a")
    with no_leaks(ignore_functions=[f"{__name__}._*parked"]):
        parked.start("b", target=_other_parked)
        parked.start("c")
    with (
        pytest.raises(LeakError) as info,
        no_leaks(ignore_functions=[f"{__name__}._parked"], timeout=SHORT),
    ):
        parked.start("d", target=_other_parked)
    assert _only(info.value).name == "d"


class _Worker(threading.Thread):
    def __init__(self, release: threading.Event) -> None:
        super().__init__(name="subclassed")
        self.release = release

    def run(self) -> None:
        self.release.wait()


def test_ignore_functions_matches_the_run_method_of_a_thread_subclass(parked: Parked) -> None:
    worker = _Worker(parked.release)
    parked.threads.append(worker)
    with no_leaks(ignore_functions=[f"{__name__}._Worker.run"]):
        worker.start()


class _WrappedBootstrap(threading.Thread):
    """A thread whose bootstrap is wrapped, as tools do (the race detector, tracers)."""

    def _bootstrap_inner(self) -> None:
        super()._bootstrap_inner()  # type: ignore[misc]


def test_start_function_and_stack_see_through_a_wrapped_bootstrap(parked: Parked) -> None:
    thread = _WrappedBootstrap(target=_parked, args=(parked.release,), name="wrapped")
    parked.threads.append(thread)
    with pytest.raises(LeakError) as info, no_leaks(timeout=SHORT):
        thread.start()
    leak = _only(info.value)
    assert f"started with {__name__}._parked," in leak.what
    assert leak.stack.startswith('  File "' + __file__) and "in _parked\n" in leak.stack
    with no_leaks(ignore_functions=[f"{__name__}._parked"]):
        parked.start("plain")


def test_ignore_functions_matches_a_task_coroutine() -> None:
    async def main() -> None:
        async with no_leaks(ignore_functions=[f"{__name__}._forever"]):
            task = asyncio.create_task(_forever())
        task.cancel()

    asyncio.run(main())


def test_ignore_threads_covers_an_actor_map_by_its_owner_thread_name() -> None:
    with no_leaks(ignore_threads=["cache-*"]):
        m: ActorMap[str, int] = ActorMap(name="cache-1")
    m.close()


# ------------------------------------------------------------------ errors and arguments


def test_the_blocks_own_error_wins_and_names_the_leaks(parked: Parked) -> None:
    with pytest.raises(ZeroDivisionError) as info, no_leaks(timeout=SHORT):
        parked.start("during-failure")
        1 / 0  # noqa: B018
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "the failed block left 1 leak" in notes and "during-failure" in notes


def test_an_interrupt_skips_the_check(parked: Parked) -> None:
    with pytest.raises(KeyboardInterrupt) as info, no_leaks(timeout=JOIN):
        parked.start("interrupted")
        raise KeyboardInterrupt
    assert not getattr(info.value, "__notes__", [])


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"ignore_threads": "worker-*"}, TypeError),  # one string, not a collection
        ({"ignore_threads": [1]}, TypeError),
        ({"ignore_functions": "mod.fn"}, TypeError),
        ({"timeout": 0}, ValueError),
        ({"timeout": float("inf")}, ValueError),
        ({"timeout": "1"}, TypeError),
    ],
)
def test_bad_arguments_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        no_leaks(**options)


def test_the_actor_hook_is_set_only_while_a_check_runs(parked: Parked) -> None:
    # Relative to entry: under --safemap-leaks an outer check runs around this test.
    before, active = _lifecycle.on_new_map, list(leaks_module._active)
    with no_leaks():
        assert _lifecycle.on_new_map is not None
    with pytest.raises(LeakError), no_leaks(timeout=SHORT):
        parked.start("x")
    assert _lifecycle.on_new_map is before and leaks_module._active == active
    if not active:
        assert before is None


def test_concurrent_checks_install_and_remove_the_hook_exactly() -> None:
    # Checks entered and left in several threads at once: the hook stays set while any
    # runs and is back as it was once the last one ends, whatever the interleaving.
    before, active = _lifecycle.on_new_map, list(leaks_module._active)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        try:
            barrier.wait(JOIN)
            for _ in range(200):
                with no_leaks(timeout=JOIN):
                    assert _lifecycle.on_new_map is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert _lifecycle.on_new_map is before and leaks_module._active == active


# ------------------------------------------------------------------ the pytest plugin

LEAKY = """
import threading
import pytest
from safemap.actor import ActorMap

RELEASE = threading.Event()

def parked():
    RELEASE.wait()

def start(name):
    threading.Thread(target=parked, name=name, daemon=True).start()

def test_thread_leak():
    start("parked-1")

KEEP = []

def test_map_leak():
    KEEP.append(ActorMap(name="left-open", daemon=True))

def test_clean():
    t = threading.Thread(target=print)
    t.start()
    t.join()

def test_fails_and_leaks():
    start("parked-2")
    assert False, "the test's own failure"

@pytest.mark.safemap_leaks_ignore(threads=["parked-*"])
def test_ignored_by_marker():
    start("parked-3")

@pytest.mark.safemap_leaks_ignore
def test_not_checked():
    start("parked-4")

@pytest.fixture(scope="module")
def module_thread():
    start("module-scoped")

@pytest.fixture
def function_thread():
    start("function-scoped")

@pytest.fixture
def stopped_in_teardown():
    release = threading.Event()
    t = threading.Thread(target=release.wait, name="fixture-thread")
    t.start()
    yield
    release.set()
    t.join()

def test_wider_fixture_is_not_the_tests(module_thread, stopped_in_teardown):
    pass

def test_function_fixture_is_the_tests(function_thread):
    pass
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs start with only the options each test gives."""
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def test_plugin_fails_each_leaking_test_naming_test_and_leak(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaky=LEAKY)
    pytester.makeini("[pytest]\nsafemap_leaks_timeout = 0.05\n")
    result = _run(pytester, "--safemap-leaks")
    result.assert_outcomes(passed=7, failed=1, errors=4)
    out = result.stdout.str()
    assert "safemap leaks: every test is checked" in out
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_thread_leak*",
            "*safemap leak check: test_leaky.py::test_thread_leak left 1 leak*",
            "thread 'parked-1' (daemon) started with test_leaky.parked, still running at:",
            "*in parked",
            "*RELEASE.wait()",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*safemap leak check: test_leaky.py::test_map_leak left 1 leak*",
            "actor map 'left-open' (ActorMap) not closed, created at:",
            "*in test_map_leak",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*safemap leak check: test_leaky.py::test_function_fixture_is_the_tests left 1*",
            "thread 'function-scoped'*",
        ]
    )
    # The failing test keeps its own failure, and its leak is an error of its teardown.
    result.stdout.fnmatch_lines(["*the test's own failure*"])
    result.stdout.fnmatch_lines(["*test_fails_and_leaks left 1 leak*", "thread 'parked-2'*"])
    for clean in ("test_clean", "test_ignored_by_marker", "test_not_checked", "test_wider"):
        assert f"teardown of {clean}" not in out


FREE_WHEN_OFF = """
import sys

def test_nothing_of_the_checker_is_loaded():
    loaded = [m for m in sys.modules if m.startswith("safemap.testing.")]
    assert loaded == ["safemap.testing.pytest_plugin"]
"""


def test_plugin_is_off_by_default_and_free(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaky=LEAKY, test_free=FREE_WHEN_OFF)
    result = _run(pytester)
    result.assert_outcomes(passed=8, failed=1)
    assert "safemap leak" not in result.stdout.str()


def test_plugin_ini_ignore_lists(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaky=LEAKY)
    pytester.makeini(
        "[pytest]\n"
        "safemap_leaks_timeout = 0.05\n"
        "safemap_leaks_ignore_threads =\n    parked-*\n    left-open\n"
        "safemap_leaks_ignore_functions =\n    test_leaky.parked\n"
    )
    result = _run(pytester, "--safemap-leaks")
    result.assert_outcomes(passed=7, failed=1)


def test_plugin_options_are_registered_and_checked(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--help")
    result.stdout.fnmatch_lines(["*--safemap-leaks*", "*safemap_leaks_ignore_threads*"])
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    pytester.makeini("[pytest]\nsafemap_leaks_timeout = soon\n")
    result = _run(pytester, "--safemap-leaks")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "safemap_leaks_timeout must be a positive, finite number of seconds, got 'soon'" in (
        result.stderr.str()
    )


def test_plugin_refuses_a_misused_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marked="import pytest\n\n"
        "@pytest.mark.safemap_leaks_ignore('worker-*')\n"
        "def test_marked():\n    pass\n"
    )
    result = _run(pytester, "--safemap-leaks")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*safemap_leaks_ignore takes only threads=[[]...] and*"])
