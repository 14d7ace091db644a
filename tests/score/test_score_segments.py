"""Long videos scored as segments (``--segment-seconds``): a segment's clips are exactly those
of its frames, the segments of a video are joined into its one file with its per-video score
over the whole video, and every frame that scoring the video whole scores is scored once. In
calibrated mode only: per-video normalisation keeps videos whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mnad.calibration import smooth
from mnad.video import normalised_scores
from pipelines.data import video_clips
from pipelines.score import ScoreConfig, VideoTask, read_frames, run_score
from pipelines.score.segments import segment_count, split_task
from tests.conftest import write_tiny_data
from tests.tiny_models import PRESET, TEST, calibrated_checkpoint, labelled_data

FPS = 10.0  # the tiny videos' 40 frames are 4 s: at --segment-seconds 1, 4 segments each
T = PRESET.model.clip_length


def test_segments_cut_a_video_into_equal_frame_counts() -> None:
    assert segment_count(40, FPS, 1.0, T) == 4
    assert segment_count(40, FPS, 4.0, T) == 1  # not longer than the segments
    assert segment_count(40, None, 1.0, T) == 1  # no frame rate: whole
    assert segment_count(40, FPS, 0.0, T) == 1  # 0: never
    assert segment_count(40, 1000.0, 0.001, T) == 40 // T  # every segment holds a clip
    task = VideoTask("v", "shard", "out/frames/v.parquet")
    tasks = split_task(task, 3, 40)
    assert [(t.first, t.stop) for t in tasks] == [(0, 13), (13, 27), (27, None)]
    assert tasks[1].part == "out/frames/.v.segment-00001-of-00003.parquet"
    assert all(t.segment for t in tasks) and not task.segment
    assert split_task(task, 1, 40) == [task]


@pytest.mark.parametrize("row_group_frames", [8, 100])
def test_a_segments_clips_are_the_whole_videos_clips_of_its_frames(
    tmp_path, row_group_frames
) -> None:
    data = write_tiny_data(tmp_path, {"test": {"v": 40}}, row_group_frames=row_group_frames)
    shard = str(data / "test" / "v.parquet")
    whole = list(video_clips(shard, T, chunk_frames=3))
    index = np.concatenate([c.frame_index for c in whole])
    clips = np.concatenate([c.clips for c in whole])
    got_index, got_clips = [], []
    for first, stop in [(0, 10), (10, 11), (11, 30), (30, None)]:
        batches = list(video_clips(shard, T, chunk_frames=3, first=first, stop=stop))
        seg = np.concatenate([c.frame_index for c in batches])
        assert seg[0] == max(first, T - 1) and seg[-1] == (stop or 40) - 1
        got_index.append(seg)
        got_clips.append(np.concatenate([c.clips for c in batches]))
    np.testing.assert_array_equal(np.concatenate(got_index), index)
    np.testing.assert_array_equal(np.concatenate(got_clips), clips)
    assert list(video_clips(shard, T, first=40)) == []  # past the video's end


@pytest.fixture(scope="module")
def calibrated(ray_local, tmp_path_factory) -> tuple[Path, Path, str]:
    """(DATA with a frame rate, the calibrated checkpoint, the tracking URI)."""
    work = tmp_path_factory.mktemp("segments")
    data = labelled_data(work / "data")
    manifest = pq.read_table(data / "manifest.parquet")
    at = manifest.schema.get_field_index("fps")
    fps = pa.array([FPS] * manifest.num_rows, pa.float64())
    pq.write_table(manifest.set_column(at, manifest.schema.field(at), fps),
                   data / "manifest.parquet")  # fmt: skip
    uri = f"sqlite:///{work / 'mlflow.db'}"
    return data, calibrated_checkpoint(data, work, uri), uri


def _score(calibrated, out: Path, **kw):
    data, checkpoint, uri = calibrated
    config = ScoreConfig(data=str(data), model=str(checkpoint), out=str(out), tracking_uri=uri,
                         batch_size=8, report=False, smooth=3, **kw)  # fmt: skip
    return run_score(config), read_frames(str(out))


def _video(table: pa.Table, video_id: str) -> pa.Table:
    return table.filter(pc.equal(table.column("video_id"), video_id))


def test_segments_score_every_frame_once_and_join_into_each_video(
    calibrated, tmp_path, capsys
) -> None:
    whole_result, whole = _score(calibrated, tmp_path / "whole", quiet=True)
    result, frames = _score(calibrated, tmp_path / "segments", segment_seconds=1.0)
    said = [line for line in capsys.readouterr().out.splitlines() if "--segment-seconds" in line]
    assert len(said) == 1 and "2 video(s) scored as 8 segments" in said[0]
    assert "memory reset at each segment's start" in said[0]
    assert result.segments == 2 * 4 and whole_result.segments == 0
    summary = (tmp_path / "segments" / "summary.json").read_text()
    assert '"segments": 8' in summary and '"segment_seconds": 1.0' in summary
    # One file per video, no segment part left.
    files = sorted(p.name for p in (tmp_path / "segments" / "frames").iterdir())
    assert files == [f"{v}.parquet" for v in sorted(TEST)]
    alpha = PRESET.model.alpha
    for video_id in TEST:
        w, s = _video(whole, video_id), _video(frames, video_id)
        index = s.column("frame_index").to_numpy()
        np.testing.assert_array_equal(index, w.column("frame_index").to_numpy())
        assert len(np.unique(index)) == len(index) == 40 - T + 1
        for column in ("psnr", "feature_distance", "score_calibrated", "score_per_video"):
            assert np.isfinite(s.column(column).to_numpy()).all(), column
        # The first segment is the whole video's start: the same memory, the same scores.
        head = index < 10
        for column in ("psnr", "score_calibrated"):
            np.testing.assert_allclose(s.column(column).to_numpy()[head],
                                       w.column(column).to_numpy()[head],
                                       rtol=1e-5, atol=1e-5)  # fmt: skip
        # The per-video score is over the joined video, as over the whole one.
        for table in (w, s):
            psnr, dist = table.column("psnr").to_numpy(), table.column("feature_distance")
            expected = normalised_scores(psnr, dist.to_numpy(), alpha, None).per_video
            np.testing.assert_allclose(table.column("score_per_video").to_numpy(), expected)
        # ``score``: the calibrated one, smoothed across the segments' boundaries.
        raw = s.column("score_calibrated").to_numpy()
        np.testing.assert_allclose(s.column("score").to_numpy(), smooth(raw, 3))
        meta = pq.read_schema(tmp_path / "segments" / "frames" / f"{video_id}.parquet").metadata
        assert meta[b"mnad.score"] == b"calibrated/3"
    assert result.frames == whole_result.frames
    assert result.events is not None and (tmp_path / "segments" / "events.parquet").is_file()

    # Run again: each video's joined file is there, so it is done; nothing is rescored. A
    # part of another cut, left by an interrupted run with another --segment-seconds, goes.
    stray = tmp_path / "segments" / "frames" / f".{sorted(TEST)[0]}.segment-00001-of-00007.parquet"
    stray.write_bytes(b"left by an earlier run")
    again, frames_again = _score(calibrated, tmp_path / "segments", segment_seconds=1.0)
    assert again.segments == 0 and again.metrics["frames_per_s"] == 0.0
    assert frames_again.equals(frames)
    assert not stray.exists()


def test_per_video_normalisation_keeps_videos_whole(calibrated, tmp_path, capsys) -> None:
    result, frames = _score(calibrated, tmp_path / "s", segment_seconds=1.0,
                            normalise="per-video")  # fmt: skip
    said = [line for line in capsys.readouterr().out.splitlines() if "--segment-seconds" in line]
    assert len(said) == 1 and "videos are scored whole" in said[0]
    assert "per-video normalisation" in said[0]
    assert result.segments == 0 and result.segment_seconds == 1.0
    assert frames.num_rows == len(TEST) * (40 - T + 1)
