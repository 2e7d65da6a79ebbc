"""SAFEMAP_RACE parsing, log_path, halt_on_error and the exit status (subprocesses), and the
start-up hook (.pth) in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from safemap.race._options import Options, OptionsError, Sink, parse_env, parse_options
from safemap.race._startup import lenient_options

ROOT = Path(__file__).resolve().parents[2]
PTH = ROOT / "src" / "safemap" / "race" / "safemap_race_startup.pth"

# A racy program: the thread's write and the main thread's read are not ordered (the main
# thread waits for the thread by polling a plain list, which is no synchronization).
RACY = textwrap.dedent(
    """
    import threading, time
    from safemap import race
    {enable}
    d = race.watch({{}}, name="cache")
    done = []
    def writer():
        d["k"] = 1
        done.append(True)
    t = threading.Thread(target=writer, name="worker-1")
    t.start()
    while not done:
        time.sleep(0.001)
    d.get("k")
    t.join()
    print("main finished", flush=True)
    {tail}
    """
)


def run(
    code: str, env_value: str | None, *, exe: str = sys.executable, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SAFEMAP_RACE", None)
    if env_value is not None:
        env["SAFEMAP_RACE"] = env_value
    return subprocess.run(
        [exe, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=cwd
    )


# ------------------------------------------------------------------------------ parsing


def test_parse_values() -> None:
    assert parse_options("") is None and parse_options("0") is None
    assert parse_options("off") is None
    assert parse_options("1") == Options()
    opts = parse_options(
        "halt_on_error=1 history_size=3 log_path=/tmp/race exitcode=66 "
        "strip_path_prefix=/x/ atexit_sleep_ms=0"
    )
    assert opts == Options(
        log_path="/tmp/race",
        exitcode=66,
        strip_path_prefix="/x/",
        history_size=3,
        halt_on_error=True,
        atexit_sleep_ms=0,
    )
    assert parse_env({}) is None and parse_env({"SAFEMAP_RACE": "exitcode=3"}) == Options(
        exitcode=3
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus=1", "unknown race detector option 'bogus'"),
        ("history_size=8", "history_size=8: must be in 0..7"),
        ("history_size=x", "expected an integer"),
        ("halt_on_error=2", "expected 0 or 1"),
        ("exitcode=300", "must be in 0..255"),
        ("halt_on_error", "malformed option 'halt_on_error'"),
        ("log_path=", "must not be empty"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(OptionsError, match=message) as info:
        parse_options(text)
    assert str(info.value).startswith("SAFEMAP_RACE: ")


def test_lenient_parse_keeps_the_good_options() -> None:
    opts, errors = lenient_options("exitcode=3 bogus=1 history_size=2")
    assert opts == Options(exitcode=3, history_size=2)
    assert len(errors) == 1 and "bogus" in errors[0]


def test_sink_log_path(tmp_path: Path) -> None:
    sink = Sink(str(tmp_path / "race"))
    sink.write("one\n")
    sink.write("two\n")
    assert (tmp_path / f"race.{os.getpid()}").read_text() == "one\ntwo\n"


# ---------------------------------------------------------------- exit status (Go's way)


def test_env_enabled_process_exits_66_and_prints_found() -> None:
    code = RACY.format(enable="race.enable_from_env()", tail="")
    result = run(code, "1")
    assert result.returncode == 66, result.stderr
    assert "main finished" in result.stdout
    assert result.stderr.count("WARNING: DATA RACE") == 1
    assert result.stderr.rstrip().endswith("Found 1 data race(s)")


def test_exitcode_option_and_other_atexit_handlers_still_run() -> None:
    code = RACY.format(
        # Registered after the detector armed its handler (as any handler is when the
        # start-up hook armed it), so it runs before the detector's final one.
        enable="race.enable_from_env()\n"
        "import atexit; atexit.register(print, 'user atexit ran', flush=True)",
        tail="",
    )
    result = run(code, "exitcode=7")
    assert result.returncode == 7, result.stderr
    assert "user atexit ran" in result.stdout


def test_clean_process_keeps_status_0() -> None:
    code = (
        "from safemap import race\nrace.enable_from_env()\n"
        "d = race.watch({}, name='m')\nd['k'] = 1\nd.get('k')\nlist(d)\n"
    )
    result = run(code, "1")
    assert result.returncode == 0, result.stderr
    assert "Found" not in result.stderr and "DATA RACE" not in result.stderr


@pytest.mark.parametrize(
    "tail", ["import sys; sys.exit(3)", "raise SystemExit(3)", "raise KeyError", "pass"]
)
def test_exit_status_is_overridden_when_races_were_reported(tail: str) -> None:
    # One rule, ThreadSanitizer's: however the program ends, races make it exit exitcode.
    result = run(RACY.format(enable="race.enable_from_env()", tail=tail), "1")
    assert result.returncode == 66, result.stderr
    assert result.stderr.count("Found 1 data race(s)") == 1


def test_exitcode_0_keeps_the_programs_own_status() -> None:
    for tail, status in (("import sys; sys.exit(3)", 3), ("raise SystemExit(4)", 4), ("", 0)):
        result = run(RACY.format(enable="race.enable_from_env()", tail=tail), "exitcode=0")
        assert result.returncode == status, result.stderr
        assert "Found 1 data race(s)" in result.stderr


def test_cleared_races_do_not_count_at_exit() -> None:
    result = run(RACY.format(enable="race.enable_from_env()", tail="race.clear()"), "1")
    assert result.returncode == 0, result.stderr
    assert "WARNING: DATA RACE" in result.stderr and "Found" not in result.stderr


def test_report_written_while_stderr_was_redirected_is_shown_at_exit() -> None:
    code = RACY.format(
        enable="race.enable_from_env()\nimport io, sys; sys.stderr = io.StringIO()",
        tail="sys.stderr = sys.__stderr__",
    )
    result = run(code, "1")
    assert result.returncode == 66
    assert result.stderr.count("WARNING: DATA RACE") == 1
    assert result.stderr.rstrip().endswith("Found 1 data race(s)")


def test_unwritable_log_path_falls_back_to_stderr_and_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "race"
    result = run(RACY.format(enable="race.enable_from_env()", tail=""), f"log_path={missing}")
    assert result.returncode == 66
    lines = [line for line in result.stderr.splitlines() if "cannot write reports" in line]
    assert len(lines) == 1 and str(missing) in lines[0] and "stderr" in lines[0]
    assert result.stderr.count("WARNING: DATA RACE") == 1
    assert result.stderr.rstrip().endswith("Found 1 data race(s)")


def test_sink_falls_back_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sink = Sink(str(tmp_path / "missing" / "race"))
    sink.write("one\n")
    sink.write("two\n")
    err = capsys.readouterr().err
    assert err.count("cannot write reports to log_path") == 1
    assert err.endswith("one\ntwo\n")


def test_programmatic_enable_does_not_change_exit_status() -> None:
    result = run(RACY.format(enable="race.enable()", tail=""), None)
    assert result.returncode == 0
    assert "WARNING: DATA RACE" in result.stderr and "Found" not in result.stderr


def test_halt_on_error_exits_at_first_race() -> None:
    result = run(
        RACY.format(enable="race.enable_from_env()", tail=""), "halt_on_error=1 exitcode=9"
    )
    assert result.returncode == 9
    assert "WARNING: DATA RACE" in result.stderr
    assert "main finished" not in result.stdout


def test_log_path_and_stdout(tmp_path: Path) -> None:
    prefix = tmp_path / "race"
    result = run(RACY.format(enable="race.enable_from_env()", tail=""), f"log_path={prefix}")
    assert result.returncode == 66
    (log,) = tmp_path.glob("race.*")
    assert log.name.split(".")[-1].isdigit()
    text = log.read_text()
    assert "WARNING: DATA RACE" in text and text.rstrip().endswith("Found 1 data race(s)")
    assert "DATA RACE" not in result.stderr
    result = run(RACY.format(enable="race.enable_from_env()", tail=""), "log_path=stdout")
    assert "WARNING: DATA RACE" in result.stdout and "DATA RACE" not in result.stderr


# ----------------------------------------------------------------------- start-up hook


def test_pth_is_one_cheap_import_line() -> None:
    lines = [line for line in PTH.read_text().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("import os;")
    assert 'os.environ.get("SAFEMAP_RACE")' in lines[0]


def _build_requirements() -> list[str]:
    """pyproject.toml's build requirements (what ``setup.py`` needs to run)."""
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["build-system"]["requires"])


def _setuptools_path(tmp_path: Path) -> str:
    """A ``PYTHONPATH`` entry under which ``setup.py`` can import the setuptools the build
    requires: none is needed when this interpreter has it; otherwise (venvs of Python 3.12+
    have none, older venvs an older one, and pip builds in an isolated environment) the
    build requirements are installed into a directory."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    requirements = _build_requirements()
    try:
        installed = all(
            Requirement(r).specifier.contains(version(Requirement(r).name), prereleases=True)
            for r in requirements
        )
    except PackageNotFoundError:
        installed = False
    if installed:
        return ""
    target = tmp_path / "setuptools"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), *requirements],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return str(target)


def test_build_py_puts_the_pth_at_the_root(tmp_path: Path) -> None:
    env = dict(os.environ)
    extra = _setuptools_path(tmp_path)
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, env.get("PYTHONPATH")]))
    out = tmp_path / "build"
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert (out / PTH.name).read_text() == PTH.read_text()
    assert (out / "safemap" / "race" / "_startup.py").exists()


STARTUP_CHECK = textwrap.dedent(
    """
    import sys
    race = sys.modules.get("safemap.race")
    print("enabled-before-user-code:", bool(race and race.enabled()))
    """
)


def test_startup_hook_enables_before_user_code(startup_venv: str) -> None:
    result = run(STARTUP_CHECK, "1", exe=startup_venv)
    assert result.returncode == 0, result.stderr
    assert "enabled-before-user-code: True" in result.stdout


def test_startup_hook_does_nothing_without_the_variable(startup_venv: str) -> None:
    code = 'import sys; print("imported:", "safemap" in sys.modules)'
    result = run(code, None, exe=startup_venv)
    assert result.returncode == 0, result.stderr
    assert "imported: False" in result.stdout


def test_startup_hook_exit_status_and_bad_options(startup_venv: str) -> None:
    result = run(RACY.format(enable="", tail=""), "exitcode=5 bogus=1", exe=startup_venv)
    assert result.returncode == 5, result.stderr
    assert "safemap.race: ignoring bad option" in result.stderr and "bogus" in result.stderr
    assert "Found 1 data race(s)" in result.stderr
