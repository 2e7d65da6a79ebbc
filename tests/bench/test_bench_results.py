"""results.json: round trip, and the schema documented in docs/bench.md."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from safemap.bench.config import preset
from safemap.bench.results import SCHEMA, BenchResults
from safemap.bench.session import make_plan, run_plan

DOCS = Path(__file__).resolve().parents[2] / "docs" / "bench.md"


@pytest.fixture(scope="module")
def results() -> BenchResults:
    config = replace(
        preset(quick=True),
        impls=("LockedMap", "dict", "ft_utils.ConcurrentDict"),
        workloads=("Counter", "SwapCollision"),
        ops=200,
        latency_rounds=2,
    )
    return run_plan(make_plan(config), command="safemap bench (test)")


def test_json_round_trip(results: BenchResults) -> None:
    text = results.to_json()
    again = BenchResults.from_json(text)
    assert again.to_json() == text
    assert again.measurements == results.measurements
    assert again.recommendations == results.recommendations
    assert again.workloads == results.workloads


def test_json_content(results: BenchResults) -> None:
    doc = json.loads(results.to_json())
    assert doc["schema"] == SCHEMA
    cell = doc["measurements"][0]
    assert cell["throughput"] > 0 and cell["status"] in ("ok", "failed")
    assert {m["threads"] for m in doc["measurements"]} == {1, 2}
    assert {r["workload"] for r in doc["recommendations"]} == {"Counter", "SwapCollision"}
    # ft_utils is optional (installed on some builds, e.g. 3.14t, not on others): it is
    # measured exactly where it imports, and listed as skipped elsewhere.
    ft_utils = importlib.util.find_spec("ft_utils") is not None
    expected = {"LockedMap", "dict"} | ({"ft_utils.ConcurrentDict"} if ft_utils else set())
    assert {x["impl"] for x in doc["latency"]} == expected
    assert {m["impl"] for m in doc["measurements"]} == expected
    listed = {i["name"]: i["available"] for i in doc["implementations"]}
    assert listed["ft_utils.ConcurrentDict"] is ft_utils


def test_another_schema_is_refused(results: BenchResults) -> None:
    doc = results.to_dict()
    doc["schema"] = "something-else/9"
    with pytest.raises(ValueError, match="safemap-bench/1"):
        BenchResults.from_dict(doc)


def _documented_fields(section: str) -> set[str]:
    """Field names in the first column of the table under ``section`` in docs/bench.md."""
    text = DOCS.read_text(encoding="utf-8")
    body = text.split(f"<!-- schema:{section} -->", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_]+)`", body, flags=re.M))


@pytest.mark.parametrize(
    ("section", "pick"),
    [
        ("top", lambda d: d),
        ("environment", lambda d: d["environment"]),
        ("config", lambda d: d["config"]),
        ("implementation", lambda d: d["implementations"][0]),
        ("workload", lambda d: d["workloads"][0]),
        ("measurement", lambda d: d["measurements"][0]),
        ("round", lambda d: d["measurements"][0]["rounds"][0]),
        ("latency", lambda d: d["latency"][0]),
        ("recommendation", lambda d: d["recommendations"][0]),
    ],
)
def test_every_json_field_is_documented(results: BenchResults, section: str, pick: object) -> None:
    doc = results.to_dict()
    assert set(pick(doc)) == _documented_fields(section)  # type: ignore[operator]
