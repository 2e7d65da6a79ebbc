"""pytest plugin: run a test suite under :mod:`safemap.race`, as ``go test -race`` does.

Registered through the package's ``pytest11`` entry point, so it is loaded in every pytest
run of an environment where safemap is installed. Guarantees:

- **Off by default, and free when off.** Unless ``--safemap-race`` is given or
  ``SAFEMAP_RACE`` is set (to anything but an "off" value such as ``0``), the plugin only
  registers its command-line option: it does not import the detector, installs no hook that
  runs per test, and changes nothing.
- **On early.** When on, the detector is enabled in ``pytest_load_initial_conftests``
  (``tryfirst``), before any ``conftest.py`` or test module is imported, so locks,
  queues and executors those modules create at import time are modelled. (Objects created
  by pytest itself or by plugins loaded before it are not; nor are they user code.) If the
  plugin is registered too late for that hook (from a ``conftest.py``), it enables the
  detector in ``pytest_configure`` instead.
- **Races fail tests.** A race reported while a test's setup, call or teardown runs makes
  that phase fail with ``race detected during execution of test`` followed by the report
  text, even if every assertion passed. A race reported in setup or teardown appears as an
  error of that phase, as pytest shows any other fixture failure.
- **Opt-out per test.** A test marked ``@pytest.mark.safemap_race_expected`` creates races
  on purpose and checks them itself (as the detector's own tests do): races reported while
  it runs do not fail it, and do not count in the summary or the exit status.
- **One summary.** At the end, the terminal summary prints ``safemap.race: Found N data
  race(s)`` when there were any, counting the races of every pytest-xdist worker too; the
  process-exit summary of ``SAFEMAP_RACE`` is then not printed again. With
  ``SAFEMAP_RACE`` set, the run exits with its ``exitcode`` (default 66) when races were
  found, whatever pytest's own status (see :mod:`safemap.race`).
- **Misuse is one clear error.** A malformed ``SAFEMAP_RACE`` value stops the run with
  pytest's usage error naming the bad option (``--safemap-race`` takes no value).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from safemap.race import RaceReport

__all__ = [
    "pytest_addoption",
    "pytest_configure",
    "pytest_load_initial_conftests",
]

_ENV_VAR = "SAFEMAP_RACE"
_OFF = frozenset({"", "0", "false", "no", "off"})
_MESSAGE = "race detected during execution of test"
_MARKER = "safemap_race_expected"
_WORKER_KEY = "safemap_race_found"


def _requested(config: pytest.Config) -> bool:
    """Whether this run asked for the detector (the flag, or ``SAFEMAP_RACE`` not off)."""
    # Before pytest_configure only the early parse (known_args_namespace) holds the flag.
    early = getattr(config, "known_args_namespace", None)
    if getattr(early, "safemap_race", False) or config.getoption("safemap_race", False):
        return True
    value = os.environ.get(_ENV_VAR)
    return value is not None and value.strip().lower() not in _OFF


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("safemap", "safemap race detector")
    group.addoption(
        "--safemap-race",
        action="store_true",
        default=False,
        dest="safemap_race",
        help="run the tests under safemap.race (like go test -race): a test during which "
        "a data race on a watched map is reported fails. Also on when SAFEMAP_RACE is set.",
    )


def _turn_on(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin(_RacePlugin.NAME):
        return
    from safemap import race
    from safemap.race._options import parse_env

    try:
        # Checked even when the start-up hook (installed with the package) already enabled
        # the detector: that hook may only warn about a bad value, pytest refuses it.
        parse_env()
        if not race.enabled():
            race.enable()  # reads the SAFEMAP_RACE options, if any
    except race.OptionsError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(_RacePlugin(), _RacePlugin.NAME)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """Enable the detector before the initial ``conftest.py`` files are imported."""
    if _requested(early_config):
        _turn_on(early_config)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; enable the detector if that was not done earlier (a plugin
    registered after the initial conftests were loaded)."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}: the test creates data races on purpose and checks them itself; "
        "under --safemap-race they do not fail it",
    )
    if _requested(config):
        _turn_on(config)


class _RacePlugin:
    """The hooks that run per test; registered only when the detector is on."""

    NAME = "safemap-race-session"

    def _phase(self, item: pytest.Item, when: str) -> Generator[None, Any, Any]:
        from safemap import race

        if item.get_closest_marker(_MARKER) is not None:
            # Expected races: the test checks them itself; they do not count afterwards.
            with race.detect() as expected:
                try:
                    return (yield)
                finally:
                    race._forget(expected.reports)
        # A session of its own per phase: a race is attributed to this test even when an
        # identical one (same pair of sites) was already reported by an earlier test.
        with race.detect() as session:
            try:
                result = yield
            except BaseException:
                # The phase failed on its own (an assertion): keep its error, add the races.
                if session.reports:
                    item.add_report_section(when, "safemap.race", _failure_text(session.reports))
                raise
        if session.reports:
            pytest.fail(_failure_text(session.reports), pytrace=False)
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, Any, Any]:
        return (yield from self._phase(item, "setup"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        return (yield from self._phase(item, "call"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, Any, Any]:
        return (yield from self._phase(item, "teardown"))

    def pytest_report_header(self, config: pytest.Config) -> str:
        return "safemap.race: data race detector enabled"

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """In a pytest-xdist worker: hand the count to the controller, which prints the
        summary and sets the exit status for the whole run."""
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is None:
            return
        from safemap import race

        workeroutput[_WORKER_KEY] = len(race.reports())
        race._exit_delegated = True

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """In the pytest-xdist controller: add a finished worker's races."""
        from safemap import race

        count = getattr(node, "workeroutput", {}).get(_WORKER_KEY, 0)
        race._races_elsewhere += int(count)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from safemap import race

        count = race._race_count()
        if count:
            terminalreporter.write_line(f"safemap.race: Found {count} data race(s)")
        race._summary_printed = True


def _failure_text(reports: list[RaceReport]) -> str:
    return _MESSAGE + "\n" + "".join(str(r) for r in reports)
