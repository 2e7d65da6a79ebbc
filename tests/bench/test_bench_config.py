"""Presets, --mix parsing and mix files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from safemap.bench.config import load_mix_file, parse_mix, preset
from safemap.bench.mixes import MixSpec


def test_presets() -> None:
    quick, thorough = preset(True), preset(False)
    assert quick.threads == (1, 2)
    assert quick.rounds >= 2  # a round-to-round spread is measured, so ties can be called
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


@pytest.mark.parametrize(
    ("line", "setting"),
    [
        ('prefill = "no"', "prefill"),  # a string is not a bool (it used to count as true)
        ("prefill = 0", "prefill"),
        ("keys = 1.5", "keys"),  # not truncated to 1
        ("keys = [1]", "keys"),  # used to end in a TypeError traceback
        ("keys = true", "keys"),  # a bool is not a count
        ("keys = 0", "keys"),
        ("threads = [true]", "threads"),  # used to count as 1 thread
        ("threads = []", "threads"),
        ('threads = "2"', "threads"),
        ("threads = [1, 2.5]", "threads"),
        ("value_size = -1", "value_size"),
        ("value_size = 8.0", "value_size"),
        ('distribution = "pareto"', "distribution"),
        ("distribution = 1", "distribution"),
        ("name = 3", "name"),
        ('name = ""', "name"),
    ],
)
def test_a_setting_of_the_wrong_type_or_range_is_refused(
    tmp_path: Path, line: str, setting: str
) -> None:
    path = tmp_path / "mix.toml"
    path.write_text(f"{line}\n[mix]\nload = 100\n")
    with pytest.raises(ValueError) as info:
        load_mix_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {setting} must be ")


@pytest.mark.parametrize(
    ("mix", "fragment"),
    [
        ("load = 100.0", "mix must be"),
        ("load = true", "mix must be"),
        ('load = "100"', "mix must be"),
        ("load = -10\nstore = 110", "mix must be"),
        ("read = 100", "unknown operation"),
    ],
)
def test_bad_percentages_are_refused(tmp_path: Path, mix: str, fragment: str) -> None:
    path = tmp_path / "mix.toml"
    path.write_text(f"[mix]\n{mix}\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{fragment}"):
        load_mix_file(path)


def test_invalid_toml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mix.toml"
    path.write_text("keys = = 3\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: not valid TOML"):
        load_mix_file(path)
