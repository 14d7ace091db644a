"""What runs in the scoring actors (Ray Data ``map_batches`` callables): whole videos in,
one part file per video out.

:class:`VideoScorer` fetches the model itself (from MLflow, by the
:class:`~pipelines.tracking.ModelRef` the driver found: nothing of the driver's disk), loads
it once per actor, folds its BatchNorms into the
convolutions and makes its weights channels_last (the same scores to float rounding,
faster), and runs each video's clips through :class:`mnad.streaming.StreamingScorer` in
batches. In per-video mode with the per-frame update a call hands it several videos, which
it scores together in lockstep (:class:`mnad.lockstep.LockstepScorer`: the next frame of
every video in one batch, each video with its own memory and exactly its own updates;
``LOCKSTEP_SLOTS`` at once, by device), writing each one's part as it finishes.
A video's clips are read with :func:`pipelines.data.video_clips` and laid out and scaled for
the model with :func:`mnad.clips.model_clips` (:func:`video_inputs`), as training scales its
clips.

A finished video is written to its own part file atomically
(:func:`pipelines.storage.write_parquet`): its file of the frames dataset SCORES/frames, its
``score`` already the job's normalisation and smoothing (recorded as ``mnad.score``), so
that nothing combines the archive afterwards. A job that is interrupted and run again skips
the videos already scored; in ``paper`` mode the part file also records the memory the
video left (``mnad.items_after``), which the next run takes up. Dependencies come in
through the constructor (``fn_constructor_kwargs``), so the same class runs in a test
without a cluster.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mnad.checkpoint import load_checkpoint
from mnad.clips import ClipInput, model_clips
from mnad.config import ModelConfig
from mnad.lockstep import LockstepScorer
from mnad.network import MNAD
from mnad.streaming import FrameScores, StreamingScorer
from mnad.video import normalised_scores, scoring_model
from pipelines import storage
from pipelines.data import ClipBatch, video_clips
from pipelines.schema import SCORES_SCHEMA
from pipelines.score.events import SCORE_CHOICE, choice_key, chosen_score

if TYPE_CHECKING:
    from pipelines.tracking import ModelRef

OK = "ok"
RESUMED = "resumed"
"""Scored by an earlier run: its part file is there."""
TOO_SHORT = "too_short"
FAILED = "failed"

ITEMS_AFTER = b"mnad.items_after"
"""Part-file metadata: the memory items after the video (paper mode; "null" per video)."""


@dataclass
class VideoTask:
    """One video to score: where its shard is and where its part file goes; or a segment of
    it (``--segment-seconds``): the frames ``first .. stop - 1`` whose scores it writes, to
    a part that the driver joins with the others' (:mod:`pipelines.score.segments`)."""

    video_id: str
    shard: str
    part: str
    first: int = 0
    stop: int | None = None  # None: to the video's end

    @property
    def segment(self) -> bool:
        """Whether the task scores only a segment of its video."""
        return self.first > 0 or self.stop is not None


@dataclass
class VideoOutcome:
    """What an actor reports for one video."""

    video_id: str
    status: str  # OK | RESUMED | TOO_SHORT | FAILED
    frames: int
    seconds: float
    error: str = ""
    node: str = ""  # the Ray node the actor ran on ("" outside Ray)


def video_inputs(
    shard: str, cfg: ModelConfig, batch: int, first: int = 0, stop: int | None = None
) -> Iterator[tuple[ClipBatch, ClipInput]]:
    """One video's clips in order, about ``batch`` at a time: each batch as read (its frame
    numbers and labels) and as the model takes it (input and target on [-1, 1]). The first
    T - 1 frames get no clip. With ``first`` and ``stop``, the clips of the frames
    ``first .. stop - 1`` only (:func:`pipelines.data.video_clips`)."""
    read = video_clips(shard, cfg.clip_length, chunk_frames=batch, fit=cfg, first=first, stop=stop)
    for clips in read:
        yield clips, model_clips(clips.clips, cfg)


def batch_tasks(batch: dict[str, np.ndarray]) -> list[VideoTask]:
    """The tasks of a Ray Data batch (a null ``stop`` arrives as NaN; a batch of whole
    videos may have no ``first`` and ``stop`` at all)."""
    n = len(batch["video_id"])
    firsts = batch.get("first", np.zeros(n))
    stops = batch.get("stop", np.full(n, np.nan))
    return [
        VideoTask(str(v), str(s), str(p), int(a), None if np.isnan(b) else int(b))
        for v, s, p, a, b in zip(
            batch["video_id"], batch["shard"], batch["part"], firsts,
            np.asarray(stops, np.float64), strict=True,
        )
    ]  # fmt: skip


class VideoScorer:
    """A Ray Data callable: fetches and loads the model once, scores whole videos, writes
    their parts.

    ``model`` is what :func:`pipelines.tracking.find_model` found, fetched here with
    :func:`pipelines.tracking.fetch_model` from ``tracking_uri`` into a temporary folder of
    this process (gone once the model is loaded). A ``models:/`` or ``runs:/`` model is read
    from the MLflow store and its artifact store, which every node reaches; a local checkpoint
    folder stays a path, which is fine on one machine only: on a cluster, a model must be a
    ``models:/`` or ``runs:/`` URI.
    """

    def __init__(
        self,
        model: ModelRef,
        tracking_uri: str,
        dataset: str,
        reset_per_video: bool,
        granularity: str,
        batch_size: int,
        threads: int = 1,
        device: str = "cpu",
        precision: str = "fp32",
        normalise: str = "per-video",
        smooth: int | None = 1,
    ):
        from pipelines.tracking import fetch_model

        torch.set_num_threads(max(1, threads))
        with tempfile.TemporaryDirectory(prefix="mnad-model-") as tmp:
            checkpoint = load_checkpoint(fetch_model(model, tracking_uri, dst=tmp))
        self.preset, self.calibration = checkpoint.preset, checkpoint.calibration
        # BatchNorm folded into the convs and channels_last weights: the same scores to float
        # rounding (tests/mnad/test_parity.py runs the paper's fixture through it), faster.
        self.model = scoring_model(checkpoint, device)
        self.node = _node_id()
        self.scorer = StreamingScorer(
            self.model,
            granularity=granularity,  # type: ignore[arg-type]
            precision=precision,  # type: ignore[arg-type]
        )
        self.dataset = dataset
        self.reset_per_video = reset_per_video
        self.batch_size = batch_size
        self.lockstep = lockstep_scorer(self.model, device, reset_per_video, granularity,
                                        precision, batch_size)  # fmt: skip
        if smooth is None:  # the model's own smoothing
            smooth = self.preset.model.smooth
        self.score_choice = (normalise, smooth)  # what ``score`` is (the job's choice)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tasks = batch_tasks(batch)
        if self.lockstep is not None:
            done = self.score_lockstep(tasks)
        else:
            done = [self.score_video(task) for task in tasks]
        outcomes = [dataclasses.replace(o, node=self.node) for o in done]
        return {k: np.array([getattr(o, k) for o in outcomes]) for k in asdict(outcomes[0])}

    def score_video(self, task: VideoTask) -> VideoOutcome:
        """Score one video and write its part file (or take up the one an earlier run
        wrote)."""
        t0 = time.perf_counter()
        if storage.is_file(task.part):
            self._resume(task.part)
            return VideoOutcome(task.video_id, RESUMED, 0, 0.0)
        if self.reset_per_video:
            self.scorer.reset()
        cfg = self.preset.model
        read: list[ClipBatch] = []
        scored: list[FrameScores] = []
        try:
            for clips, inputs in video_inputs(
                task.shard, cfg, self.batch_size, task.first, task.stop
            ):
                read.append(clips)
                scored.append(self.scorer.score(inputs.inputs, inputs.target))
        except (OSError, pa.ArrowException, ValueError) as err:
            return VideoOutcome(task.video_id, FAILED, 0, 0.0, f"{task.shard}: {err}")
        return self._finish(task, read, FrameScores.concat(scored), t0)

    def score_lockstep(self, tasks: list[VideoTask]) -> list[VideoOutcome]:
        """Score the videos of ``tasks`` together (per-video memory, the per-frame update:
        :class:`mnad.lockstep.LockstepScorer`) and write each one's part file as it
        finishes; outcomes in the order of ``tasks``. A video that cannot be read fails alone
        (its slot goes to the next video); a part already there is taken as it is."""
        assert self.lockstep is not None
        outcomes: dict[int, VideoOutcome] = {}
        readers: dict[int, _Reader] = {}
        for i, task in enumerate(tasks):
            if storage.is_file(task.part):
                outcomes[i] = VideoOutcome(task.video_id, RESUMED, 0, 0.0)
            else:
                readers[i] = _Reader(task, self.preset.model, self.batch_size)
        for done in self.lockstep.score([(i, r.clips()) for i, r in readers.items()]):
            r = readers[done.key]
            if r.error:
                outcomes[done.key] = VideoOutcome(r.task.video_id, FAILED, 0, 0.0, r.error)
            else:
                outcomes[done.key] = self._finish(r.task, r.read, done.scores, r.t0)
        return [outcomes[i] for i in range(len(tasks))]

    def _finish(
        self, task: VideoTask, read: list[ClipBatch], scored: FrameScores, t0: float
    ) -> VideoOutcome:
        """Write a scored video's part file (or say it was too short for a clip)."""
        if not read:
            length = self.preset.model.clip_length
            why = f"{task.shard}: fewer frames than one clip ({length}); skipped"
            return VideoOutcome(task.video_id, TOO_SHORT, 0, 0.0, why)
        table = self._part_table(task, read, scored)
        storage.write_parquet(table, task.part)
        return VideoOutcome(task.video_id, OK, table.num_rows, time.perf_counter() - t0)

    def _resume(self, part: str) -> None:
        """In paper mode, take up the memory that an earlier run's video left."""
        if self.reset_per_video:
            return
        fs, path = storage.resolve(part)
        meta = pq.read_schema(path, filesystem=fs).metadata or {}
        items = json.loads(meta[ITEMS_AFTER])
        self.scorer.items = torch.tensor(
            items, dtype=self.scorer.items.dtype, device=self.scorer.device
        )

    def _part_table(self, task: VideoTask, read: list[ClipBatch], scored: FrameScores) -> pa.Table:
        """A video's rows of SCORES_SCHEMA, with the memory it left in the metadata. A
        segment's ``score_per_video`` is NaN: a min-max over the whole video, it is
        computed when the segments are joined (:mod:`pipelines.score.segments`)."""
        video_id = task.video_id
        index = np.concatenate([c.frame_index for c in read])
        label = np.concatenate([c.label for c in read])
        psnr, dist = scored.psnr, scored.feature_distance
        alpha = self.preset.model.alpha
        per_video, calibrated = normalised_scores(psnr, dist, alpha, self.calibration)
        n = len(index)
        if task.segment:
            per_video = np.full(n, np.nan)
        table = pa.table(
            {
                "dataset": pa.array([self.dataset] * n, pa.string()),
                "video_id": pa.array([video_id] * n, pa.string()),
                "frame_index": pa.array(index.astype(np.int32)),
                "psnr": pa.array(psnr),
                "feature_distance": pa.array(dist),
                "point_score": pa.array(scored.point_score),
                "memory_updated": pa.array(scored.updated),
                "score": pa.array(chosen_score(per_video, calibrated, *self.score_choice)),
                "label": pa.array(label.astype(np.int8)),
                "score_per_video": pa.array(per_video),
                "score_calibrated": (
                    pa.nulls(n, pa.float64()) if calibrated is None else pa.array(calibrated)
                ),
            },
            schema=SCORES_SCHEMA,
        )
        items = "null" if self.reset_per_video else json.dumps(self.scorer.items.tolist())
        choice = choice_key(*self.score_choice)
        return table.replace_schema_metadata({ITEMS_AFTER: items, SCORE_CHOICE: choice})


LOCKSTEP_SLOTS = {"cpu": 12, "cuda": 64}
"""Videos an actor scores at once in per-video mode, by device: the decoder's batch is about
that many frames. On 2 CPU cores (``small``, bf16, 80 % of frames updating, Ped2's test
videos cut in 24, quiet) frames/s was 235 / 248 / 253 / 231 / 208 with 4 / 8 / 12 / 16 / 24
slots: 8 to 12 are within the machine's noise, and more spill the buffers out of cache
(docs/results.md). A GPU needs dozens of frames per batch to be busy, and 64 videos'
encoded clips (``LOCKSTEP_AHEAD``) fit an H100/H200-class GPU at 256x256."""

LOCKSTEP_AHEAD = {"cpu": 16, "cuda": 8}
"""Clips of a video encoded at once (at most ``--batch-size``), by device: the encoder's
batch is this times the videos that need clips, and the buffers hold slots x this."""

LOCKSTEP_BUFFER_BYTES = {"cpu": 512 << 20, "cuda": 8 << 30}
"""The most the buffered clips of an actor's slots may hold (their input frames and
target), by device: at the paper's 256x256x3 this bounds ``ahead`` to 8 on CPUs."""


def _kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def lockstep_slots(device: str) -> int:
    """How many videos one actor on ``device`` ("cpu", "cuda") scores at once."""
    return LOCKSTEP_SLOTS[_kind(device)]


def lockstep_ahead(device: str, config: ModelConfig, batch_size: int) -> int:
    """Clips of each video encoded at once: ``LOCKSTEP_AHEAD`` of ``device``, at most
    ``batch_size``, and few enough that the slots' buffers fit ``LOCKSTEP_BUFFER_BYTES``."""
    kind = _kind(device)
    clip_bytes = 4 * config.channels * config.height * config.width * (config.input_frames + 1)
    fits = LOCKSTEP_BUFFER_BYTES[kind] // (LOCKSTEP_SLOTS[kind] * clip_bytes)
    return max(1, min(batch_size, LOCKSTEP_AHEAD[kind], fits))


def lockstep_scorer(
    model: MNAD, device: str, reset_per_video: bool, granularity: str,
    precision: str, batch_size: int,
) -> LockstepScorer | None:  # fmt: skip
    """The lockstep scorer of an actor, where it applies: per-video memory with the paper's
    per-frame update (the paper mode carries one memory from video to video and the
    per-batch update is not done in lockstep: those score one video at a time)."""
    if not reset_per_video or granularity != "frame":
        return None
    return LockstepScorer(
        model,
        slots=lockstep_slots(device),
        ahead=lockstep_ahead(device, model.config, batch_size),
        precision=precision,  # type: ignore[arg-type]
    )


class _Reader:
    """One video's clips as the lockstep scorer reads them, keeping what was read (frame
    numbers, labels), when reading began, and the error that ended it early, if one did."""

    def __init__(self, task: VideoTask, cfg: ModelConfig, batch: int):
        self.task, self.cfg, self.batch = task, cfg, batch
        self.read: list[ClipBatch] = []
        self.error = ""
        self.t0 = 0.0

    def clips(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.t0 = time.perf_counter()
        try:
            task = self.task
            for clips, inputs in video_inputs(task.shard, self.cfg, self.batch, task.first,
                                              task.stop):  # fmt: skip
                self.read.append(clips)
                yield inputs.inputs, inputs.target
        except (OSError, pa.ArrowException, ValueError) as err:
            self.error = f"{self.task.shard}: {err}"


def _node_id() -> str:
    """The Ray node this process runs on, or "" outside Ray."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


__all__ = [
    "FAILED",
    "OK",
    "RESUMED",
    "TOO_SHORT",
    "VideoOutcome",
    "VideoScorer",
    "VideoTask",
    "batch_tasks",
    "lockstep_ahead",
    "lockstep_slots",
    "video_inputs",
]
