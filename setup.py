"""Build of safemap's native core, ``safemap.native._core`` (issue 3).

Everything else about the package (metadata, packages, package data) lives in
pyproject.toml; this file only declares the C extension.  Warnings are on
(``-Wall -Wextra``) and the build is expected to produce none.

Environment knobs for developers (see docs/native.md):

- ``SAFEMAP_ASAN=1``: build with AddressSanitizer (and no optimisation beyond -O1).
- ``SAFEMAP_DEBUG=1``: ``-O0 -g3`` and assertions on.
"""

from __future__ import annotations

import os
import sys
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# The race detector's start-up hook (see src/safemap/race/_startup.py): a .pth file that
# must land at the root of site-packages, not inside the package.
STARTUP_PTH = os.path.join("src", "safemap", "race", "safemap_race_startup.pth")


class build_py_with_startup_pth(build_py):
    """build_py that also copies ``safemap_race_startup.pth`` to the build root."""

    def run(self) -> None:
        super().run()
        target = os.path.join(self.build_lib, os.path.basename(STARTUP_PTH))
        self.copy_file(STARTUP_PTH, target, preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        target = os.path.join(self.build_lib, os.path.basename(STARTUP_PTH))
        return [*super().get_outputs(include_bytecode), target]


# A sanitizer or debug build compiles and links everything anew under a build directory of
# its own: an in-tree build (pip's default) would otherwise reuse the normal build's objects
# from build/ (an "ASan run" testing an uninstrumented library), and a later normal build
# could pick up the variant's libraries.
VARIANT = (
    "asan" if os.environ.get("SAFEMAP_ASAN") else "debug" if os.environ.get("SAFEMAP_DEBUG") else ""
)


class build_variant(build):
    """build that puts a variant build under build/<variant>/."""

    def initialize_options(self) -> None:
        super().initialize_options()
        if VARIANT:
            self.build_base = os.path.join("build", VARIANT)


class build_ext_variant(build_ext):
    """build_ext that always recompiles a variant build."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if VARIANT:
            self.force = True


SOURCES = sorted(glob(os.path.join("src", "safemap", "native", "sm_*.c")))
DEPENDS = sorted(glob(os.path.join("src", "safemap", "native", "sm_*.h")))

if sys.platform == "win32":
    compile_args = ["/W4", "/O2"]
    link_args: list[str] = []
    undef: list[str] = []
else:
    compile_args = ["-Wall", "-Wextra", "-std=c11", "-O2", "-fno-strict-aliasing"]
    link_args = []
    undef = []
    if os.environ.get("SAFEMAP_DEBUG"):
        compile_args += ["-O0", "-g3"]
        undef = ["NDEBUG"]
    if os.environ.get("SAFEMAP_ASAN"):
        compile_args += ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"]
        link_args += ["-fsanitize=address"]


def _extension(name: str, sources: list[str], depends: list[str]) -> Extension:
    """One C extension, built with the flags above (warnings, sanitizer, debug)."""
    return Extension(
        name,
        sources=sources,
        depends=depends,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        undef_macros=undef,
    )


setup(
    cmdclass={
        "build": build_variant,
        "build_py": build_py_with_startup_pth,
        "build_ext": build_ext_variant,
    },
    ext_modules=[
        _extension(
            "safemap.native._core",
            sources=SOURCES,
            depends=DEPENDS,
        ),
        _extension(
            "safemap.failfast._core",
            sources=[os.path.join("src", "safemap", "failfast", "_checked.c")],
            depends=[os.path.join("src", "safemap", "native", "sm_compat.h")],
        ),
        _extension(
            "safemap.locks._rwlock",
            sources=[os.path.join("src", "safemap", "locks", "_rwlock.c")],
            depends=[
                os.path.join("src", "safemap", "native", "sm_compat.h"),
                os.path.join("src", "safemap", "native", "sm_contention.h"),
            ],
        ),
        _extension(
            "safemap.persistent._hamt",
            sources=[
                os.path.join("src", "safemap", "persistent", "_hamt.c"),
                os.path.join("src", "safemap", "native", "sm_lock.c"),
            ],
            depends=[
                os.path.join("src", "safemap", "native", "sm_compat.h"),
                os.path.join("src", "safemap", "native", "sm_lock.h"),
                os.path.join("src", "safemap", "protocol", "_frozen_api.h"),
            ],
        ),
        _extension(
            "safemap.protocol._frozen",
            sources=[os.path.join("src", "safemap", "protocol", "_frozen.c")],
            depends=[
                os.path.join("src", "safemap", "native", "sm_compat.h"),
                os.path.join("src", "safemap", "protocol", "_frozen_api.h"),
            ],
        ),
        _extension(
            "safemap.protocol._flight",
            sources=[os.path.join("src", "safemap", "protocol", "_flight.c")],
            depends=[os.path.join("src", "safemap", "native", "sm_compat.h")],
        ),
        _extension(
            "safemap.protocol._locked",
            sources=[os.path.join("src", "safemap", "protocol", "_locked.c")],
            depends=[os.path.join("src", "safemap", "native", "sm_compat.h")],
        ),
        _extension(
            "safemap.race._fastiter",
            sources=[os.path.join("src", "safemap", "race", "_fastiter.c")],
            depends=[os.path.join("src", "safemap", "native", "sm_compat.h")],
        ),
    ],
)
