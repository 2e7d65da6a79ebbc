"""The Python examples of the README and of docs/ run as written (documentation that cannot
rot). A block that is not meant to run is not tagged ``python``. A block whose first line is
``# path/to/file.py`` is a file of a multi-file example; the test of that example (next to
the code it documents) writes and runs those files, so it is not run alone here."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FILE_OF_AN_EXAMPLE = re.compile(r"# \S+\.py\b")
BLOCKS = [
    pytest.param(page, index, code, id=f"{page.relative_to(ROOT)}-{index}")
    for page in PAGES
    for index, code in enumerate(
        re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    )
    if not FILE_OF_AN_EXAMPLE.match(code)
]


def test_readme_has_examples() -> None:
    assert sum(1 for b in BLOCKS if b.values[0].name == "README.md") >= 5


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("page", "index", "code"), BLOCKS)
def test_example_runs(
    page: Path, index: int, code: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if "RedisMap" in code:
        request.getfixturevalue("redis_server")  # a real server, at $SAFEMAP_REDIS_URL
    namespace: dict[str, object] = {"__name__": f"example_{page.stem}_{index}"}
    cwd = os.getcwd()
    os.chdir(tmp_path)  # an example that writes files writes them here
    try:
        exec(compile(code, f"{page.name} example {index}", "exec"), namespace)
    finally:
        os.chdir(cwd)
