"""pipelines.tracking.runs against a real MLflow sqlite store in a temporary folder (no mocks)."""

from __future__ import annotations

import pickle
from pathlib import Path

import mlflow
import pytest

from mnad.config import OptimConfig, Preset
from pipelines.errors import UserError
from pipelines.tracking import runs
from pipelines.tracking.store import sqlite_path
from tests.tracking.conftest import TINY

pytestmark = pytest.mark.usefixtures("no_global_store")


def test_flatten_params_nests_with_dots_and_stringifies() -> None:
    flat = runs.flatten_params(
        {"preset": Preset("tiny", TINY, OptimConfig()).to_dict(), "workers": 2, "x": None}
    )
    assert flat["preset.model.width_mult"] == str(1 / 16)
    assert flat["preset.optim.lr"] == "0.0002"
    assert flat["workers"] == "2" and flat["x"] == "None"
    assert runs.flatten_params({"m": TINY})["m.height"] == "16"  # dataclasses too


def test_run_logs_params_metrics_artifacts_and_finishes(store: str, tmp_path: Path) -> None:
    params = {"model": {"alpha": 0.6, "size": (64, 64)}, "many": {f"p{i}": i for i in range(150)}}
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("<html></html>")
    with runs.start_run(store, "ped2", "train", params, tags={"stage": "train"}) as run:
        for epoch in range(3):
            run.log_metrics({"loss": 1.0 / (epoch + 1), "clips_per_s": 10.0}, step=epoch)
        run.log_artifacts(tmp_path / "report", "report")
        run.log_artifact(tmp_path / "report" / "index.html")
        run.set_tags({"mnad.done": True})
    client = mlflow.MlflowClient(store)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "train"
    assert got.data.params["model.alpha"] == "0.6"
    assert got.data.params["model.size"] == "(64, 64)"
    assert len(got.data.params) == 152  # more than one batch of 100
    assert got.data.tags["stage"] == "train" and got.data.tags["mnad.done"] == "True"
    history = client.get_metric_history(run.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert {a.path for a in client.list_artifacts(run.run_id)} == {"report", "index.html"}
    # artifacts sit beside the database, not in ./mlruns of the current folder
    db_folder = sqlite_path(store).parent
    assert Path(got.info.artifact_uri.removeprefix("file://")).is_relative_to(db_folder)


def test_run_ends_failed_when_an_exception_escapes(store: str) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        runs.start_run(store, "ped2", "bad", {}) as run,
    ):
        raise RuntimeError("boom")
    assert mlflow.MlflowClient(store).get_run(run.run_id).info.status == "FAILED"


def test_resume_keeps_params_and_records_changes(store: str) -> None:
    with pytest.raises(KeyError), runs.start_run(store, "ped2", "r", {"epochs": 3}) as run:
        raise KeyError("driver died")
    with runs.start_run(store, "ped2", "r", {"epochs": 5, "seed": 1}, run_id=run.run_id) as again:
        again.log_metrics({"loss": 0.1}, step=3)
    got = mlflow.MlflowClient(store).get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"epochs": "3", "seed": "1"}
    assert got.data.tags["mnad.resume_changed_params"] == '{"epochs": "5"}'
    assert runs.TAG_RESUME_CHANGED == "mnad.resume_changed_params"
    with (
        pytest.raises(UserError, match="no such run"),
        runs.start_run(store, "ped2", "r", {}, run_id="0" * 32),
    ):
        pass


def test_run_handle_pickles_without_its_client(store: str) -> None:
    with runs.start_run(store, "ped2", "pickled", {}) as run:
        run.client  # noqa: B018 - open the cached client
        copy = pickle.loads(pickle.dumps(run))
        copy.log_metrics({"x": 1.0}, step=0)
    assert copy == run
    assert mlflow.MlflowClient(store).get_run(run.run_id).data.metrics == {"x": 1.0}
