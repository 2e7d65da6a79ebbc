"""The pytest plugin (``safemap.race.pytest_plugin``, entry point ``pytest11``).

Every run is a separate pytest process (``runpytest_subprocess``), so the detector's state in
this process is never touched, and the plugin is found through its entry point exactly as a
user's pytest finds it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


# ------------------------------------------------------------------ pytest-xdist, misuse


def test_xdist_summary_counts_the_workers_races(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_racy=RACY, test_clean=CLEAN)
    result = pytester.runpytest_subprocess(
        "--safemap-race", "-p", "no:cacheprovider", "-p", "xdist", "-n", "2"
    )
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    assert out.count("safemap.race: Found 1 data race(s)") == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("history_size=99", "history_size=99: must be in 0..7"),
        ("bogus", "malformed option 'bogus'"),
        ("nosuch=1", "unknown race detector option 'nosuch'"),
    ],
)
def test_bad_environment_value_is_one_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("SAFEMAP_RACE", value)
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    # One usage error (an installed package's start-up hook may also have warned, once).
    errors = [line for line in err.splitlines() if line.startswith("ERROR: SAFEMAP_RACE:")]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err + result.stdout.str()


def test_flag_takes_no_value(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_subprocess("--safemap-race=1", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--safemap-race" in result.stderr.str()


def test_expected_races_do_not_count_in_the_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_expected="import pytest\n"
        + RACY.replace("def test_racy", "@pytest.mark.safemap_race_expected\ndef test_racy")
    )
    result = pytester.runpytest_subprocess("--safemap-race", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "Found" not in result.stdout.str() and result.ret == 0


# ------------------------------------- SAFEMAP_RACE with the start-up hook (an installed
# safemap): one summary, one exit rule, no assertion-rewrite warning


def run_pytest(exe: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SAFEMAP_"))}
    env["SAFEMAP_RACE"] = "1"
    return subprocess.run(
        [exe, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("xdist", [(), ("-p", "xdist", "-n", "2")], ids=["serial", "xdist"])
def test_env_run_prints_found_once_and_exits_66(
    startup_venv: str, tmp_path: Path, xdist: tuple[str, ...]
) -> None:
    (tmp_path / "test_racy.py").write_text(RACY)
    result = run_pytest(startup_venv, tmp_path, *xdist)
    out = result.stdout + result.stderr
    assert result.returncode == 66, out
    assert out.count("Found 1 data race(s)") == 1
    assert "PytestAssertRewriteWarning" not in out and "cannot be rewritten" not in out


def test_env_run_without_the_plugin(startup_venv: str, tmp_path: Path) -> None:
    # Races a test provokes on purpose and clears do not count: every test passes, exit 0.
    (tmp_path / "test_cleared.py").write_text(
        RACY.replace("assert True", "assert race.reports()\n    race.clear()")
    )
    result = run_pytest(startup_venv, tmp_path, "-p", "no:safemap")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Found" not in result.stdout + result.stderr
    # A race nobody handled: the exit status says so, and the report (captured by pytest
    # for a passing test) is shown before the summary.
    (tmp_path / "test_cleared.py").unlink()
    (tmp_path / "test_racy.py").write_text(RACY)
    result = run_pytest(startup_venv, tmp_path, "-p", "no:safemap")
    assert result.returncode == 66
    assert "WARNING: DATA RACE" in result.stderr
    assert result.stderr.rstrip().endswith("Found 1 data race(s)")


# ------------------------------------------------------------ docs/race.md's worked example

DOC = Path(__file__).resolve().parents[2] / "docs" / "race.md"


def doc_files() -> dict[str, str]:
    """The worked example's files: each ```python block of docs/race.md whose first line
    is ``# <path>`` (the first block per path: the racy version, before the fix)."""
    files: dict[str, str] = {}
    for block in DOC.read_text().split("```python\n")[1:]:
        code = block.split("```", 1)[0]
        first = code.splitlines()[0] if code.strip() else ""
        if first.startswith("# ") and first.split()[1].endswith(".py"):
            files.setdefault(first.split()[1], code)
    return files


def test_worked_example_runs_as_written_with_bare_pytest(tmp_path: Path) -> None:
    files = doc_files()
    assert {"app/cache.py", "conftest.py", "tests/test_cache.py"} <= set(files)
    for name, code in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(code)
    pytest_exe = Path(sys.executable).with_name("pytest")  # the console script, as written
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SAFEMAP_"))}
    result = subprocess.run(
        [str(pytest_exe), "--safemap-race", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert "1 failed" in out, out + result.stderr
    assert "race detected during execution of test" in out
    assert "at map 'cache' key 'user:42'" in out
