"""The scoring actor in per-video mode: several videos per call, scored in lockstep, each
with the outcome and part file it gets when scored alone; a video that cannot be read fails
alone, a part already written is taken as it is."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from mnad.checkpoint import save_checkpoint
from mnad.config import ModelConfig, OptimConfig, Preset, get_preset
from mnad.network import build_model
from pipelines.score.actor import (
    FAILED,
    LOCKSTEP_AHEAD,
    LOCKSTEP_BUFFER_BYTES,
    LOCKSTEP_SLOTS,
    OK,
    RESUMED,
    TOO_SHORT,
    VideoScorer,
    lockstep_ahead,
)
from pipelines.tracking import find_model
from tests.conftest import write_tiny_data

PRESET = Preset(
    "tiny-updating",
    ModelConfig(height=16, width=16, channels=1, width_mult=1 / 16, memory_size=4,
                update_threshold=1.0),  # every frame updates the memory
    OptimConfig(),
)  # fmt: skip
VIDEOS = {"a": 20, "b": 9, "bad": 12, "c": 15, "short": 3}


def _batch(data, parts, names):
    return {
        "video_id": np.array(names),
        "shard": np.array([str(data / "test" / f"{n}.parquet") for n in names]),
        "part": np.array([str(parts / f"{n}.parquet") for n in names]),
    }


def test_a_call_scores_its_videos_together_as_alone(tmp_path):
    data = write_tiny_data(tmp_path / "data", {"train": {"v0": 12}, "test": VIDEOS})
    (data / "test" / "bad.parquet").write_bytes(b"not parquet at all")
    checkpoint = save_checkpoint(tmp_path / "ck", build_model(PRESET.model, seed=0), PRESET)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ref = find_model(str(checkpoint), uri)
    kwargs = dict(model=ref, tracking_uri=uri, dataset="tiny", reset_per_video=True,
                  granularity="frame", batch_size=4)  # fmt: skip
    together, alone = VideoScorer(**kwargs), VideoScorer(**kwargs)
    assert together.lockstep is not None
    alone.lockstep = None  # one video at a time through StreamingScorer
    names = list(VIDEOS)
    got = together(_batch(data, tmp_path / "together", names))
    ref_out = alone(_batch(data, tmp_path / "alone", names))
    assert list(got["video_id"]) == names
    assert list(got["status"]) == [OK, OK, FAILED, OK, TOO_SHORT]
    assert list(got["status"]) == list(ref_out["status"])
    assert list(got["frames"]) == list(ref_out["frames"]) == [16, 5, 0, 11, 0]
    assert "bad.parquet" in got["error"][2]
    for name in ("a", "b", "c"):
        mine = pq.read_table(tmp_path / "together" / f"{name}.parquet")
        theirs = pq.read_table(tmp_path / "alone" / f"{name}.parquet")
        assert mine.schema == theirs.schema
        assert mine.column("memory_updated").to_pylist() == [True] * mine.num_rows
        for column in ("frame_index", "label", "memory_updated"):
            assert mine.column(column).equals(theirs.column(column))
        for column in ("psnr", "feature_distance", "point_score"):
            np.testing.assert_allclose(mine.column(column).to_numpy(),
                                       theirs.column(column).to_numpy(), rtol=1e-5)  # fmt: skip
        # min-max over the video magnifies float rounding near the minimum
        np.testing.assert_allclose(mine.column("score").to_numpy(),
                                   theirs.column("score").to_numpy(), atol=1e-4)  # fmt: skip
    assert not (tmp_path / "together" / "bad.parquet").exists()

    (tmp_path / "together" / "a.parquet").unlink()  # as if the job was stopped before a
    again = together(_batch(data, tmp_path / "together", names))
    assert list(again["status"]) == [OK, RESUMED, FAILED, RESUMED, TOO_SHORT]
    redone = pq.read_table(tmp_path / "together" / "a.parquet")
    np.testing.assert_allclose(redone.column("psnr").to_numpy(),
                               pq.read_table(tmp_path / "alone" / "a.parquet")
                               .column("psnr").to_numpy(), rtol=1e-5)  # fmt: skip


def test_the_clips_buffered_ahead_fit_the_devices_budget():
    small, paper = get_preset("small").model, get_preset("paper-pred").model
    assert lockstep_ahead("cpu", small, 32) == LOCKSTEP_AHEAD["cpu"]
    assert lockstep_ahead("cpu", small, 4) == 4  # never more than a batch
    assert lockstep_ahead("cuda:0", paper, 32) == LOCKSTEP_AHEAD["cuda"]
    ahead = lockstep_ahead("cpu", paper, 32)  # 256x256x3: 3.9 MB a clip and its target
    clip = 4 * 3 * 256 * 256 * (paper.input_frames + 1)
    assert 1 <= ahead < LOCKSTEP_AHEAD["cpu"]
    assert LOCKSTEP_SLOTS["cpu"] * ahead * clip <= LOCKSTEP_BUFFER_BYTES["cpu"]
    assert LOCKSTEP_SLOTS["cpu"] * (ahead + 1) * clip > LOCKSTEP_BUFFER_BYTES["cpu"]
