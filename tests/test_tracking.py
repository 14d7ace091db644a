"""pipelines.tracking against a real MLflow sqlite store in a temporary folder (no mocks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from mnad import anomaly_score as scores
from mnad.checkpoint import save_checkpoint
from mnad.config import ModelConfig, OptimConfig, Preset
from mnad.network import build_model
from pipelines import tracking
from pipelines.errors import UserError

TINY = ModelConfig(height=16, width=16, channels=1, width_mult=1 / 16, memory_size=3)
MODEL_NAME = "mnad-tiny"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the module (creating one costs about a second of migrations)."""
    return tracking.resolve_tracking_uri(None, tmp_path_factory.mktemp("work"))


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


@pytest.fixture(autouse=True)
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


def clips(n: int, seed: int = 1) -> np.ndarray:
    """n random clips of the tiny config: 4 input frames then the target, (n, 5, 16, 16)."""
    rng = np.random.default_rng(seed)
    shape = (n, TINY.channels * TINY.clip_length, TINY.height, TINY.width)
    return rng.uniform(-1, 1, size=shape).astype(np.float32)


def direct_psnr(x: np.ndarray) -> np.ndarray:
    """PSNR of each clip's prediction computed by mnad directly, without MLflow."""
    model = build_model(TINY, seed=0).eval()
    batch = torch.from_numpy(x)
    split = TINY.channels * TINY.input_frames
    with torch.no_grad():
        decoded = model.decode(model.encode(batch[:, :split]))
    return scores.psnr(scores.prediction_error(decoded.prediction, batch[:, split:])).numpy()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the store ----------------------------------------------------------------------------


def test_resolve_tracking_uri_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = tracking.resolve_tracking_uri(None, tmp_path)
    assert default == f"sqlite:///{tmp_path.resolve()}/mnad-runs/mlflow.db"
    assert (tmp_path / "mnad-runs").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:1"
    assert tracking.resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_check_tracking_unreachable_server_fails_fast_in_one_line() -> None:
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        tracking.check_tracking(f"http://127.0.0.1:{free_port()}")
    assert time.monotonic() - start < tracking.HTTP_TIMEOUT_S + 1
    assert "cannot be reached" in str(err.value) and "\n" not in str(err.value)


def test_check_tracking_silent_server_times_out() -> None:
    with socket.socket() as sock:  # accepts connections (backlog), never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(UserError, match="cannot be reached within 0.5 s"):
            tracking.check_tracking(uri, timeout_s=0.5)
    assert time.monotonic() - start < 2


def test_check_tracking_refuses_folder_store_and_unwritable_sqlite(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="sqlite:///"):
        tracking.check_tracking(os.fspath(tmp_path / "mlruns"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot create the folder"):
        tracking.check_tracking(f"sqlite:///{blocker}/sub/mlflow.db")


def test_check_tracking_accepts_the_sqlite_store(store: str) -> None:
    tracking.check_tracking(store)


# ---- runs ---------------------------------------------------------------------------------


def test_flatten_params_nests_with_dots_and_stringifies() -> None:
    flat = tracking.flatten_params(
        {"preset": Preset("tiny", TINY, OptimConfig()).to_dict(), "workers": 2, "x": None}
    )
    assert flat["preset.model.width_mult"] == str(1 / 16)
    assert flat["preset.optim.lr"] == "0.0002"
    assert flat["workers"] == "2" and flat["x"] == "None"
    assert tracking.flatten_params({"m": TINY})["m.height"] == "16"  # dataclasses too


def test_run_logs_params_metrics_artifacts_and_finishes(store: str, tmp_path: Path) -> None:
    params = {"model": {"alpha": 0.6, "size": (64, 64)}, "many": {f"p{i}": i for i in range(150)}}
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("<html></html>")
    with tracking.start_run(store, "ped2", "train", params, tags={"stage": "train"}) as run:
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
    db_folder = tracking._sqlite_path(store).parent
    assert Path(got.info.artifact_uri.removeprefix("file://")).is_relative_to(db_folder)


def test_run_ends_failed_when_an_exception_escapes(store: str) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        tracking.start_run(store, "ped2", "bad", {}) as run,
    ):
        raise RuntimeError("boom")
    assert mlflow.MlflowClient(store).get_run(run.run_id).info.status == "FAILED"


def test_resume_keeps_params_and_records_changes(store: str) -> None:
    with pytest.raises(KeyError), tracking.start_run(store, "ped2", "r", {"epochs": 3}) as run:
        raise KeyError("driver died")
    with tracking.start_run(
        store, "ped2", "r", {"epochs": 5, "seed": 1}, run_id=run.run_id
    ) as again:
        again.log_metrics({"loss": 0.1}, step=3)
    got = mlflow.MlflowClient(store).get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"epochs": "3", "seed": "1"}
    assert got.data.tags["mnad.resume_changed_params"] == '{"epochs": "5"}'
    with (
        pytest.raises(UserError, match="no such run"),
        tracking.start_run(store, "ped2", "r", {}, run_id="0" * 32),
    ):
        pass


def test_run_handle_pickles_without_its_client(store: str) -> None:
    import pickle

    with tracking.start_run(store, "ped2", "pickled", {}) as run:
        run.client  # noqa: B018 - open the cached client
        copy = pickle.loads(pickle.dumps(run))
        copy.log_metrics({"x": 1.0}, step=0)
    assert copy == run
    assert mlflow.MlflowClient(store).get_run(run.run_id).data.metrics == {"x": 1.0}


# ---- the registry -------------------------------------------------------------------------


def test_registered_model_loads_and_predicts_like_mnad(registered, registry_env) -> None:
    version, run_id = registered
    assert (version.name, version.version, version.uri) == (MODEL_NAME, "1", "models:/mnad-tiny/1")
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@latest")
    x = clips(5)
    out = loaded.predict(x)
    assert list(out.columns) == ["psnr", "feature_distance", "point_score"]
    np.testing.assert_allclose(out["psnr"].to_numpy(), direct_psnr(x), rtol=1e-6)
    # the train run lists the logged model among its outputs
    run = mlflow.MlflowClient(registry_env).get_run(run_id)
    assert [m.model_id for m in run.outputs.model_outputs] == [version.model_id]


def test_registered_model_loads_in_a_fresh_process(registered, registry_env) -> None:
    code = (
        "import mlflow, numpy as np\n"
        f"m = mlflow.pyfunc.load_model('models:/{MODEL_NAME}@latest')\n"
        "x = np.zeros((2, 5, 16, 16), np.float32)\n"
        "print(m.predict(x).shape)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry_env}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "(2, 3)"


def test_resolve_model_every_form(registered, store: str, checkpoint: Path) -> None:
    version, run_id = registered
    by_alias = tracking.resolve_model(f"models:/{MODEL_NAME}@latest", store)
    assert (by_alias.name, by_alias.version) == (MODEL_NAME, "1")
    by_version = tracking.resolve_model(f"models:/{MODEL_NAME}/1", store)
    by_id = tracking.resolve_model(f"models:/{version.model_id}", store)
    by_run = tracking.resolve_model(f"runs:/{run_id}/model", store)
    local = tracking.resolve_model(os.fspath(checkpoint), store)
    assert (local.name, local.version, local.checkpoint_dir) == (None, None, str(checkpoint))
    model_dir = Path(by_alias.checkpoint_dir).parents[1]  # a pyfunc model folder on disk
    assert (model_dir / "MLmodel").is_file()
    by_folder = tracking.resolve_model(os.fspath(model_dir), store)
    assert by_id.model_id == by_version.model_id == by_run.model_id == version.model_id
    for resolved in (by_alias, by_version, by_id, by_run, by_folder):
        folder = Path(resolved.checkpoint_dir)
        assert (folder / "config.json").read_text() == (checkpoint / "config.json").read_text()
        assert (folder / "model.pt").read_bytes() == (checkpoint / "model.pt").read_bytes()
        assert not (folder / "training.pt").exists()  # inference weights only


@pytest.mark.parametrize(
    "uri",
    [
        f"models:/{MODEL_NAME}@champion",
        "models:/mnad-nothing/1",
        f"models:/{MODEL_NAME}/99",
        "runs:/0123456789abcdef0123456789abcdef/model",
        "no/such/folder",
    ],
)
def test_resolve_model_bad_uri_is_one_line(registered, store: str, uri: str) -> None:
    with pytest.raises(UserError) as err:
        tracking.resolve_model(uri, store)
    assert str(err.value).startswith(uri) and "\n" not in str(err.value)


def test_link_model_version_records_the_model_as_run_input(registered, store: str) -> None:
    version, _ = registered
    with tracking.start_run(store, "ped2", "score", {"memory": "per-video"}) as run:
        tracking.link_model_version(run, version.name, version.version)
    got = mlflow.MlflowClient(store).get_run(run.run_id)
    assert [m.model_id for m in got.inputs.model_inputs] == [version.model_id]
    assert got.data.tags["mnad.model_uri"] == "models:/mnad-tiny/1"
    assert got.data.tags["mnad.model_version"] == "1"


# ---- mnad ui ------------------------------------------------------------------------------


def test_ui_command_listens_on_loopback_by_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    command = tracking.ui_command(tracking.UiConfig(None, workdir=os.fspath(tmp_path)))
    assert command[1:4] == ["-m", "mlflow", "ui"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--workers") + 1] == "1"
    assert command[command.index("--backend-store-uri") + 1].endswith("mnad-runs/mlflow.db")
    with pytest.raises(UserError, match="port"):
        tracking.UiConfig(None, port=0)
