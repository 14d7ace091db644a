"""Fixtures of the train stage's tests: a tiny preset (16x16 grey, 1/16 of the paper's widths)
and a config of two workers on the tiny DATA fixture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mnad.config import ModelConfig, OptimConfig, Preset
from pipelines.train import TrainConfig

TINY = Preset(
    "tiny",
    ModelConfig(height=16, width=16, channels=1, input_frames=4, width_mult=1 / 16),
    OptimConfig(lr=2e-3, batch_size=4, epochs=3, seed=0),
)


@pytest.fixture(scope="session")
def tiny() -> Preset:
    return TINY


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny preset as a preset JSON file."""
    path = tmp_path_factory.mktemp("preset") / "tiny.json"
    path.write_text(TINY.to_json())
    return str(path)


@pytest.fixture(scope="session")
def make_config() -> Callable[..., TrainConfig]:
    """``make_config(data, preset, work, **changes)``: two quiet workers, runs and the MLflow
    store under ``work``."""

    def make(data: Path | str, preset: str, work: Path, **changes) -> TrainConfig:
        values = {
            "data": str(data),
            "preset": preset,
            "workers": 2,
            "output": str(work / "runs"),
            "tracking_uri": f"sqlite:///{work}/mlflow.db",
            "quiet": True,
            "shuffle_buffer": 16,
        }
        return TrainConfig(**{**values, **changes})

    return make
