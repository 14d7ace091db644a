"""pipelines.tracking.registry and .pyfunc against a real MLflow sqlite store (no mocks):
register a checkpoint, find its version without downloading, fetch it, load it as pyfunc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from mnad import anomaly_score as scores
from mnad.network import build_model
from pipelines.errors import UserError
from pipelines.tracking import registry, start_run
from pipelines.tracking.registry import ModelRef, fetch_model, find_model
from tests.tracking.conftest import MODEL_NAME, TINY

pytestmark = pytest.mark.usefixtures("no_global_store")


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


def test_pyfunc_predict_checks_the_clip_layout(registered, registry_env) -> None:
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@latest")
    assert len(loaded.predict(clips(0))) == 0
    python_model = loaded.unwrap_python_model()
    with pytest.raises(ValueError, match=r"clips must be \(n, 5, H, W\)"):
        python_model.predict(None, clips(2)[:, :4])


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


def test_find_and_fetch_model_every_form(registered, store: str, checkpoint: Path) -> None:
    version, run_id = registered
    by_alias = find_model(f"models:/{MODEL_NAME}@latest", store)
    assert (by_alias.name, by_alias.version) == (MODEL_NAME, "1")
    assert by_alias.pinned == "models:/mnad-tiny/1"  # an alias moves; a version does not
    by_version = find_model(f"models:/{MODEL_NAME}/1", store)
    by_id = find_model(f"models:/{version.model_id}", store)
    by_run = find_model(f"runs:/{run_id}/model", store)
    assert by_id.pinned == f"models:/{version.model_id}" and by_run.pinned == by_run.uri
    local = find_model(os.fspath(checkpoint), store)
    assert (local.name, local.version, local.location) == (None, None, str(checkpoint))
    assert fetch_model(local, store) == str(checkpoint)
    fetched = {ref.uri: fetch_model(ref, store) for ref in (by_alias, by_version, by_id, by_run)}
    model_dir = Path(fetched[by_alias.uri]).parents[1]  # a pyfunc model folder on disk
    assert (model_dir / "MLmodel").is_file()
    by_folder = find_model(os.fspath(model_dir), store)
    assert by_folder.location == fetched[by_alias.uri]  # the checkpoint inside, not copied
    fetched[by_folder.uri] = fetch_model(by_folder, store)
    assert by_id.model_id == by_version.model_id == by_run.model_id == version.model_id
    assert len(fetched) == 5
    for folder in map(Path, fetched.values()):
        assert (folder / "config.json").read_text() == (checkpoint / "config.json").read_text()
        assert (folder / "model.pt").read_bytes() == (checkpoint / "model.pt").read_bytes()
        assert not (folder / "training.pt").exists()  # inference weights only


def test_fetch_model_to_a_given_folder(registered, store: str, tmp_path: Path) -> None:
    ref = find_model(f"models:/{MODEL_NAME}/1", store)
    folder = Path(fetch_model(ref, store, dst=tmp_path / "dl"))
    assert folder.is_relative_to(tmp_path / "dl") and (folder / "model.pt").is_file()


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
def test_find_model_bad_uri_is_one_line(registered, store: str, uri: str) -> None:
    with pytest.raises(UserError) as err:
        find_model(uri, store)  # found to be wrong before anything is downloaded
    assert str(err.value).startswith(uri) and "\n" not in str(err.value)


def test_fetch_model_that_is_not_there_is_one_line(registered, store: str) -> None:
    _, run_id = registered
    ref = find_model(f"runs:/{run_id}/no-such-artifact", store)  # the run exists
    assert isinstance(ref, ModelRef) and ref.model_id is None
    with pytest.raises(UserError) as err:
        fetch_model(ref, store)
    assert str(err.value).startswith(ref.uri) and "\n" not in str(err.value)


def test_link_model_version_records_the_model_as_run_input(registered, store: str) -> None:
    version, _ = registered
    with start_run(store, "ped2", "score", {"memory": "per-video"}) as run:
        registry.link_model_version(run, version.name, version.version)
    got = mlflow.MlflowClient(store).get_run(run.run_id)
    assert [m.model_id for m in got.inputs.model_inputs] == [version.model_id]
    assert got.data.tags["mnad.model_uri"] == "models:/mnad-tiny/1"
    assert got.data.tags["mnad.model_version"] == "1"
