"""Scoring actors fetch the model themselves: what the driver hands them is the model's
``ModelRef`` and the tracking URI, never a folder on the driver's disk.

The actor here is a fresh Python process (this file run as a script) with its own TMPDIR and
working folder: it gets the pickled constructor arguments the driver builds, makes the
``VideoScorer`` from them, scores a video and writes its part file. Its scores must equal
the model library's on the same clips, and the copy it fetched must be gone afterwards.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mnad.checkpoint import save_checkpoint
from mnad.config import ModelConfig, OptimConfig, Preset
from mnad.network import build_model
from mnad.streaming import StreamingScorer
from pipelines import tracking
from pipelines.score import ScoreConfig, video_inputs
from pipelines.score.driver import ActorPlan, _scorer_kwargs
from tests.conftest import write_tiny_data

ROOT = Path(__file__).resolve().parents[2]
PRESET = Preset(
    "tiny",
    ModelConfig(height=16, width=16, channels=1, width_mult=1 / 16, memory_size=4),
    OptimConfig(),
)


def _strings(value: object) -> list[str]:
    """Every string inside the constructor arguments (dataclass fields included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [s for name in value.__dataclass_fields__ for s in _strings(getattr(value, name))]
    return []


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[str, str, Path]:
    """(tracking URI, models:/ URI, the checkpoint folder it was registered from)."""
    work = tmp_path_factory.mktemp("store")
    uri = tracking.resolve_tracking_uri(None, base=work)
    checkpoint = save_checkpoint(work / "ck", build_model(PRESET.model, seed=0), PRESET)
    with tracking.start_run(uri, "tiny", "train", {"preset": "tiny"}) as run:
        version = tracking.register_checkpoint(run, os.fspath(checkpoint), "mnad-tiny")
    return uri, version.uri, checkpoint


def test_an_actor_in_another_process_fetches_the_registered_model(registered, tmp_path):
    uri, model_uri, checkpoint = registered
    data = write_tiny_data(tmp_path / "data", {"test": {"t0": 12}})
    ref = tracking.find_model(model_uri, uri)
    config = ScoreConfig(data=str(data), model=model_uri, out=str(tmp_path / "s"))
    kwargs = _scorer_kwargs(config, ref, uri, "tiny", ActorPlan(1, 1, 0.0))
    assert kwargs["model"] == ref and kwargs["tracking_uri"] == uri
    assert "checkpoint_dir" not in kwargs
    driver_side = (str(checkpoint), str(tmp_path))
    assert not [s for s in _strings(kwargs) if s.startswith(driver_side)], kwargs

    actor_tmp, actor_cwd = tmp_path / "actor-tmp", tmp_path / "actor-cwd"
    actor_tmp.mkdir()
    actor_cwd.mkdir()
    (tmp_path / "kwargs.pkl").write_bytes(pickle.dumps(kwargs))
    part = tmp_path / "part.parquet"
    env = {**os.environ, "TMPDIR": str(actor_tmp), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)  # the URI travels in the arguments, not the env
    shard = data / "test" / "t0.parquet"
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path / "kwargs.pkl"), str(shard), str(part)],
        cwd=actor_cwd, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok 8"  # frames 4..11 of 12
    assert list(actor_tmp.iterdir()) == []  # the fetched copy is gone once loaded
    assert list(actor_cwd.iterdir()) == []  # and no MLflow default store appeared

    scorer = StreamingScorer(build_model(PRESET.model, seed=0).eval())
    clips = [c for _, c in video_inputs(str(shard), PRESET.model, 4)]
    expected = np.concatenate([scorer.score(c.inputs, c.target).psnr for c in clips])
    np.testing.assert_allclose(pq.read_table(part)["psnr"].to_numpy(), expected, rtol=1e-5)


if __name__ == "__main__":
    from pipelines.score import VideoScorer, VideoTask

    actor = VideoScorer(**pickle.loads(Path(sys.argv[1]).read_bytes()))
    outcome = actor.score_video(VideoTask("t0", sys.argv[2], sys.argv[3]))
    print(outcome.status, outcome.frames, outcome.error)
