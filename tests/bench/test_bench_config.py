"""Presets, --mix parsing and mix files."""

from __future__ import annotations

from pathlib import Path

import pytest

from safemap.bench.config import load_mix_file, parse_mix, preset
from safemap.bench.mixes import MixSpec


def test_presets() -> None:
    quick, thorough = preset(True), preset(False)
    assert quick.threads == (1, 2) and quick.rounds == 1
    assert thorough.rounds > 1 and max(thorough.threads) > max(quick.threads)
    assert thorough.duration > quick.duration and thorough.capacity > quick.capacity


def test_parse_mix() -> None:
    assert parse_mix("load=90, store=5,delete=5") == {"load": 90, "store": 5, "delete": 5}
    assert parse_mix("load-or-store=100") == {"load_or_store": 100}
    with pytest.raises(ValueError, match="unknown operation"):
        parse_mix("read=100")
    with pytest.raises(ValueError, match="OP=PERCENT"):
        parse_mix("load:100")


def test_mix_spec_validation() -> None:
    with pytest.raises(ValueError, match="sum to 100"):
        MixSpec({"load": 90})
    with pytest.raises(ValueError, match="unknown operation"):
        MixSpec({"get": 100})
    with pytest.raises(ValueError, match="distribution"):
        MixSpec({"load": 100}, distribution="pareto")


def test_mix_file(tmp_path: Path) -> None:
    path = tmp_path / "mix.toml"
    path.write_text(
        'name = "sessions"\nkeys = 64\ndistribution = "zipf"\nvalue_size = 32\n'
        "threads = [1, 3]\n\n[mix]\nload = 80\nstore = 15\ndelete = 5\n"
    )
    spec = load_mix_file(path)
    assert spec == MixSpec(
        {"load": 80, "store": 15, "delete": 5},
        name="sessions",
        keys=64,
        distribution="zipf",
        value_size=32,
        threads=(1, 3),
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("keys = 5\n", "a \\[mix\\] table"),
        ("colour = 1\n[mix]\nload = 100\n", "unknown setting"),
        ("[mix]\nload = 60\n", "sum to 100"),
        ("threads = [0]\n[mix]\nload = 100\n", "threads"),
    ],
)
def test_bad_mix_files(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "mix.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        load_mix_file(path)
