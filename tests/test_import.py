"""``import safemap`` stays cheap, and the public names stay what they claim to be."""

from __future__ import annotations

import importlib.machinery
import inspect
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import safemap

# Modules a map library must not drag into every program that imports it.
HEAVY = (
    "typing",  # safemap._typing stands in for it at run time
    "dataclasses",
    "threading",  # the eager modules take their locks from _thread
    "asyncio",
    "importlib.metadata",
    "safemap.race",
    "safemap.bench",
    "safemap.actor",
    "safemap.cli",
    "safemap.failfast",
)


def _modules_after(code: str) -> list[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def test_import_safemap_leaves_heavy_modules_out() -> None:
    loaded = _modules_after("import safemap")
    assert [name for name in HEAVY if name in loaded] == []


def test_using_the_core_maps_keeps_heavy_modules_out() -> None:
    loaded = _modules_after(
        "import safemap\n"
        "for t in (safemap.ConcurrentMap, safemap.SyncMap, safemap.LockedMap, safemap.RWLockMap):\n"
        "    m = t(a=1); m.merge('a', 1, lambda x, y: x + y); m.snapshot()\n"
    )
    # (threading may come in: on free-threaded builds RWLockMap's per-thread read counters
    # fold when their thread ends, which they learn from threading)
    assert [name for name in HEAVY if name in loaded and name != "threading"] == []


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("ActorMap", "safemap.actor"),
        ("checked", "safemap.failfast"),
        ("race", "safemap.race"),
    ],
)
def test_lazy_names_import_their_module_on_first_use(name: str, module: str) -> None:
    loaded = _modules_after(f"import safemap\nsafemap.{name}")
    assert module in loaded


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in safemap.__all__:
        assert getattr(safemap, name) is not None, name
    assert set(safemap.__all__) <= set(dir(safemap))
    from safemap import ActorMap, checked, race  # from-imports of lazy names work too

    assert ActorMap is safemap.ActorMap and checked is safemap.checked
    assert race.__name__ == "safemap.race"


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchMap'"):
        safemap.NoSuchMap  # noqa: B018


@pytest.mark.parametrize(
    "name", ["LockedMap", "RWLockMap", "ConcurrentMap", "SyncMap", "FrozenMap", "ActorMap"]
)
def test_public_classes_have_their_source(name: str) -> None:
    # Debuggers, pydoc and inspect find a class's source through its __module__.
    cls = getattr(safemap, name)
    assert f"class {name}" in inspect.getsource(cls)


def test_version_is_the_packages_version() -> None:
    from importlib.metadata import version

    assert safemap.__version__ == version("safemap")


def test_typing_stand_ins_keep_generics_and_introspection_working() -> None:
    """``safemap._typing`` replaces ``typing`` at run time: subscripting a map class and
    ``typing.get_type_hints`` on its methods still work."""
    import typing

    for cls in (safemap.ConcurrentMap, safemap.LockedMap, safemap.FrozenMap, safemap.PersistentMap):
        alias = cls[str, int]
        assert typing.get_origin(alias) is cls and typing.get_args(alias) == (str, int)
    hints = typing.get_type_hints(safemap.LockedMap.merge)
    assert set(hints) == {"key", "value", "fn", "return"}


@pytest.mark.skipif(
    not sysconfig.get_config_var("Py_GIL_DISABLED"),
    reason="free-threaded builds only: a GIL build has no GIL to turn back on",
)
def test_every_extension_declares_that_it_runs_without_the_gil() -> None:
    """Importing an extension that does not declare free-threading support (Py_mod_gil)
    turns the GIL back on for the whole process. Checked in a process started without
    PYTHON_GIL / -X gil, which would force it off and hide the difference."""
    root = Path(safemap.__file__).parent
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    names = sorted(
        {
            ".".join(("safemap", *path.relative_to(root).parts[:-1], path.name.split(".")[0]))
            for path in root.rglob("*")
            if path.name.endswith(suffixes)
        }
    )
    # Every C extension setup.py builds (a file missing here would be a packaging error).
    built = {"safemap.native._core", "safemap.persistent._hamt", "safemap.protocol._flight"}
    assert built | {"safemap.protocol._locked"} <= set(names)
    probe = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sys._is_gil_enabled()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    out = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", probe],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )  # fmt: skip
    assert json.loads(out.stdout) is False, (names, out.stderr)
