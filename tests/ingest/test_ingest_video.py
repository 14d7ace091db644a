"""One video's task (pipelines.ingest.video) without Ray: atomic shards, remote copies, the
clock of skipped videos."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipelines.ingest.decode import DecodeSettings
from pipelines.ingest.labels import FrameLabels, LabelError
from pipelines.ingest.layouts import VideoSource
from pipelines.ingest.video import IngestPlan, ingest_video, local_copy, write_shard


def _plan(source: Path, out: Path, **kwargs) -> IngestPlan:
    decode = DecodeSettings(imageio_ffmpeg.get_ffmpeg_exe(), size=(16, 16))
    return IngestPlan(str(source), str(out), "d", decode, row_group_bytes=4 * 256, **kwargs)


class _Interrupt(FrameLabels):
    """Labels that stop the run (as Ctrl-C would) when the third chunk is written."""

    def chunk(self, start: int, n: int) -> np.ndarray:
        if start >= 8:
            raise KeyboardInterrupt
        return super().chunk(start, n)


def test_interrupted_write_leaves_no_shard(tmp_path: Path, media) -> None:
    video = VideoSource("test", "v", str(media.video(tmp_path / "src/v.avi", 30)))
    (tmp_path / "out/test").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        write_shard(video, video, _Interrupt("", fill=0), _plan(tmp_path / "src", tmp_path / "out"))
    assert list((tmp_path / "out/test").iterdir()) == []
    written = write_shard(
        video, video, FrameLabels.constant(0), _plan(tmp_path / "src", tmp_path / "out")
    )
    assert written.frames == 30 and (written.fps, written.start_s) == (25.0, 0.0)
    assert pq.ParquetFile(tmp_path / "out/test/v.parquet").num_row_groups == 8


def test_labels_that_disagree_leave_no_shard(tmp_path: Path, media) -> None:
    video = VideoSource("test", "v", str(media.video(tmp_path / "src/v.avi", 6)))
    labels = FrameLabels("gt.m", ranges=((1, 9),), fill=0)
    with pytest.raises(LabelError, match=r"gt.m: range \[1:9\] is outside frames 1..6"):
        write_shard(video, video, labels, _plan(tmp_path / "src", tmp_path / "out"))
    assert list((tmp_path / "out/test").iterdir()) == []


def test_remote_sources_are_copied_and_hashed_like_local_ones(tmp_path: Path, media) -> None:
    names = ["0.jpg", "1.jpg", "2.jpg"]
    frames = tuple(str(p) for p in media.frames(tmp_path / "f", names))
    video = VideoSource("train", "f", str(tmp_path / "f"), frames)
    remote = pafs.SubTreeFileSystem("/", pafs.LocalFileSystem())  # not a LocalFileSystem
    with local_copy(video, pafs.LocalFileSystem()) as (same, local_hash):
        assert same == video
    with local_copy(video, remote) as (copy, remote_hash):
        assert copy.frames != video.frames and len(copy.frames) == 3
        assert [Path(p).read_bytes() for p in copy.frames] == [Path(p).read_bytes() for p in frames]
    assert remote_hash == local_hash and not Path(copy.path).exists()
    (tmp_path / "f/1.jpg").write_bytes((tmp_path / "f/2.jpg").read_bytes())
    with local_copy(video, pafs.LocalFileSystem()) as (_, changed):
        assert changed != local_hash


def test_skipped_videos_keep_their_clock_or_null(tmp_path: Path, media) -> None:
    """A row from a manifest that predates fps and start_s: a file keeps nulls there (it is
    not decoded again), a frame folder takes this run's --fps."""
    file = VideoSource("test", "v", str(media.video(tmp_path / "src/v.avi", 4, rate="12")))
    frames = tuple(str(p) for p in media.frames(tmp_path / "src/f", ["0.jpg", "1.jpg"]))
    folder = VideoSource("test", "f", str(tmp_path / "src/f"), frames)
    plan = _plan(tmp_path / "src", tmp_path / "out", folder_fps=10.0)
    (tmp_path / "out/test").mkdir(parents=True)
    rows = {v.video_id: ingest_video(v, None, plan) for v in (file, folder)}
    assert {k: (r["status"], r["fps"], r["start_s"]) for k, r in rows.items()} == {
        "v": ("ok", 12.0, 0.0), "f": ("ok", 10.0, 0.0),
    }  # fmt: skip
    plan = _plan(tmp_path / "src", tmp_path / "out", folder_fps=5.0)
    kept = {}
    for video in (file, folder):
        old = {k: v for k, v in rows[video.video_id].items() if k not in ("fps", "start_s")}
        again = ingest_video(video, old, plan)
        kept[video.video_id] = again.pop("fps"), again.pop("start_s")
        assert again == {**old, "status": "skipped"}
    assert kept == {"v": (None, None), "f": (5.0, 0.0)}
