"""The pytest plugin (``safemap.race.pytest_plugin``, entry point ``pytest11``).

Every run is a separate pytest process (``runpytest_subprocess``), so the detector's state in
this process is never touched, and the plugin is found through its entry point exactly as a
user's pytest finds it.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

RACY = """
import threading
from safemap import race

def test_racy():
    cache = race.watch({}, name="cache")

    def writer():
        cache["k"] = 1

    t = threading.Thread(target=writer, name="writer-1")
    t.start()
    cache["k"] = 2          # not ordered with the writer's store: a race, however it ran
    t.join()
    assert True             # the assertions pass; the race alone must fail the test
"""

CLEAN = """
import threading
from safemap import race

def test_clean():
    cache = race.watch({}, name="cache")

    def writer():
        cache["k"] = 1

    t = threading.Thread(target=writer, name="writer-1")
    t.start()
    t.join()
    cache["k"] = 2          # after join: ordered
    assert cache["k"] == 2
"""

# The lock is created while the module is imported: modelled only if the detector was
# enabled before test modules are imported.
IMPORT_TIME_LOCK = """
import threading
from safemap import race

LOCK = threading.Lock()

def test_module_level_lock():
    cache = race.watch({}, name="cache")

    def writer():
        with LOCK:
            cache["k"] = 1

    t = threading.Thread(target=writer, name="writer-1")
    t.start()
    with LOCK:
        cache["k"] = 2
    t.join()
"""

# A lock created in conftest.py, imported even earlier than the test module.
CONFTEST_LOCK = """
import threading

CONFTEST_LOCK = threading.Lock()
"""

CONFTEST_LOCK_TEST = """
import threading
from safemap import race
from conftest import CONFTEST_LOCK

def test_conftest_lock():
    cache = race.watch({}, name="cache")

    def writer():
        with CONFTEST_LOCK:
            cache["k"] = 1

    t = threading.Thread(target=writer, name="writer-1")
    t.start()
    with CONFTEST_LOCK:
        cache["k"] = 2
    t.join()
"""

RACE_IN_FIXTURE = """
import threading
import pytest
from safemap import race

@pytest.fixture
def racy_teardown():
    cache = race.watch({}, name="cache")
    yield
    t = threading.Thread(target=cache.__setitem__, args=("k", 1))
    t.start()
    cache["k"] = 2
    t.join()

def test_body_is_clean(racy_teardown):
    pass
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs start with the detector off, whatever the outer run was given."""
    monkeypatch.delenv("SAFEMAP_RACE", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)


def test_racy_test_fails_with_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_racy=RACY)
    result = pytester.runpytest_subprocess("--safemap-race", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "race detected during execution of test" in out
    assert "WARNING: DATA RACE" in out
    assert "at map 'cache' key 'k'" in out
    assert "writer-1" in out
    assert "safemap.race: data race detector enabled" in out
    assert "Found 1 data race(s)" in out


def test_clean_test_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_subprocess("--safemap-race", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "DATA RACE" not in result.stdout.str()
    assert result.ret == 0


def test_off_by_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_racy=RACY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "race detected" not in out
    assert "safemap.race" not in out
    assert result.ret == 0


def test_option_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--safemap-race*"])


@pytest.mark.parametrize("value", ["1", "history_size=2"])
def test_environment_variable_turns_it_on(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SAFEMAP_RACE", value)
    pytester.makepyfile(test_racy=RACY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "race detected during execution of test" in result.stdout.str()
    assert result.ret != 0


def test_environment_variable_off_value(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFEMAP_RACE", "0")
    pytester.makepyfile(test_racy=RACY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_lock_created_at_module_import_is_modelled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_lock=IMPORT_TIME_LOCK)
    result = pytester.runpytest_subprocess("--safemap-race", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "DATA RACE" not in result.stdout.str()


def test_lock_created_in_conftest_is_modelled(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST_LOCK)
    pytester.makepyfile(test_lock=CONFTEST_LOCK_TEST)
    result = pytester.runpytest_subprocess("--safemap-race", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "DATA RACE" not in result.stdout.str()


def test_lock_created_before_enabling_is_not_modelled(pytester: pytest.Pytester) -> None:
    """Control for the two tests above: the same code, with the detector enabled only
    after the module (and its lock) was imported, does report the race, so their passing
    shows that the plugin enabled the detector early."""
    pytester.makepyfile(
        test_late=IMPORT_TIME_LOCK.replace(
            "def test_module_level_lock():\n",
            "def test_module_level_lock():\n    race.enable()\n",
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)  # the plugin is off: nothing fails the test...
    assert "WARNING: DATA RACE" in result.stdout.str() + result.stderr.str()  # ...but it races


def test_race_in_fixture_teardown_is_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fixture=RACE_IN_FIXTURE)
    result = pytester.runpytest_subprocess("--safemap-race", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    out = result.stdout.str()
    assert "ERROR at teardown of test_body_is_clean" in out
    assert "race detected during execution of test" in out


def test_same_race_fails_every_test_that_runs_it(pytester: pytest.Pytester) -> None:
    """Reports are deduplicated by their pair of sites; each test still sees its own."""
    pytester.makepyfile(test_twice=RACY + "\n\ndef test_racy_again():\n    test_racy()\n")
    result = pytester.runpytest_subprocess("--safemap-race", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)


def test_failing_assertion_keeps_its_error_and_shows_the_race(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_both=RACY.replace("assert True", "assert False, 'own failure'"))
    result = pytester.runpytest_subprocess("--safemap-race", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "own failure" in out
    assert "race detected during execution of test" in out
