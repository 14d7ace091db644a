"""The training clips: held in memory when their frames fit, else streamed as Ray Data
datasets (the driver builds both; :func:`read_chunk` and :func:`video_frames` run in Ray
tasks).

A clip is ``clip_length`` (T) consecutive frames of ONE video stacked on the channel axis,
oldest first (:mod:`mnad.clips`): uint8 ``(T*C, H, W)``. Raw frames are stored once (one
shard per video, read through :mod:`pipelines.data`); clips exist only in flight.

In memory (:class:`ClipTable`), when the frames take at most ``IN_MEMORY_SHARE`` of the
smallest node's object store: one Ray task a video reads its frames into the object store,
once for the whole run; the workers map them without copying and cut each batch's clips
from them. Every epoch is one permutation of ALL the clip ids, drawn from (seed, epoch)
(:func:`epoch_order`), cut into global batches, each rank taking its slice in rank order
(:func:`rank_batches`): every batch mixes clips of every video, as the paper's shuffled
DataLoader does, the order does not depend on the number of workers, and no read task
competes with the workers for their cores.

Streamed (:func:`clip_dataset`), when they do not fit: each video is cut into chunks of
clips; a chunk reads its frames (its clips' span: ``count + T - 1`` frames, so consecutive
chunks overlap by T - 1 frames). A read block holds one chunk from each of up to
``MIX_VIDEOS`` videos and emits their clips in a seeded order; the order of the blocks is
shuffled on every execution of the dataset (every epoch), reproducibly from the seed
(``RandomSeedConfig(reseed_after_execution=True)``); the trainer adds a local shuffle buffer
seeded by (seed, epoch, rank). A chunk never spans two videos, so neither does a clip.

An optional validation set holds out whole training videos (never test ones), chosen by
fraction and seed.

Rows of a clip dataset: ``clip`` uint8 (T*C, H, W), ``video_index`` int32 (position of the
video in the list the dataset was built from) and ``frame_index`` int32 (the clip's last
frame: the predicted one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mnad.clips import fitted_shape, model_frames, stack_clips
from mnad.config import ModelConfig
from pipelines.data import ingested_rows, read_frames
from pipelines.errors import UserError
from pipelines.schema import FrameShape
from pipelines.storage import join

if TYPE_CHECKING:
    import ray.data

#: Target size of one chunk's clips in memory (a Ray Data block): T-fold the raw frames.
CHUNK_BYTES = 32 * 2**20
#: Videos whose clips one read block of a shuffled stream mixes.
MIX_VIDEOS = 8
#: The fewest clips of a chunk in a mixed block (fewer would mean many small reads).
MIN_MIXED_CHUNK = 16
#: The training frames are held in memory when they take at most this share of the object
#: store of the smallest node (each node that runs a worker maps one copy).
IN_MEMORY_SHARE = 0.5


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


def interleave(chunks: Sequence[Chunk]) -> list[Chunk]:
    """``chunks`` in round-robin video order: the first chunk of every video, then the
    second of every video that has one, and so on; neighbours come from different videos
    while more than one video has chunks left."""
    per_video: dict[int, list[Chunk]] = {}
    for chunk in chunks:
        per_video.setdefault(chunk.video_index, []).append(chunk)
    lists = list(per_video.values())
    longest = max((len(mine) for mine in lists), default=0)
    return [mine[k] for k in range(longest) for mine in lists if k < len(mine)]


def chunk_clips_for(shape: FrameShape, clip_length: int, target_bytes: int = CHUNK_BYTES) -> int:
    """How many clips make a chunk of about ``target_bytes`` of clip pixels."""
    return max(1, target_bytes // (clip_length * shape.nbytes))


def read_chunk(
    batch: dict[str, np.ndarray],
    *,
    clip_length: int,
    seed: int | None,
    fit: ModelConfig | None = None,
) -> dict[str, np.ndarray]:
    """Ray Data map function: chunk descriptors to their clips.

    With a seed, the clips of the batch (a block: chunks of several videos) come out in an
    order fixed by (seed, its first chunk); without one, chunk by chunk in frame order.
    With ``fit``, frames are made what that model takes as they are read
    (:func:`mnad.clips.model_frames`: size, grey, channel order).
    """
    parts: dict[str, list[np.ndarray]] = {"clip": [], "video_index": [], "frame_index": []}
    for video_index, path, first, count in zip(
        batch["video_index"], batch["path"], batch["first"], batch["count"], strict=True
    ):
        first, count = int(first), int(count)
        frames = read_frames(str(path), first, first + count + clip_length - 1)
        if fit is not None:
            frames = model_frames(frames, fit)
        starts = np.arange(count)  # (k,) relative to `first`
        if seed is not None:
            rng = np.random.default_rng((seed, int(video_index), first))
            starts = rng.permutation(starts)
        parts["clip"].append(stack_clips(frames, starts, clip_length))
        parts["video_index"].append(np.full(count, video_index, dtype=np.int32))
        parts["frame_index"].append((first + starts + clip_length - 1).astype(np.int32))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    if seed is not None and len(batch["first"]) > 1:
        key = (seed, int(batch["video_index"][0]), int(batch["first"][0]), 1)
        order = np.random.default_rng(key).permutation(len(out["clip"]))
        out = {k: v[order] for k, v in out.items()}
    return out


def clip_dataset(
    videos: Sequence[VideoShard],
    clip_length: int,
    *,
    shuffle_seed: int | None,
    chunk_clips: int,
    read_cpus: float = 0.0,
    fit: ModelConfig | None = None,
    mix_videos: int = MIX_VIDEOS,
) -> ray.data.Dataset:
    """A Ray Data dataset of the clips of ``videos``.

    With ``shuffle_seed``: a block holds one chunk (of ``chunk_clips // mix`` clips, not
    fewer than ``min(chunk_clips, MIN_MIXED_CHUNK)``) from each of
    ``mix = min(mix_videos, len(videos))`` videos, its clips in a seeded order, and the block
    order is drawn anew on every execution (epoch), reproducibly from the seed
    (``mix_videos=1``: a block is one chunk of ``chunk_clips``). Without: every clip in
    video and frame order. The order of the output is preserved (``preserve_order``), so
    one consumer sees a sequence fixed by the seed.

    ``read_cpus``: CPUs reserved per read task. The default 0 lets the reads share the
    cores of the training workers (a read is a Parquet row-group read and a gather, light
    beside a training step), so a worker per core leaves the data pipeline runnable.
    """
    import ray.data
    from ray.data import RandomSeedConfig

    mix = 1 if shuffle_seed is None else max(1, min(mix_videos, len(videos)))
    per_chunk = max(min(chunk_clips, MIN_MIXED_CHUNK), chunk_clips // mix)
    chunks = plan_chunks(videos, clip_length, per_chunk)
    if not chunks:
        raise UserError(f"no video has the {clip_length} frames a clip needs")
    if mix > 1:
        chunks = interleave(chunks)
    items = [c._asdict() for c in chunks]
    ds = ray.data.from_items(items, override_num_blocks=-(-len(items) // mix))
    if shuffle_seed is not None:
        ds = ds.randomize_block_order(
            seed=RandomSeedConfig(seed=shuffle_seed, reseed_after_execution=True)
        )
    ds = ds.map_batches(
        read_chunk,
        batch_size=None,  # a whole block: the chunks it mixes
        batch_format="numpy",
        fn_kwargs={"clip_length": clip_length, "seed": shuffle_seed, "fit": fit},
        num_cpus=read_cpus,
    )
    ds.context.execution_options.preserve_order = True
    return ds


# --- the clips in memory ---------------------------------------------------------------------


def video_frames(path: str, frames: int, fit: ModelConfig | None = None) -> np.ndarray:
    """Ray task: every frame of one video, made what ``fit`` takes when given
    (:func:`mnad.clips.model_frames`): uint8 (n, H, W, C)."""
    out = read_frames(path, 0, frames)
    return out if fit is None else model_frames(out, fit)


def frames_nbytes(videos: Sequence[VideoShard], shape: tuple[int, int, int]) -> int:
    """The bytes that the frames of ``videos`` take at ``shape`` (H, W, C) uint8."""
    h, w, c = shape
    return sum(v.frames for v in videos) * h * w * c


def fits_in_memory(nbytes: int) -> bool:
    """Whether ``nbytes`` of frames fit in ``IN_MEMORY_SHARE`` of the object store of the
    smallest node of the running Ray cluster."""
    from pipelines.ray_cluster import node_resources

    stores = [node.get("object_store_memory", 0.0) for node in node_resources()]
    return bool(stores) and nbytes <= IN_MEMORY_SHARE * min(stores)


@dataclass(frozen=True)
class ClipTable:
    """The clips of some videos whose frames sit in Ray's object store, one object a video.
    Clip ids run 0 .. num_clips - 1 in video, then frame order; it pickles as references,
    so it travels to the workers for free."""

    clip_length: int
    counts: tuple[int, ...]  # clips of each video
    frames: tuple[Any, ...]  # a ray.ObjectRef a video: uint8 (n, H, W, C)

    @property
    def num_clips(self) -> int:
        return sum(self.counts)

    @classmethod
    def load(
        cls, videos: Sequence[VideoShard], clip_length: int, fit: ModelConfig | None
    ) -> ClipTable:
        """Read the frames of ``videos`` into the object store (one Ray task a video) and
        wait until they are there. Videos too short for a clip hold no frames."""
        import ray

        read = ray.remote(video_frames)
        kept = [v for v in videos if v.num_clips(clip_length) > 0]
        refs = tuple(read.remote(v.path, v.frames, fit) for v in kept)
        ray.wait(list(refs), num_returns=len(refs), fetch_local=False)
        return cls(clip_length, tuple(v.num_clips(clip_length) for v in kept), refs)

    def open(self) -> ClipSource:
        """The frames in this process: views of the object store on this node, no copy."""
        import ray

        return ClipSource(ray.get(list(self.frames)), self.counts, self.clip_length)


class ClipSource:
    """A :class:`ClipTable`'s frames in one process: clips by id."""

    def __init__(self, frames: Sequence[np.ndarray], counts: Sequence[int], clip_length: int):
        self.frames = list(frames)  # uint8 (n, H, W, C) a video
        self.clip_length = clip_length
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # (V + 1,)

    @property
    def num_clips(self) -> int:
        return int(self.offsets[-1])

    def video_of(self, ids: np.ndarray) -> np.ndarray:
        """The video (its position in the table) of each clip id."""
        return np.searchsorted(self.offsets, ids, side="right") - 1

    def clips(self, ids: np.ndarray) -> np.ndarray:
        """The clips ``ids``, in that order: uint8 (k, T*C, H, W)."""
        _, h, w, c = self.frames[0].shape
        out = np.empty((len(ids), self.clip_length * c, h, w), dtype=np.uint8)
        videos = self.video_of(ids)
        for video in np.unique(videos):
            mine = videos == video
            starts = ids[mine] - self.offsets[video]
            out[mine] = stack_clips(self.frames[video], starts, self.clip_length)
        return out


def epoch_order(num_clips: int, seed: int, epoch: int) -> np.ndarray:
    """Every clip id once, in the order of epoch ``epoch``: a permutation drawn from
    (seed, epoch) alone, so the same for any number of workers."""
    return np.random.default_rng((seed, epoch)).permutation(num_clips)


def rank_batches(
    order: np.ndarray, batch_size: int, rank: int, world: int, *, drop_last: bool
) -> list[np.ndarray]:
    """Rank ``rank``'s parts of the global batches of ``order``: global batch b is
    ``order[b * batch_size : (b + 1) * batch_size]`` and rank r takes its r-th
    ``batch_size // world`` ids, so the ranks' parts, concatenated in rank order, are the
    batch. ``drop_last``: full batches only, every rank as many equal parts (the training
    step); else every id once (the last batch short, a rank's part possibly empty and
    left out)."""
    per = batch_size // world
    if per < 1:
        raise ValueError(f"batch size {batch_size} gives nothing to {world} ranks")
    n = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
    parts = [
        order[b * batch_size + rank * per : b * batch_size + (rank + 1) * per] for b in range(n)
    ]
    return [part for part in parts if len(part)]


@dataclass(frozen=True)
class InMemoryClips:
    """The training (and held-out) clips of a run, in memory."""

    train: ClipTable
    val: ClipTable | None


@dataclass(frozen=True)
class TrainingClips:
    """The clips of one training run and what they were built from: in memory, or the
    Ray Data datasets that stream them."""

    train: ray.data.Dataset | None  # None: in memory
    val: ray.data.Dataset | None
    train_videos: tuple[VideoShard, ...]
    val_videos: tuple[VideoShard, ...]
    clip_length: int
    in_memory: InMemoryClips | None = None

    def datasets(self) -> dict[str, ray.data.Dataset]:
        """The datasets the trainer streams: none when the clips are in memory."""
        named = {"train": self.train, "val": self.val}
        return {name: ds for name, ds in named.items() if ds is not None}

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
    fit: ModelConfig | None = None,
    in_memory: bool | None = None,
) -> TrainingClips:
    """The training clips of DATA (shuffled per epoch by ``seed``) and, with a positive
    ``val_fraction``, the clips of held-out training videos (in order); with ``fit``, of
    frames made what that model takes (see :func:`read_chunk`).

    ``in_memory``: hold the frames in the object store (True), stream them (False), or
    hold them when they fit (None: :func:`fits_in_memory`, which needs a running Ray)."""
    train, val = split_videos(list_videos(data, "train"), val_fraction, seed)
    if in_memory is None:
        kept = tuple(shape) if fit is None else fitted_shape(shape, fit)
        in_memory = fits_in_memory(frames_nbytes([*train, *val], kept))
    if in_memory:
        return TrainingClips(
            train=None,
            val=None,
            train_videos=tuple(train),
            val_videos=tuple(val),
            clip_length=clip_length,
            in_memory=InMemoryClips(
                ClipTable.load(train, clip_length, fit),
                ClipTable.load(val, clip_length, fit) if val else None,
            ),
        )
    chunk = chunk_clips or chunk_clips_for(shape, clip_length)
    return TrainingClips(
        train=clip_dataset(
            train, clip_length, shuffle_seed=seed, chunk_clips=chunk, read_cpus=read_cpus, fit=fit
        ),
        val=clip_dataset(
            val, clip_length, shuffle_seed=None, chunk_clips=chunk, read_cpus=read_cpus, fit=fit
        )
        if val
        else None,
        train_videos=tuple(train),
        val_videos=tuple(val),
        clip_length=clip_length,
    )
