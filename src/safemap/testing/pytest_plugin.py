"""pytest plugin: ``--safemap-leaks`` checks every test with :func:`safemap.testing.no_leaks`.

Registered through the package's ``pytest11`` entry point, so it is loaded in every pytest
run of an environment where safemap is installed. Guarantees:

- **Off by default, and free when off.** Without ``--safemap-leaks`` the plugin only
  registers its option, ini keys and marker: it imports no checker and installs no hook
  that runs per test.
- **One check per test, setup to teardown.** The check starts before the test's setup and
  ends after its teardown, so a fixture may start a thread or open an actor map in setup
  and stop it in teardown. What fixtures of a wider scope than the test (class, module,
  package, session) start while they are set up is theirs, not the test's: not a leak.
- **Leaks fail the test.** Threads, open actor maps or pending tasks left behind (after
  the retry) make the test's teardown fail with ``safemap leak check: <test id> left N
  leak(s)``, each named with its stack, as a fixture whose teardown fails would: a test
  that failed already keeps its own failure and gets this error too. If the teardown
  failed on its own, its error stays and the leaks are a ``safemap leaks`` section of it.
- **Ignore lists.** The ini keys ``safemap_leaks_ignore_threads`` and
  ``safemap_leaks_ignore_functions`` (one name or pattern per line) apply to every test,
  ``safemap_leaks_timeout`` sets the retry time (seconds). A test (or class, or module
  via ``pytestmark``) marked ``@pytest.mark.safemap_leaks_ignore(threads=[...],
  functions=[...])`` adds to them; the marker with no arguments turns the check off for
  that test.
- **Asyncio tasks** are checked on the event loop running the test's hooks, which for
  ordinary pytest is none: decorate an async test with ``@no_leaks()`` to check its tasks
  on its own loop.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .leaks import _Check

__all__ = ["pytest_addoption", "pytest_configure"]

_MARKER = "safemap_leaks_ignore"
_IGNORE_THREADS = "safemap_leaks_ignore_threads"
_IGNORE_FUNCTIONS = "safemap_leaks_ignore_functions"
_TIMEOUT = "safemap_leaks_timeout"
_HEADER = "safemap leak check:"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("safemap-leaks", "safemap leak checks")
    group.addoption(
        "--safemap-leaks",
        action="store_true",
        default=False,
        dest="safemap_leaks",
        help="fail every test that leaves threads, unclosed actor maps or pending asyncio "
        "tasks behind (safemap.testing.no_leaks around each test, setup to teardown)",
    )
    parser.addini(
        _IGNORE_THREADS,
        "--safemap-leaks: thread names (exact or fnmatch patterns) that are not leaks",
        type="linelist",
        default=[],
    )
    parser.addini(
        _IGNORE_FUNCTIONS,
        "--safemap-leaks: qualified names (or patterns) of functions that threads and tasks "
        "started with, which are not leaks",
        type="linelist",
        default=[],
    )
    parser.addini(
        _TIMEOUT,
        "--safemap-leaks: seconds a test's threads, maps and tasks get to finish (default 1)",
        default="1.0",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(threads=(), functions=()): under --safemap-leaks, these thread names "
        "and start functions (exact or fnmatch patterns) are not leaks; with no arguments, "
        "the test is not checked",
    )
    if config.getoption("safemap_leaks", False):
        config.pluginmanager.register(_LeakPlugin(config), _LeakPlugin.NAME)


_CHECK = pytest.StashKey["_Check | None"]()


class _LeakPlugin:
    """The hooks that run per test; registered only with ``--safemap-leaks``."""

    NAME = "safemap-leaks-session"

    def __init__(self, config: pytest.Config) -> None:
        from .checker import positive_seconds
        from .leaks import _patterns

        self.threads = _patterns(_IGNORE_THREADS, config.getini(_IGNORE_THREADS))
        self.functions = _patterns(_IGNORE_FUNCTIONS, config.getini(_IGNORE_FUNCTIONS))
        raw = config.getini(_TIMEOUT)
        try:
            self.timeout = float(raw)
            positive_seconds(_TIMEOUT, self.timeout)
        except (TypeError, ValueError):
            raise pytest.UsageError(
                f"{_TIMEOUT} must be a positive, finite number of seconds, got {raw!r}"
            ) from None
        self.current: _Check | None = None  # the running test's check

    def _options(self, item: pytest.Item) -> dict[str, Any] | None:
        """The test's no_leaks options, or None if its marker turns the check off."""
        threads, functions = list(self.threads), list(self.functions)
        for mark in item.iter_markers(_MARKER):
            if not mark.args and not mark.kwargs:
                return None
            if mark.args or set(mark.kwargs) - {"threads", "functions"}:
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.{_MARKER} takes only threads=[...] and "
                    "functions=[...] (or nothing, to turn the check off)"
                )
            threads.extend(mark.kwargs.get("threads", ()))
            functions.extend(mark.kwargs.get("functions", ()))
        return {"ignore_threads": threads, "ignore_functions": functions}

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, Any, Any]:
        from .leaks import no_leaks

        # A misused marker fails this test's setup, but only after the other setup hooks
        # ran: raising before them would break their teardown.
        check, error = None, None
        try:
            options = self._options(item)
            if options is not None:
                check = no_leaks(**options, timeout=self.timeout)._start(None)
        except (pytest.UsageError, TypeError) as exc:
            error = exc
        item.stash[_CHECK] = check
        self.current = check
        result = yield
        if error is not None:
            raise error
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, Any, Any]:
        check = self.current
        if check is None or fixturedef.scope == "function":
            return (yield)
        with check.exempted():
            return (yield)

    # Outermost (tryfirst) in setup and teardown: the check starts before every other
    # setup hook and ends after every other teardown hook.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, Any, Any]:
        check = item.stash.get(_CHECK, None)
        if check is None:
            return (yield)
        self.current = None
        item.stash[_CHECK] = None
        try:
            result = yield
        except Exception:
            self._finish(item, check, failed=True)
            raise
        except BaseException:  # interrupted: no check
            check.close()
            raise
        self._finish(item, check, failed=False)
        return result

    def _finish(self, item: pytest.Item, check: _Check, failed: bool) -> None:
        """Wait for the test's leaks; fail its teardown with them, or, if the teardown
        failed already, add them to that failure's report."""
        from .leaks import describe

        try:
            leaks = tuple(check.wait(self.timeout))
        finally:
            check.close()
        if not leaks:
            return
        text = describe(leaks, self.timeout, f"{_HEADER} {item.nodeid}")
        if failed:
            item.add_report_section("teardown", "safemap leaks", text)
            return
        pytest.fail(text, pytrace=False)

    def pytest_report_header(self, config: pytest.Config) -> str:
        return "safemap leaks: every test is checked for threads, actor maps, tasks left behind"
