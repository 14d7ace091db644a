"""The training clips as Ray Data datasets (the driver builds them; :func:`read_chunk` runs
in Ray Data tasks).

A clip is ``clip_length`` (T) consecutive frames of ONE video stacked on the channel axis,
oldest first (:mod:`mnad.clips`): uint8 ``(T*C, H, W)``. Raw frames are stored once (one
shard per video, read through :mod:`pipelines.data`); clips exist only in flight. Each video
is cut into chunks of at most ``chunk_clips`` clips; a chunk reads its frames (its clips'
span: ``count + T - 1`` frames, so consecutive chunks overlap by T - 1 frames) and emits its
clips in a seeded order. The order of the chunks is shuffled on every execution of the
dataset (every epoch), reproducibly from the seed
(``RandomSeedConfig(reseed_after_execution=True)``); the trainer adds a local shuffle buffer
seeded by (seed, epoch, rank). A chunk never spans two videos, so neither does a clip. An
optional validation set holds out whole training videos (never test ones), chosen by
fraction and seed.

Rows of a clip dataset: ``clip`` uint8 (T*C, H, W), ``video_index`` int32 (position of the
video in the list the dataset was built from) and ``frame_index`` int32 (the clip's last
frame: the predicted one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mnad.clips import stack_clips
from pipelines.data import ingested_rows, read_frames
from pipelines.errors import UserError
from pipelines.schema import FrameShape
from pipelines.storage import join

if TYPE_CHECKING:
    import ray.data

#: Target size of one chunk's clips in memory (a Ray Data block): T-fold the raw frames.
CHUNK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class VideoShard:
    """One ingested video: its shard and how many frames it holds."""

    video_id: str
    path: str  # path or URI readable through pipelines.storage.resolve
    frames: int

    def num_clips(self, clip_length: int) -> int:
        """Clips of ``clip_length`` frames that fit in this video (0 if it is too short)."""
        return max(0, self.frames - clip_length + 1)


def list_videos(data: str, split: str) -> list[VideoShard]:
    """The ingested videos of one split, in video_id order, with their frame counts."""
    return [
        VideoShard(r["video_id"], join(data, r["shard"]), int(r["frames"]))
        for r in ingested_rows(data, split)
    ]


AUTO_VAL_FRACTION = 0.125
"""The share of training videos held out when ``val_fraction`` is None..."""
AUTO_VAL_MIN_VIDEOS = 8
"""... when there are at least this many (one of 8, two of 16 as in Ped2)."""


def split_videos(
    videos: Sequence[VideoShard], val_fraction: float | None, seed: int
) -> tuple[list[VideoShard], list[VideoShard]]:
    """Hold out whole videos for validation and calibration: ``round(fraction * n)`` of
    them (at least one when the fraction is positive, never all), chosen by ``seed``. None:
    ``AUTO_VAL_FRACTION`` with at least ``AUTO_VAL_MIN_VIDEOS`` videos, else none. Both
    lists keep the input order."""
    if val_fraction is None:
        val_fraction = AUTO_VAL_FRACTION if len(videos) >= AUTO_VAL_MIN_VIDEOS else 0.0
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must lie in [0, 1), not {val_fraction!r}")
    if val_fraction == 0.0:
        return list(videos), []
    n = len(videos)
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    if n_val < 1:
        raise UserError(f"val_fraction {val_fraction} needs at least 2 training videos, got {n}")
    held = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    train = [v for i, v in enumerate(videos) if i not in held]
    val = [v for i, v in enumerate(videos) if i in held]
    return train, val


class Chunk(NamedTuple):
    """Clips ``first .. first + count - 1`` of one video (clip k = frames k .. k + T - 1)."""

    video_index: int
    path: str
    first: int
    count: int


def plan_chunks(videos: Sequence[VideoShard], clip_length: int, chunk_clips: int) -> list[Chunk]:
    """Cut every video into chunks of at most ``chunk_clips`` clips, in video order."""
    if chunk_clips < 1:
        raise ValueError(f"chunk_clips must be >= 1, not {chunk_clips}")
    chunks = []
    for index, video in enumerate(videos):
        total = video.num_clips(clip_length)
        for first in range(0, total, chunk_clips):
            chunks.append(Chunk(index, video.path, first, min(chunk_clips, total - first)))
    return chunks


def chunk_clips_for(shape: FrameShape, clip_length: int, target_bytes: int = CHUNK_BYTES) -> int:
    """How many clips make a chunk of about ``target_bytes`` of clip pixels."""
    return max(1, target_bytes // (clip_length * shape.nbytes))


def read_chunk(
    batch: dict[str, np.ndarray], *, clip_length: int, seed: int | None
) -> dict[str, np.ndarray]:
    """Ray Data map function: chunk descriptors to their clips.

    With a seed, the clips of a chunk come out in an order fixed by (seed, chunk); without
    one, in frame order.
    """
    parts: dict[str, list[np.ndarray]] = {"clip": [], "video_index": [], "frame_index": []}
    for video_index, path, first, count in zip(
        batch["video_index"], batch["path"], batch["first"], batch["count"], strict=True
    ):
        first, count = int(first), int(count)
        frames = read_frames(str(path), first, first + count + clip_length - 1)
        starts = np.arange(count)  # (k,) relative to `first`
        if seed is not None:
            rng = np.random.default_rng((seed, int(video_index), first))
            starts = rng.permutation(starts)
        parts["clip"].append(stack_clips(frames, starts, clip_length))
        parts["video_index"].append(np.full(count, video_index, dtype=np.int32))
        parts["frame_index"].append((first + starts + clip_length - 1).astype(np.int32))
    return {k: np.concatenate(v) for k, v in parts.items()}


def clip_dataset(
    videos: Sequence[VideoShard],
    clip_length: int,
    *,
    shuffle_seed: int | None,
    chunk_clips: int,
    read_cpus: float = 0.0,
) -> ray.data.Dataset:
    """A Ray Data dataset of the clips of ``videos``.

    With ``shuffle_seed``: the chunk order is drawn anew on every execution (epoch),
    reproducibly from the seed, and each chunk's clips come in a seeded order. Without:
    every clip in video and frame order. The order of the output is preserved
    (``preserve_order``), so one consumer sees a sequence fixed by the seed.

    ``read_cpus``: CPUs reserved per read task. The default 0 lets the reads share the
    cores of the training workers (a read is a Parquet row-group read and a gather, light
    beside a training step), so a worker per core leaves the data pipeline runnable.
    """
    import ray.data
    from ray.data import RandomSeedConfig

    chunks = plan_chunks(videos, clip_length, chunk_clips)
    if not chunks:
        raise UserError(f"no video has the {clip_length} frames a clip needs")
    items = [c._asdict() for c in chunks]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    if shuffle_seed is not None:
        ds = ds.randomize_block_order(
            seed=RandomSeedConfig(seed=shuffle_seed, reseed_after_execution=True)
        )
    ds = ds.map_batches(
        read_chunk,
        batch_size=1,
        batch_format="numpy",
        fn_kwargs={"clip_length": clip_length, "seed": shuffle_seed},
        num_cpus=read_cpus,
    )
    ds.context.execution_options.preserve_order = True
    return ds


@dataclass(frozen=True)
class TrainingClips:
    """The clip datasets of one training run and what they were built from."""

    train: ray.data.Dataset
    val: ray.data.Dataset | None
    train_videos: tuple[VideoShard, ...]
    val_videos: tuple[VideoShard, ...]
    clip_length: int

    @property
    def num_train_clips(self) -> int:
        return sum(v.num_clips(self.clip_length) for v in self.train_videos)

    @property
    def num_val_clips(self) -> int:
        return sum(v.num_clips(self.clip_length) for v in self.val_videos)


def training_clips(
    data: str,
    clip_length: int,
    shape: FrameShape,
    *,
    seed: int,
    val_fraction: float | None = 0.0,
    chunk_clips: int | None = None,
    read_cpus: float = 0.0,
) -> TrainingClips:
    """The training clips of DATA (shuffled per epoch by ``seed``) and, with a positive
    ``val_fraction``, the clips of held-out training videos (in order)."""
    train, val = split_videos(list_videos(data, "train"), val_fraction, seed)
    chunk = chunk_clips or chunk_clips_for(shape, clip_length)
    return TrainingClips(
        train=clip_dataset(
            train, clip_length, shuffle_seed=seed, chunk_clips=chunk, read_cpus=read_cpus
        ),
        val=clip_dataset(
            val, clip_length, shuffle_seed=None, chunk_clips=chunk, read_cpus=read_cpus
        )
        if val
        else None,
        train_videos=tuple(train),
        val_videos=tuple(val),
        clip_length=clip_length,
    )
