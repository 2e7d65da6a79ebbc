"""The Python examples of the README and of docs/ run as written (documentation that cannot
rot). Each runs in a fresh interpreter, so no example can leave state behind (a detector
left enabled, a thread). A block that is not meant to run is not tagged ``python``. A block
whose first line is
``# path/to/file.py`` is a file of a multi-file example; the test of that example (next to
the code it documents) writes and runs those files, so it is not run alone here."""

from __future__ import annotations

import re
import subprocess
import sys
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
    script = tmp_path / f"{page.stem}_example_{index}.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,  # an example that writes files writes them here
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, f"{page.name} example {index}:\n{result.stderr}"
