"""pipelines.options: one declaration of a config's options for the command line and YAML."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from pipelines import options
from pipelines.errors import OptionError, UserError


@dataclass
class _Config:
    """A stage config as the stages declare theirs."""

    data: str = options.option("DATA folder", positional=True, path=True)
    mode: Literal["a", "b"] = options.option("a or b", default="a")
    size: tuple[int, int] = options.option("H W", default=(8, 8))
    batch_size: int | None = options.option("clips per step", default=None)
    workers: int = options.option("ranks", default=1, execution=True, resume=True)
    quiet: bool = options.option("no progress", default=False, execution=True)
    probe: object = options.hidden()

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise OptionError("workers", "--workers must be an integer >= 1")
        if self.batch_size == 0:
            raise UserError("a batch of nothing")


def test_metadata_classifies_the_fields() -> None:
    assert list(options.fields(_Config)) == [
        "data", "mode", "size", "batch_size", "workers", "quiet"
    ]  # fmt: skip  (the hook is no option)
    assert options.names(_Config, "path") == ("data",)
    assert options.names(_Config, "execution") == ("workers", "quiet", "probe")
    assert options.names(_Config, "resume") == ("workers",)
    assert options.flag("batch_size") == "--batch-size"
    config = _Config(data="d", probe=object())
    assert options.values(config) == {
        "data": "d", "mode": "a", "size": (8, 8), "batch_size": None, "workers": 1,
        "quiet": False,
    }  # fmt: skip


def test_the_command_line_is_built_from_the_fields() -> None:
    parser = argparse.ArgumentParser()
    options.add_arguments(parser, _Config)
    ns = parser.parse_args(["DATA", "--mode", "b", "--size", "16", "24", "--quiet"])
    config = options.from_args(_Config, ns)
    assert (config.data, config.mode, config.size, config.quiet) == ("DATA", "b", (16, 24), True)
    assert config.batch_size is None and config.workers == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["DATA", "--mode", "c"])  # choices from the Literal


def test_yaml_values_are_checked_and_errors_carry_the_field() -> None:
    given = options.check_mapping(
        _Config, {"size": [4, 8], "workers": 2}, ["size", "workers", "mode"]
    )
    assert given == {"size": (4, 8), "workers": 2}
    cases = [
        ({"size": [4]}, "size", r"expected a list of 2 numbers, not \[4\]"),
        ({"mode": "c"}, "mode", "expected one of 'a', 'b', not 'c'"),
        ({"workers": True}, "workers", "expected an integer, not True"),
        ({"batch_size": "8"}, "batch_size", "expected an integer, not '8'"),
        ({"colour": 1}, "colour", "unknown key; expected one of batch_size, mode, size, workers"),
    ]
    for raw, field, message in cases:
        with pytest.raises(OptionError, match=message) as info:
            options.check_mapping(_Config, raw, ["size", "workers", "mode", "batch_size"])
        assert info.value.field == field


def test_a_configs_own_validation_comes_back_with_its_field() -> None:
    with pytest.raises(OptionError, match="--workers must be") as info:
        options.build(_Config, {"data": "d", "workers": 0})
    assert info.value.field == "workers"
    with pytest.raises(OptionError, match="a batch of nothing") as info:
        options.build(_Config, {"data": "d", "batch_size": 0})
    assert info.value.field == ""  # a check that names no field
