"""The training clips from the Parquet shards: planning without Ray, then real Ray Data
datasets; the frame reads and clip layout they are built on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnad.clips import stack_clips
from pipelines.data import read_frames, video_clips
from pipelines.errors import UserError
from pipelines.schema import FrameShape
from pipelines.train.data import (
    VideoShard,
    chunk_clips_for,
    clip_dataset,
    list_videos,
    plan_chunks,
    split_videos,
    training_clips,
)

T = 5  # the pred task's clip: 4 inputs and the target

# --- without Ray -----------------------------------------------------------------------------


def _videos(*frames: int) -> list[VideoShard]:
    return [VideoShard(f"v{i}", f"/data/train/v{i}.parquet", n) for i, n in enumerate(frames)]


def test_chunks_cover_each_video_once_and_never_cross_videos() -> None:
    videos = _videos(30, 4, 9, 5)
    chunks = plan_chunks(videos, T, chunk_clips=7)
    for index, video in enumerate(videos):
        mine = [c for c in chunks if c.video_index == index]
        assert all(c.path == video.path for c in mine)
        clips = [k for c in mine for k in range(c.first, c.first + c.count)]
        assert clips == list(range(video.num_clips(T)))  # each clip once, in chunk order
        assert all(c.first + c.count + T - 1 <= video.frames for c in mine)  # frames exist
    assert [v.num_clips(T) for v in videos] == [26, 0, 5, 1]


def test_chunk_size_follows_the_frame_size() -> None:
    assert chunk_clips_for(FrameShape(64, 64, 1), T, target_bytes=5 * 4096 * 10) == 10
    assert chunk_clips_for(FrameShape(256, 256, 3), T, target_bytes=1) == 1


def test_validation_holds_out_whole_videos_by_seed() -> None:
    videos = _videos(*range(10, 20))
    train, val = split_videos(videos, 0.3, seed=1)
    assert len(val) == 3 and len(train) == 7
    assert {v.video_id for v in train}.isdisjoint(v.video_id for v in val)
    assert split_videos(videos, 0.3, seed=1) == (train, val)  # repeatable
    assert split_videos(videos, 0.3, seed=2)[1] != val  # another seed, other videos
    assert split_videos(videos, 0.0, seed=1) == (videos, [])
    assert len(split_videos(videos[:2], 0.01, seed=0)[1]) == 1  # at least one, never all
    with pytest.raises(UserError, match="at least 2 training videos"):
        split_videos(videos[:1], 0.5, seed=0)


def test_stack_clips_puts_frames_on_the_channel_axis_oldest_first() -> None:
    frames = np.arange(6 * 2 * 2 * 3, dtype=np.uint8).reshape(6, 2, 2, 3)  # (n, H, W, C)
    clips = stack_clips(frames, np.array([2, 0]), clip_length=3)  # (2, 9, 2, 2)
    assert clips.shape == (2, 9, 2, 2)
    for k, start in enumerate([2, 0]):
        for t in range(3):
            for c in range(3):
                np.testing.assert_array_equal(clips[k, t * 3 + c], frames[start + t, :, :, c])


def test_reads_frame_ranges_across_row_groups(tiny_data: Path) -> None:
    v0 = list_videos(str(tiny_data), "train")[0]
    frames = read_frames(v0.path, 6, 19)  # row groups of 8 frames: 3 of them
    assert frames.shape == (13, 16, 16, 1)
    np.testing.assert_array_equal(frames[:, 0, 1, 0], np.arange(6, 19))


@pytest.mark.parametrize("chunk_frames", [1, 3, 7, 64])
def test_video_clips_yields_every_clip_in_order(tiny_data: Path, chunk_frames: int) -> None:
    video = list_videos(str(tiny_data), "train")[0]  # 30 frames
    batches = list(video_clips(video.path, T, chunk_frames=chunk_frames))
    index = np.concatenate([b.frame_index for b in batches])
    clips = np.concatenate([b.clips for b in batches])
    np.testing.assert_array_equal(index, np.arange(T - 1, video.frames))
    assert clips.shape == (video.frames - T + 1, T, 16, 16)
    np.testing.assert_array_equal(clips[:, :, 0, 1], index[:, None] - np.arange(T)[::-1])
    assert all(len(b.label) == len(b.frame_index) for b in batches)
    assert list(video_clips(video.path, 31)) == []  # longer than the video


# --- real Ray Data ---------------------------------------------------------------------------


def _epoch(ds, videos: list[VideoShard]) -> list[tuple[int, int]]:
    """(video_index, last frame) of every clip in the order one consumer sees them; checks
    that each clip's frames are consecutive frames of that one video (``videos[i]`` is the
    video of index i; its pixel (0, 0) holds the number in its id)."""
    split_position = np.array([int(v.video_id[1:]) for v in videos])
    keys = []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        clips, videos, last = batch["clip"], batch["video_index"], batch["frame_index"]
        assert clips.dtype == np.uint8 and clips.shape[1:] == (T, 16, 16)
        expected = np.repeat(split_position[videos][:, None], T, axis=1)
        np.testing.assert_array_equal(clips[:, :, 0, 0], expected)
        np.testing.assert_array_equal(clips[:, :, 0, 1], last[:, None] - np.arange(T)[::-1])
        keys += zip(videos.tolist(), last.tolist(), strict=True)
    return keys


@pytest.mark.ray
def test_training_clips_never_cross_videos_and_reshuffle_every_epoch(
    ray_local, tiny_data: Path
) -> None:
    videos = list_videos(str(tiny_data), "train")
    expected = {(i, f) for i, v in enumerate(videos) for f in range(T - 1, v.frames)}
    ds = clip_dataset(videos, T, shuffle_seed=7, chunk_clips=6)
    first, second = _epoch(ds, videos), _epoch(ds, videos)
    for order in (first, second):
        assert len(order) == len(expected) and set(order) == expected  # each clip once
    assert first != second  # a new order every epoch
    again = clip_dataset(videos, T, shuffle_seed=7, chunk_clips=6)
    assert (_epoch(again, videos), _epoch(again, videos)) == (first, second)  # repeatable by seed
    other = clip_dataset(videos, T, shuffle_seed=8, chunk_clips=6)
    assert _epoch(other, videos) != first


@pytest.mark.ray
def test_validation_clips_come_from_held_out_training_videos_in_order(
    ray_local, tiny_data: Path
) -> None:
    clips = training_clips(
        str(tiny_data),
        T,
        FrameShape(16, 16, 1),
        seed=0,
        val_fraction=0.25,
        chunk_clips=4,
        in_memory=False,
    )
    assert len(clips.val_videos) == 1 and len(clips.train_videos) == 3
    assert not {v.video_id for v in clips.val_videos} & {v.video_id for v in clips.train_videos}
    assert all(v.path.split("/")[-2] == "train" for v in clips.val_videos)  # never test videos
    order = _epoch(clips.val, list(clips.val_videos))
    assert order == [(0, f) for f in range(T - 1, clips.val_videos[0].frames)]
    assert clips.num_val_clips == len(order)
    assert clips.num_train_clips == len(_epoch(clips.train, list(clips.train_videos)))
