"""Train and score against a real `mlflow server` over HTTP, as on a cluster: the runs, their
metrics, the artifacts (uploaded through the server's artifact proxy) and the registered
model are on the server, and the scorer loads the model back from it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from mnad.config import ModelConfig, OptimConfig, Preset
from pipelines.score import ScoreConfig, run_score
from pipelines.train import TrainConfig, run_train
from tests.conftest import write_tiny_data
from tests.tracking.server import mlflow_server

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = Preset(
    "tiny",
    ModelConfig(height=16, width=16, channels=1, input_frames=4, width_mult=1 / 16),
    OptimConfig(lr=2e-3, batch_size=4, epochs=2, seed=0),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(URI, artifact folder) of an `mlflow server` on 127.0.0.1 with a sqlite backend."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as found:
        yield found


def test_train_and_score_report_to_a_tracking_server(
    ray_local, server: tuple[str, Path], tmp_path: Path, monkeypatch
) -> None:
    uri, artifacts = server
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = write_tiny_data(tmp_path / "data", {"train": {"v0": 24, "v1": 20}, "test": {"t0": 12}})
    preset = tmp_path / "tiny.json"
    preset.write_text(TINY.to_json())

    trained = run_train(
        TrainConfig(
            data=str(data), preset=str(preset), workers=1, output=str(tmp_path / "runs"),
            tracking_uri=uri, experiment="server-test", quiet=True, shuffle_buffer=8,
        )
    )  # fmt: skip
    scored = run_score(
        ScoreConfig(
            data=str(data), model=trained.model_uri, out=str(tmp_path / "scores"),
            tracking_uri=uri, experiment="server-test", quiet=True, report=False,
        )
    )  # fmt: skip

    # Everything below is read back from the server, over HTTP.
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    train_run = client.get_run(trained.run_id)
    assert train_run.info.status == "FINISHED"
    assert json.loads(train_run.data.params["workers"]) == 1
    losses = client.get_metric_history(trained.run_id, "loss")
    assert [m.step for m in losses] == [1, 2]
    assert trained.model_uri == "models:/mnad-tiny/1"
    version = client.get_model_version("mnad-tiny", "1")
    assert version.run_id == trained.run_id and version.status == "READY"

    assert scored.run_id is not None
    score_run = client.get_run(scored.run_id)
    assert score_run.info.status == "FINISHED"
    assert score_run.data.tags["mnad.model_uri"] == trained.model_uri
    assert score_run.data.metrics["frames_per_s"] > 0
    logged = {a.path for a in client.list_artifacts(scored.run_id)}
    assert "summary.json" in logged and "frames.parquet" not in logged  # no copy of the rows
    assert score_run.data.tags["mnad.scores_uri"] == str(tmp_path / "scores" / "frames")
    # The artifacts went through the server's proxy into its own store, not to a local path.
    stored = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert {"summary.json", "model.pt"} <= stored
