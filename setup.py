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

setup(
    ext_modules=[
        Extension(
            "safemap.native._core",
            sources=SOURCES,
            depends=DEPENDS,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            undef_macros=undef,
        )
    ],
)
