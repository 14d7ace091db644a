"""Calibrated scores through the real stages: a model trained here on normal videos (a few
seconds with the library's own loss), calibrated on them by scoring actors, then an archive
scored. A normal video gets no event at the default false-alarm rate, the video with an
anomaly gets one over it, and a frame's calibrated score does not depend on later frames."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mnad.calibration import DEFAULT_FALSE_ALARM_RATE, smooth
from mnad.checkpoint import load_checkpoint, save_checkpoint
from pipelines.score import ScoreConfig, read_frames, run_score
from tests.tiny_models import ANOMALY, PRESET, calibrated_checkpoint, labelled_data

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def calibrated(ray_local, tmp_path_factory) -> tuple[Path, Path, str]:
    """(DATA, the calibrated checkpoint, the tracking URI)."""
    work = tmp_path_factory.mktemp("calibrated")
    data = labelled_data(work / "data")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    checkpoint = calibrated_checkpoint(data, work, uri)
    assert load_checkpoint(checkpoint).calibration.frames == 3 * 36
    return data, checkpoint, uri


def _score(data: Path, checkpoint: Path, uri: str, out: Path, **kw):
    config = ScoreConfig(data=str(data), model=str(checkpoint), out=str(out), tracking_uri=uri,
                         batch_size=8, quiet=True, report=False, **kw)  # fmt: skip
    return run_score(config), read_frames(str(out))


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
    half = labelled_data(tmp_path / "half", 24)  # b_anomalous cut after frame 23, in its anomaly
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


def test_scores_stay_a_dataset_and_a_rerun_with_other_smoothing_rewrites_them(
    calibrated, tmp_path
) -> None:
    import pyarrow.dataset as pads

    data, checkpoint, uri = calibrated
    out = tmp_path / "scores"
    config = ScoreConfig(data=str(data), model=str(checkpoint), out=str(out), tracking_uri=uri,
                         batch_size=8, quiet=True)  # fmt: skip
    result = run_score(config)
    # One file per video, written by the actors: a Parquet dataset, no combined copy.
    assert not (out / "frames.parquet").exists()
    files = sorted(p.name for p in (out / "frames").iterdir())
    assert files == ["a_normal.parquet", "b_anomalous.parquet"]
    dataset = pads.dataset(out / "frames", format="parquet")
    assert dataset.count_rows() == result.frames
    assert result.scores == str(out / "frames")
    # The report's pictures of the top events were rendered off the driver, one per event.
    events = pq.read_table(out / "events.parquet")
    pictures = sorted((out / "report" / "events").glob("*.png"))
    assert len(pictures) == min(events.num_rows, 20) > 0
    # MLflow: where the scores are, not a copy of them.
    run = mlflow.MlflowClient(uri).get_run(result.run_id)
    assert run.data.tags["mnad.scores_uri"] == str(out / "frames")
    logged = [a.path for a in mlflow.MlflowClient(uri).list_artifacts(result.run_id)]
    assert "frames.parquet" not in logged and {"events.parquet", "report"} <= set(logged)

    # Rerun with smoothing: the videos are not scored again, their ``score`` is rewritten.
    again = run_score(dataclasses.replace(config, smooth=3, report=False))
    frames = read_frames(str(out))
    for video in ("a_normal", "b_anomalous"):
        rows = frames.filter(pa.compute.equal(frames.column("video_id"), video))
        raw = rows.column("score_calibrated").to_numpy()
        np.testing.assert_allclose(rows.column("score").to_numpy(), smooth(raw, 3))
        meta = pq.read_schema(out / "frames" / f"{video}.parquet").metadata
        assert meta[b"mnad.score"] == b"calibrated/3"
    assert again.frames == result.frames and again.metrics["frames_per_s"] == 0.0
    assert again.metrics["micro_auc"] == again.metrics["calibrated_smoothed_micro_auc"]


def test_the_smoothing_is_the_models_unless_asked(calibrated, tmp_path) -> None:
    from mnad.checkpoint import write_calibration

    data, checkpoint, uri = calibrated
    ckpt = load_checkpoint(checkpoint)
    smoothing = tmp_path / "smoothing-model"  # the same weights, a preset that smooths 3
    save_checkpoint(smoothing, ckpt.build_model(), ckpt.preset.replace(smooth=3))
    write_calibration(smoothing, ckpt.calibration)
    result, frames = _score(data, smoothing, uri, tmp_path / "default")
    assert result.smooth == 3
    for video in ("a_normal", "b_anomalous"):
        rows = frames.filter(pa.compute.equal(frames.column("video_id"), video))
        raw = rows.column("score_calibrated").to_numpy()
        np.testing.assert_allclose(rows.column("score").to_numpy(), smooth(raw, 3))
    assert result.metrics["micro_auc"] == result.metrics["calibrated_smoothed_micro_auc"]
    asked, frames = _score(data, smoothing, uri, tmp_path / "asked", smooth=1)
    assert asked.smooth == 1
    assert frames.column("score").to_pylist() == frames.column("score_calibrated").to_pylist()
