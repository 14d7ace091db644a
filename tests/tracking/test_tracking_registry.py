"""pipelines.tracking.registry and .pyfunc against a real MLflow sqlite store (no mocks):
register a checkpoint, find its version without downloading, fetch it, load it as pyfunc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mnad.anomaly_score import fused_abnormality
from mnad.clips import model_clips, stack_clips
from mnad.network import build_model
from mnad.streaming import FrameScores, StreamingScorer
from pipelines.errors import UserError
from pipelines.tracking import registry, start_run
from pipelines.tracking.pyfunc import PREDICT_COLUMNS
from pipelines.tracking.registry import ModelRef, fetch_model, find_model
from tests.tracking.conftest import MODEL_NAME, TINY

pytestmark = pytest.mark.usefixtures("no_global_store")


def frames(n: int, seed: int = 1) -> np.ndarray:
    """n random grey frames of the tiny config, as a video's shard holds them: uint8
    (n, 16, 16, 1)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, TINY.height, TINY.width, 1), dtype=np.uint8)


def direct_scores(x: np.ndarray) -> FrameScores:
    """The frames' scores computed by mnad directly, without MLflow: the untrained model
    (no BatchNorm folding), its clips in order with the test-time memory update."""
    scorer = StreamingScorer(build_model(TINY, seed=0).eval())
    starts = np.arange(len(x) - TINY.clip_length + 1)
    clip = model_clips(stack_clips(x, starts, TINY.clip_length), TINY)
    return scorer.score(clip.inputs, clip.target)


def test_registered_model_loads_and_predicts_like_mnad(registered, registry_env) -> None:
    version, run_id = registered
    assert (version.name, version.version, version.uri) == (MODEL_NAME, "1", "models:/mnad-tiny/1")
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@latest")
    x = frames(9)
    out = loaded.predict(x)
    assert tuple(out.columns) == PREDICT_COLUMNS
    assert out["frame_index"].tolist() == [4, 5, 6, 7, 8]  # the first T - 1 frames: no clip
    expected = direct_scores(x)
    np.testing.assert_allclose(out["psnr"].to_numpy(), expected.psnr, rtol=1e-6)
    np.testing.assert_allclose(out["feature_distance"], expected.feature_distance, rtol=1e-5)
    assert out["memory_updated"].tolist() == expected.updated.tolist()
    fused = fused_abnormality(expected.psnr, expected.feature_distance, TINY.alpha)
    np.testing.assert_allclose(out["score_per_video"].to_numpy(), fused, atol=1e-6)
    # no calibration: no calibrated score and no alarm
    assert out["score_calibrated"].isna().all() and out["alarm"].isna().all()
    # the train run lists the logged model among its outputs
    run = mlflow.MlflowClient(registry_env).get_run(run_id)
    assert [m.model_id for m in run.outputs.model_outputs] == [version.model_id]


def test_pyfunc_predict_checks_the_frames(registered, registry_env) -> None:
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@latest")
    assert len(loaded.predict(frames(0))) == 0
    assert len(loaded.predict(frames(TINY.clip_length - 1))) == 0  # too short for one clip
    with pytest.raises(MlflowException, match="does not match expected"):
        loaded.predict(frames(6).astype(np.float32))  # the signature: uint8 only
    python_model = loaded.unwrap_python_model()
    with pytest.raises(MlflowException, match=r"frames must be \(n, 16, 16, C\)"):
        python_model.predict(None, frames(6)[:, :8])
    with pytest.raises(MlflowException, match=r"C = 3 \(RGB\) or 1 \(grey\); got uint8 with C = 2"):
        python_model.predict(None, np.repeat(frames(6), 2, axis=3))
    # RGB frames of grey pixels are these grey frames to the grey model (luma, as scoring)
    grey = loaded.predict(frames(6))
    pd.testing.assert_frame_equal(loaded.predict(np.repeat(frames(6), 3, axis=3)), grey)


def test_registered_model_loads_in_a_fresh_process(registered, registry_env) -> None:
    code = (
        "import mlflow, numpy as np\n"
        f"m = mlflow.pyfunc.load_model('models:/{MODEL_NAME}@latest')\n"
        "x = np.zeros((6, 16, 16, 1), np.uint8)\n"
        "print(m.predict(x).shape)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry_env}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"(2, {len(PREDICT_COLUMNS)})"


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
