"""Fixtures of the tracking tests: a real MLflow sqlite store in a temporary folder (no
mocks), a tiny checkpoint, and that checkpoint registered by a finished run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnad.checkpoint import save_checkpoint
from mnad.config import ModelConfig, OptimConfig, Preset
from mnad.network import build_model
from pipelines import tracking

TINY = ModelConfig(height=16, width=16, channels=1, width_mult=1 / 16, memory_size=3)
MODEL_NAME = "mnad-tiny"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the module (creating one costs about a second of migrations)."""
    return tracking.resolve_tracking_uri(None, base=tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_model(TINY, seed=0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    return save_checkpoint(path, model, Preset("tiny", TINY, OptimConfig()))


@pytest.fixture(scope="module")
def registered(store: str, checkpoint: Path) -> tuple[tracking.ModelVersionInfo, str]:
    """The tiny checkpoint registered as mnad-tiny by a finished run: (version, run id)."""
    with tracking.start_run(store, "ped2", "train", {"preset": "tiny"}) as run:
        version = tracking.register_checkpoint(run, os.fspath(checkpoint), MODEL_NAME)
    return version, run.run_id


@pytest.fixture
def no_global_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run in an empty folder and check that nothing fell back to MLflow's default store."""
    monkeypatch.chdir(tmp_path)
    yield
    leaked = {p.name for p in tmp_path.iterdir()} & {"mlflow.db", "mlruns", "mlartifacts"}
    assert not leaked, f"MLflow's global default store was used: {leaked}"


@pytest.fixture
def registry_env(store: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point MLflow's global loaders (mlflow.pyfunc.load_model) at the test store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    return store
