"""The scoring stage on a real local Ray: both memory modes, resume, report, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from mnad.checkpoint import save_checkpoint
from mnad.config import ModelConfig, OptimConfig, Preset
from mnad.network import build_model
from mnad.streaming import StreamingScorer
from pipelines.errors import OptionError, UserError
from pipelines.score import (
    ScoreConfig,
    completion,
    discard,
    read_frames,
    run_score,
    video_inputs,
)
from tests.conftest import write_tiny_data

pytestmark = pytest.mark.ray

PRESET = Preset(
    "tiny",
    ModelConfig(height=16, width=16, channels=1, width_mult=1 / 16, memory_size=4,
                update_threshold=0.5),
    OptimConfig(),
)  # fmt: skip
TEST_VIDEOS = {"t0": 14, "t1": 11, "t2": 3}  # t2 is shorter than one clip (5 frames)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Tiny DATA with labelled test videos: frames 8.. of t0 and 0..4 of t1 are anomalous."""
    root = write_tiny_data(
        tmp_path_factory.mktemp("score_data"), {"train": {"v0": 12}, "test": TEST_VIDEOS}
    )
    for video, anomalous in {"t0": range(8, 14), "t1": range(0, 5)}.items():
        path = root / "test" / f"{video}.parquet"
        table = pq.read_table(path)
        label = np.zeros(table.num_rows, np.int8)
        label[list(anomalous)] = 1
        i = table.schema.get_field_index("label")
        table = table.set_column(i, table.schema.field(i), pa.array(label))
        pq.write_table(table, path)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(
        tmp_path_factory.mktemp("ck") / "ck", build_model(PRESET.model, seed=0), PRESET
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One MLflow store for the module: creating a sqlite store costs seconds."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="module")
def scored(ray_local, data, checkpoint, store, tmp_path_factory):
    """Scores of both memory modes, computed once: mode -> (out folder, result, frames)."""
    runs = {}
    for memory in ("per-video", "paper"):
        out = tmp_path_factory.mktemp("scores") / memory
        runs[memory] = (out, *_score(data, checkpoint, out, store, memory=memory))
    return runs


def _score(data, checkpoint, out, store, **kw) -> tuple:
    config = ScoreConfig(
        data=str(data),
        model=str(checkpoint),
        out=str(out),
        tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
        batch_size=4,
        quiet=True,
        **kw,
    )
    return run_score(config), read_frames(str(out))


def _expected(checkpoint_model, data, reset_per_video: bool) -> dict[str, np.ndarray]:
    """PSNR per video from the model library alone, scoring clips in sorted video order."""
    scorer = StreamingScorer(checkpoint_model)
    out = {}
    for video in sorted(v for v in TEST_VIDEOS if TEST_VIDEOS[v] >= 5):
        if reset_per_video:
            scorer.reset()
        psnr = [
            scorer.score(clip.inputs, clip.target).psnr
            for _, clip in video_inputs(str(data / "test" / f"{video}.parquet"),
                                        PRESET.model, 100)
        ]  # fmt: skip
        out[video] = np.concatenate(psnr)
    return out


@pytest.mark.parametrize("memory", ["per-video", "paper"])
def test_scores_every_frame_and_matches_the_library(scored, data, memory):
    out, result, frames = scored[memory]
    # One row per scored frame: the first 4 frames of each video have no prediction.
    assert frames.num_rows == (14 - 4) + (11 - 4)
    assert frames.column_names[:3] == ["dataset", "video_id", "frame_index"]
    t0 = frames.filter(pc.equal(frames["video_id"], "t0"))
    assert t0["frame_index"].to_pylist() == list(range(4, 14))
    assert t0["label"].to_pylist() == [0] * 4 + [1] * 6
    model = build_model(PRESET.model, seed=0).eval()
    expected = _expected(model, data, reset_per_video=memory == "per-video")
    for video, psnr in expected.items():
        got = frames.filter(pc.equal(frames["video_id"], video))["psnr"].to_numpy()
        np.testing.assert_allclose(got, psnr, rtol=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == frames.num_rows and summary["videos"] == 2
    assert 0.0 <= summary["micro_auc"] <= 1.0 and "macro_auc" in summary and "eer" in summary
    assert len(summary["skipped"]) == 1 and "t2" in summary["skipped"][0]
    assert (out / "report" / "index.html").is_file() and (out / "report" / "roc.png").is_file()
    assert result.run_id


def test_updates_happen_and_paper_mode_carries_memory(scored):
    per_video, paper = scored["per-video"][2], scored["paper"][2]
    assert paper["memory_updated"].to_numpy().any()
    t0 = pc.equal(per_video["video_id"], "t0")
    # The first video is scored from the trained memory in both modes; the second is not:
    # its distances to the memory items differ.
    column = "feature_distance"
    np.testing.assert_allclose(per_video.filter(t0)[column].to_numpy(),
                               paper.filter(t0)[column].to_numpy(), rtol=1e-6)  # fmt: skip
    t1 = pc.equal(per_video["video_id"], "t1")
    assert not np.allclose(per_video.filter(t1)[column].to_numpy(),
                           paper.filter(t1)[column].to_numpy(), rtol=1e-3)  # fmt: skip


@pytest.mark.parametrize("memory", ["per-video", "paper"])
def test_an_interrupted_job_rerun_gives_the_same_output(scored, data, checkpoint, store,
                                                        tmp_path, memory):  # fmt: skip
    done, _, full = scored[memory]
    out = tmp_path / "scores"
    shutil.copytree(done, out)
    # Interrupted after the first video: only its part file was written.
    (out / "frames" / "t1.parquet").unlink()
    (out / "summary.json").unlink()
    _, again = _score(data, checkpoint, out, store, memory=memory, report=False)
    for name in full.column_names:
        assert again[name].equals(full[name]), (name, again[name], full[name])
    keys = list(zip(again["video_id"].to_pylist(), again["frame_index"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys))


def test_bad_inputs_are_one_line_errors(ray_local, data, checkpoint, store, tmp_path):
    with pytest.raises(UserError, match="models:/nope@champion"):
        _score(data, "models:/nope@champion", tmp_path / "s", store)
    no_test = tmp_path / "no_test"
    shutil.copytree(data, no_test)
    write_tiny_data(no_test, {"train": {"v0": 12}})
    with pytest.raises(UserError, match="test"):
        _score(no_test, checkpoint, tmp_path / "s", store)
    with pytest.raises(UserError, match="--gpus-per-actor 1: the Ray cluster has 0 GPUs"):
        _score(data, checkpoint, tmp_path / "s", store, gpus_per_actor=1)
    assert not (tmp_path / "s").exists()
    with pytest.raises(OptionError, match="--batch-size") as err:
        ScoreConfig(data=str(data), model="x", out="y", batch_size=0)
    assert err.value.field == "batch_size"
    with pytest.raises(OptionError, match="--precision must be 'fp32' or 'bf16', not 'fp8'") as err:
        ScoreConfig(data=str(data), model="x", out="y", precision="fp8")  # type: ignore[arg-type]
    assert err.value.field == "precision"


def test_video_inputs_equal_sliding_windows(data):
    shard = str(data / "test" / "t0.parquet")
    frames = torch.from_numpy(
        np.stack([np.frombuffer(b, np.uint8).reshape(16, 16)
                  for b in pq.read_table(shard)["frame"].to_pylist()])
    ).float() / 127.5 - 1  # fmt: skip
    got = list(video_inputs(shard, PRESET.model, batch=3))
    index = np.concatenate([clips.frame_index for clips, _ in got])
    inputs = torch.cat([clip.inputs for _, clip in got])
    targets = torch.cat([clip.target for _, clip in got])
    assert index.tolist() == list(range(4, 14))
    for k, f in enumerate(index):
        torch.testing.assert_close(inputs[k], frames[f - 4 : f])
        torch.testing.assert_close(targets[k, 0], frames[f])


def test_completion_reads_the_result_back(scored, data, checkpoint, store, tmp_path):
    out, result, frames = scored["per-video"]
    config = ScoreConfig(data=str(data), model=str(checkpoint), out=str(out), quiet=True)
    done = completion(config)
    assert done.complete and not done.partial
    assert done.reason == f"{out} holds the scores of {checkpoint}"
    assert done.result == result
    assert (result.model, result.memory, result.split) == (str(checkpoint), "per-video", "test")
    assert result.frames == frames.num_rows and result.videos == 2 and result.exit_status == 0
    assert result.report == f"{out}/report/index.html" and result.run_id
    assert type(result).from_json(result.to_json()) == result
    # The same folder for another mode: stale, to be discarded rather than continued.
    stale = completion(ScoreConfig(data=str(data), model=str(checkpoint), out=str(out),
                                   memory="paper"))  # fmt: skip
    assert not stale.complete and not stale.partial and "not of" in stale.reason

    copy = tmp_path / "scores"
    shutil.copytree(out, copy)
    again = ScoreConfig(data=str(data), model=str(checkpoint), out=str(copy))
    (copy / "summary.json").unlink()
    partial = completion(again)
    assert not partial.complete and partial.partial and "2 videos" in partial.reason
    discard(again)
    assert not copy.exists()
    missing = completion(again)
    assert not missing.complete and not missing.partial and "no summary.json" in missing.reason
