"""Calibrated scores through the real stages: a model trained here on normal videos (a few
seconds with the library's own loss), calibrated on them by scoring actors, then an archive
scored. A normal video gets no event at the default false-alarm rate, the video with an
anomaly gets one over it, and a frame's calibrated score does not depend on later frames."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mnad.calibration import DEFAULT_FALSE_ALARM_RATE
from mnad.checkpoint import load_checkpoint, save_checkpoint, write_calibration
from mnad.clips import model_clips, stack_clips
from mnad.config import ModelConfig, OptimConfig, Preset
from mnad.losses import training_losses
from mnad.network import build_model
from pipelines.calibrate import calibrate_videos
from pipelines.data import list_shards, read_frames
from pipelines.score import ScoreConfig, run_score
from tests.conftest import write_tiny_data

pytestmark = pytest.mark.ray

PRESET = Preset(
    "tiny",
    ModelConfig(height=16, width=16, channels=1, width_mult=1 / 16, memory_size=4,
                update_threshold=0.01),
    OptimConfig(),
)  # fmt: skip
NORMAL = {"v0": 40, "v1": 40, "v2": 40}
ANOMALY = range(20, 28)  # frames of b_anomalous turned white


def _data(root: Path, anomalous_frames: int) -> Path:
    """Three normal training videos; test a_normal (the frames of v0) and b_anomalous (those
    of v1, with ANOMALY white and labelled)."""
    test = {"a_normal": 40, "b_anomalous": anomalous_frames}
    data = write_tiny_data(root, {"train": NORMAL, "test": test})
    path = data / "test" / "b_anomalous.parquet"
    table = pq.read_table(path)
    frames = table.column("frame").to_pylist()
    label = np.zeros(table.num_rows, np.int8)
    for i in ANOMALY:
        if i < table.num_rows:
            frames[i], label[i] = b"\xff" * len(frames[i]), 1
    for name, values in (("frame", pa.array(frames, table.schema.field("frame").type)),
                         ("label", pa.array(label))):  # fmt: skip
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), values)
    pq.write_table(table, path)
    return data


def _train(data: Path, folder: Path) -> Path:
    """A checkpoint of a model trained on the normal videos (300 steps of 8 clips)."""
    torch.manual_seed(0)
    cfg = PRESET.model
    clips = []
    for shard in list_shards(str(data), "train"):
        frames = read_frames(shard, 0, NORMAL[shard.rsplit("/", 1)[-1].removesuffix(".parquet")])
        starts = np.arange(len(frames) - cfg.clip_length + 1)
        clips.append(model_clips(stack_clips(frames, starts, cfg.clip_length), cfg))
    inputs = torch.cat([c.inputs for c in clips])
    target = torch.cat([c.target for c in clips])
    model = build_model(cfg, seed=0).train()
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(300):
        batch = torch.randint(0, len(inputs), (8,))
        out = model(inputs[batch])
        loss = training_losses(out.prediction, target[batch], out.compactness,
                               out.separateness, cfg)  # fmt: skip
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    return save_checkpoint(folder, model, PRESET)


@pytest.fixture(scope="module")
def calibrated(ray_local, tmp_path_factory) -> tuple[Path, Path, str]:
    """(DATA, the calibrated checkpoint, the tracking URI)."""
    work = tmp_path_factory.mktemp("calibrated")
    data = _data(work / "data", 40)
    checkpoint = _train(data, work / "model")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    calibration = calibrate_videos(
        str(checkpoint), uri, str(data), sorted(NORMAL), out=str(work / "calibration"),
        alpha=PRESET.model.alpha, quiet=True,
    )  # fmt: skip
    assert calibration.videos == tuple(sorted(NORMAL)) and calibration.frames == 3 * 36
    write_calibration(checkpoint, calibration)
    return data, checkpoint, uri


def _score(data: Path, checkpoint: Path, uri: str, out: Path, **kw):
    config = ScoreConfig(data=str(data), model=str(checkpoint), out=str(out), tracking_uri=uri,
                         batch_size=8, quiet=True, report=False, **kw)  # fmt: skip
    return run_score(config), pq.read_table(out / "frames.parquet")


def test_events_find_the_anomaly_and_spare_the_normal_video(calibrated, tmp_path) -> None:
    data, checkpoint, uri = calibrated
    result, frames = _score(data, checkpoint, uri, tmp_path / "scores")
    assert result.normalise == "calibrated"  # auto: the model has a calibration
    assert result.normalisations == ("calibrated", "per-video")
    threshold = load_checkpoint(checkpoint).calibration.threshold(DEFAULT_FALSE_ALARM_RATE)
    assert result.threshold == pytest.approx(threshold)
    events = pq.read_table(tmp_path / "scores" / "events.parquet").to_pylist()
    assert events and {e["video_id"] for e in events} == {"b_anomalous"}
    top = events[0]
    assert top["rank"] == 1 and top["first_frame"] <= ANOMALY[-1]
    assert top["last_frame"] >= ANOMALY[0] and top["anomalous_frames"] > 0
    assert top["start_s"] is None  # frame folders of unknown frame rate: no times
    m = result.metrics
    assert m["anomalies"] == 1 and m["anomalies_found"] == 1.0 and m["events_on_normal"] == 0
    assert m["calibrated_micro_auc"] > 0.9 and m["micro_auc"] == m["calibrated_micro_auc"]
    assert "per_video_micro_auc" in m and "macro_auc" in m
    # The score written is the calibrated one; both normalisations are in the table.
    assert frames.column("score").to_pylist() == frames.column("score_calibrated").to_pylist()
    assert frames.column("score_per_video").null_count == 0

    summary = (tmp_path / "scores" / "summary.json").read_text()
    for key in ('"normalise": "calibrated"', '"threshold"', '"false_alarm_rate": 0.001',
                '"micro_auc"', '"macro_auc"'):  # fmt: skip
        assert key in summary, key
    # MLflow: the events beside the scores, and the figures as the run's metrics.
    client = mlflow.MlflowClient(uri)
    assert "events.parquet" in [a.path for a in client.list_artifacts(result.run_id)]
    logged = client.get_run(result.run_id).data.metrics
    assert logged["threshold"] == pytest.approx(threshold)
    assert logged["calibrated_micro_auc"] == pytest.approx(m["calibrated_micro_auc"])


def test_a_calibrated_score_reads_no_later_frame(calibrated, tmp_path) -> None:
    data, checkpoint, uri = calibrated
    half = _data(tmp_path / "half", 24)  # b_anomalous cut after frame 23, in its anomaly
    whole = _score(data, checkpoint, uri, tmp_path / "whole", smooth=3)[1]
    cut = _score(half, checkpoint, uri, tmp_path / "cut", smooth=3)[1]

    def video(table: pa.Table, column: str) -> np.ndarray:
        rows = table.filter(pa.compute.equal(table.column("video_id"), "b_anomalous"))
        return rows.column(column).to_numpy()

    n = len(video(cut, "score"))
    assert n == 24 - PRESET.model.clip_length + 1
    np.testing.assert_array_equal(video(cut, "score"), video(whole, "score")[:n])
    # Per-video min-max looks at the whole video: the same frames score differently.
    assert not np.allclose(video(cut, "score_per_video"), video(whole, "score_per_video")[:n])


def test_without_a_calibration_scores_are_per_video_and_calibrated_is_refused(
    calibrated, tmp_path
) -> None:
    from pipelines.errors import UserError

    data, checkpoint, uri = calibrated
    plain = tmp_path / "plain"
    ckpt = load_checkpoint(checkpoint)
    save_checkpoint(plain, ckpt.build_model(), ckpt.preset)
    result, frames = _score(data, plain, uri, tmp_path / "s")
    assert result.normalise == "per-video" and result.threshold is None and result.events is None
    assert frames.column("score_calibrated").null_count == frames.num_rows
    with pytest.raises(UserError, match="no calibration"):
        _score(data, plain, uri, tmp_path / "s2", normalise="calibrated")
