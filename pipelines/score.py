"""`mnad score`: per-frame anomaly scores of a whole split or archive, as a Ray Data job.

```
DATA/<split>/*.parquet ──Ray Data: VideoScorer actors, CPUs or GPUs──▶ SCORES/parts/*.parquet
SCORES/parts ──▶ SCORES/frames.parquet, SCORES/summary.json, SCORES/report/ ──▶ MLflow run
```

Memory modes:

- ``per-video`` (default): the memory is reset to the trained one at every video, so videos
  are independent and scored in parallel across actors and nodes. The right mode for bulk
  scoring of archives.
- ``paper``: the memory is carried across all videos in sorted order, as the paper's
  evaluation does; one actor scores them in turn. For exact reproduction.

Each actor loads the model once, folds its BatchNorms into the convolutions and makes its
weights channels_last (the same scores to float rounding, faster), and runs each video's
clips through ``mnad.streaming.StreamingScorer`` in batches (the encoder always batched; the
decoder batched too, exactly). ``--gpus-per-actor`` puts the actors on GPUs (fractions
share one); ``--precision bf16`` runs the convolutions under bfloat16 autocast, faster where
the hardware has it, at the cost of bit-exactness.
A finished video is written to its own part file atomically, so a job that is interrupted
and run again skips the videos already scored (in ``paper`` mode it also restores the memory
each finished video left) and ends with the same output, without duplicate rows.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines import schema
from pipelines.clips import video_clips
from pipelines.errors import UserError
from pipelines.ray_session import ray_session

MemoryMode = Literal["paper", "per-video"]

#: Columns of SCORES/frames.parquet: one row per scored frame.
SCORES_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("psnr", pa.float64(), nullable=False),
        pa.field("feature_distance", pa.float64(), nullable=False),
        pa.field("point_score", pa.float64(), nullable=False),
        pa.field("memory_updated", pa.bool_(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),  # abnormality: higher = more anomalous
        pa.field("label", pa.int8(), nullable=False),  # 1 anomalous, 0 normal, -1 unknown
    ]
)
PARTS_DIR = "parts"
FRAMES_FILE = "frames.parquet"
SUMMARY_FILE = "summary.json"
REPORT_DIR = "report"


@dataclass(frozen=True)
class ScoreConfig:
    """What to score, with which model, and where the scores go."""

    data: str = field(metadata={"positional": True, "help": "DATA folder written by mnad ingest"})
    model: str = field(
        metadata={
            "help": "registered model URI (models:/mnad-ped2@latest), runs:/ URI, or a "
            "checkpoint folder (e.g. from mnad train or mnad import-paper)"
        }
    )
    out: str = field(metadata={"help": "SCORES folder to write"})
    memory: MemoryMode = field(
        default="per-video",
        metadata={"help": "per-video: reset memory at each video (parallel); paper: carry it"},
    )
    granularity: Literal["frame", "batch"] = field(
        default="frame",
        metadata={"help": "test-time memory update after every frame (paper) or every batch"},
    )
    split: Literal["test", "train"] = field(default="test", metadata={"help": "split to score"})
    batch_size: int = field(default=32, metadata={"help": "clips per batched forward pass"})
    actors: int = field(
        default=0,
        metadata={"help": "scoring actors in per-video mode (0: one per CPU, or per GPU)"},
    )
    gpus_per_actor: float = field(
        default=0.0,
        metadata={"help": "GPUs each scoring actor reserves; > 0 scores on GPUs (CUDA)"},
    )
    precision: Literal["fp32", "bf16"] = field(
        default="fp32",
        metadata={
            "help": "fp32: the paper's numbers; bf16: convolutions under bfloat16 autocast "
            "(faster on GPUs and bf16 CPUs; scores differ slightly)"
        },
    )
    experiment: str | None = field(
        default=None, metadata={"help": "MLflow experiment (default: the dataset name)"}
    )
    tracking_uri: str | None = field(
        default=None,
        metadata={"help": "MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mnad-runs)"},
    )
    report: bool = field(default=True, metadata={"help": "write the plots and HTML report"})
    quiet: bool = field(default=False, metadata={"help": "print only errors and the result"})

    def __post_init__(self) -> None:
        if self.memory not in ("paper", "per-video"):
            raise UserError(f"--memory must be 'paper' or 'per-video', not {self.memory!r}")
        if self.granularity not in ("frame", "batch"):
            raise UserError(f"--granularity must be 'frame' or 'batch', not {self.granularity!r}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.actors < 0:
            raise UserError(f"--actors must be >= 0, not {self.actors}")
        if not self.gpus_per_actor >= 0:
            raise UserError(f"--gpus-per-actor must be >= 0, not {self.gpus_per_actor}")
        if self.precision not in ("fp32", "bf16"):
            raise UserError(f"--precision must be 'fp32' or 'bf16', not {self.precision!r}")


@dataclass
class VideoTask:
    """One video to score: where its shard is and where its part file goes."""

    video_id: str
    shard: str
    part: str


@dataclass
class VideoOutcome:
    """What an actor reports for one video."""

    video_id: str
    status: str  # ok | resumed (scored by an earlier run) | too_short | failed
    frames: int
    seconds: float
    error: str = ""


# --- reading frames and making clips ---------------------------------------------------------


def to_model_frames(frames: np.ndarray, channels: int) -> Any:
    """uint8 frames (n, H, W, c) to a float tensor (n, channels, H, W) on [-1, 1].

    Grey data (c = 1) is repeated to 3 channels for a 3-channel model, as the paper's loader
    reads grey frames.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (n, c, H, W)
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1)
    return x.float().div_(127.5).sub_(1.0)


def iter_clips(
    shard: str, clip_length: int, channels: int, batch: int
) -> Iterator[tuple[np.ndarray, np.ndarray, Any, Any]]:
    """One video's clips in order, about ``batch`` at a time, as model inputs.

    Yields (frame_index, label, inputs, targets) for the frame each clip ends on:
    inputs (b, (T-1)*C, H, W) and targets (b, C, H, W) on [-1, 1] for prediction, or the
    frame itself twice for reconstruction (T = 1). The first T-1 frames get no clip.
    """
    import torch

    for part in video_clips(shard, clip_length, chunk_frames=batch):
        x = torch.from_numpy(part.clips)  # (b, T*c, H, W) uint8
        b, _, h, w = x.shape
        x = x.reshape(b, clip_length, -1, h, w)  # (b, T, c, H, W)
        if x.shape[2] != channels:
            x = x.expand(-1, -1, channels, -1, -1)  # grey data, 3-channel model
        x = x.float().div_(127.5).sub_(1.0)
        targets = x[:, -1]  # (b, C, H, W)
        inputs = x[:, :-1] if clip_length > 1 else x
        yield part.frame_index, part.label, inputs.reshape(b, -1, h, w), targets


# --- the Ray Data stage ----------------------------------------------------------------------


class VideoScorer:
    """A Ray Data callable: loads the model once, scores whole videos, writes their parts.

    Dependencies come in through the constructor (``fn_constructor_kwargs``), so the same
    class runs in a test without a cluster.
    """

    def __init__(
        self,
        checkpoint_dir: str,
        dataset: str,
        reset_per_video: bool,
        granularity: str,
        batch_size: int,
        threads: int = 1,
        device: str = "cpu",
        precision: str = "fp32",
    ):
        import torch

        from mnad.checkpoint import load_model
        from mnad.network import inference_copy
        from mnad.streaming import StreamingScorer

        torch.set_num_threads(max(1, threads))
        model, self.preset = load_model(checkpoint_dir)
        # BatchNorm folded into the convs and channels_last weights: the same scores to float
        # rounding (tests/test_parity.py runs the paper's fixture through it), faster.
        self.model = inference_copy(model).to(device)
        self.scorer = StreamingScorer(
            self.model,
            granularity=granularity,  # type: ignore[arg-type]
            precision=precision,  # type: ignore[arg-type]
        )
        self.dataset = dataset
        self.reset_per_video = reset_per_video
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = [
            self.score_video(VideoTask(v, s, p))
            for v, s, p in zip(batch["video_id"], batch["shard"], batch["part"], strict=True)
        ]
        return {k: np.array([getattr(o, k) for o in outcomes]) for k in asdict(outcomes[0])}

    def score_video(self, task: VideoTask) -> VideoOutcome:
        import torch

        from mnad import anomaly_score as scores

        t0 = time.perf_counter()
        if _exists(task.part):
            # Scored by an earlier run: in paper mode take up the memory it left.
            if not self.reset_per_video:
                fs, part = schema.resolve(task.part)
                meta = pq.read_schema(part, filesystem=fs).metadata or {}
                items = json.loads(meta[b"mnad.items_after"])
                self.scorer.items = torch.tensor(
                    items, dtype=self.scorer.items.dtype, device=self.scorer.device
                )
            return VideoOutcome(task.video_id, "resumed", 0, 0.0)
        if self.reset_per_video:
            self.scorer.reset()
        cfg = self.preset.model
        parts: list[Any] = []
        try:
            for index, label, inputs, targets in iter_clips(
                task.shard, cfg.clip_length, cfg.channels, self.batch_size
            ):
                parts.append((index, label, self.scorer.score(inputs, targets)))
        except (OSError, pa.ArrowException, ValueError) as err:
            return VideoOutcome(task.video_id, "failed", 0, 0.0, f"{task.shard}: {err}")
        if not parts:
            return VideoOutcome(
                task.video_id,
                "too_short",
                0,
                0.0,
                f"{task.shard}: fewer frames than one clip ({cfg.clip_length}); skipped",
            )
        index = np.concatenate([p[0] for p in parts])
        label = np.concatenate([p[1] for p in parts])
        psnr = np.concatenate([p[2].psnr for p in parts])
        dist = np.concatenate([p[2].feature_distance for p in parts])
        table = pa.table(
            {
                "dataset": pa.array([self.dataset] * len(index), pa.string()),
                "video_id": pa.array([task.video_id] * len(index), pa.string()),
                "frame_index": pa.array(index.astype(np.int32)),
                "psnr": pa.array(psnr),
                "feature_distance": pa.array(dist),
                "point_score": pa.array(np.concatenate([p[2].point_score for p in parts])),
                "memory_updated": pa.array(np.concatenate([p[2].updated for p in parts])),
                "score": pa.array(scores.fused_abnormality(psnr, dist, cfg.alpha)),
                "label": pa.array(label.astype(np.int8)),
            },
            schema=SCORES_SCHEMA,
        )
        items = json.dumps(self.scorer.items.tolist()) if not self.reset_per_video else "null"
        table = table.replace_schema_metadata({"mnad.items_after": items})
        write_atomic(table, task.part)
        return VideoOutcome(task.video_id, "ok", len(index), time.perf_counter() - t0)


def write_atomic(table: pa.Table, uri: str) -> None:
    """Write a Parquet file under a temporary name, then move it into place."""
    fs, path = schema.resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    pq.write_table(table, tmp, filesystem=fs)
    fs.move(tmp, path)


# --- the job ---------------------------------------------------------------------------------


@dataclass
class ScoreResult:
    """What a scoring job produced."""

    out: str
    frames: int
    videos: int
    failed: list[str]
    metrics: dict[str, float]
    run_id: str | None = None
    report: str | None = None


def _log(config: ScoreConfig, message: str) -> None:
    if not config.quiet:
        print(f"mnad score: {message}", flush=True)


def _tasks(data: str, split: str, out: str) -> list[VideoTask]:
    tasks = []
    for shard in schema.list_shards(data, split):
        video_id = shard.rsplit("/", 1)[-1].removesuffix(".parquet")
        tasks.append(VideoTask(video_id, shard, schema.join(out, PARTS_DIR, f"{video_id}.parquet")))
    return tasks


def _check_model_fits(preset: Any, shape: schema.FrameShape, data: str) -> None:
    m = preset.model
    if (shape.height, shape.width) != (m.height, m.width) or shape.channels not in (1, m.channels):
        raise UserError(
            f"{data}: frames are {shape.height}x{shape.width}x{shape.channels}, the model "
            f"takes {m.height}x{m.width}x{m.channels}; re-run `mnad ingest` with "
            f"--size {m.height} {m.width} --channels {m.channels}"
        )


def _score_videos(
    config: ScoreConfig, tasks: list[VideoTask], checkpoint_dir: str, dataset: str
) -> tuple[list[dict[str, Any]], float]:
    """Run the scoring actors over every video; their outcomes and the seconds it took."""
    import ray

    # From the cluster's size, not what is free right now, so that a rerun splits the work
    # (and the float arithmetic of each actor's threads) the same way.
    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 1)) or 1
    paper = config.memory == "paper"
    gpu = config.gpus_per_actor > 0
    default_actors = cpus
    if gpu:
        have = resources.get("GPU", 0.0)
        if config.gpus_per_actor > have + 1e-9:
            raise UserError(
                f"--gpus-per-actor {config.gpus_per_actor:g}: the Ray cluster has {have:g} "
                "GPUs; score on CPUs (--gpus-per-actor 0) or join GPU nodes"
            )
        default_actors = max(1, int(have / config.gpus_per_actor + 1e-9))
    actors = 1 if paper else max(1, min(config.actors or default_actors, len(tasks)))
    threads = max(1, cpus // actors)
    where = f"{config.gpus_per_actor:g} GPU each" if gpu else f"{threads} CPU each"
    _log(config, f"{len(tasks)} videos of {config.data} ({config.split}), {actors} actor(s), "
         f"{where}")

    t0 = time.perf_counter()
    items = [asdict(t) for t in tasks]
    ds = ray.data.from_items(items, override_num_blocks=1 if paper else max(1, len(items)))
    outcomes_ds = ds.map_batches(
        VideoScorer,
        fn_constructor_kwargs={
            "checkpoint_dir": checkpoint_dir,
            "dataset": dataset,
            "reset_per_video": not paper,
            "granularity": config.granularity,
            "batch_size": config.batch_size,
            "threads": threads,
            "device": "cuda" if gpu else "cpu",
            "precision": config.precision,
        },
        batch_size=None if paper else 1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
        num_gpus=config.gpus_per_actor if gpu else None,
    )
    outcomes: list[dict[str, Any]] = []
    for row in outcomes_ds.iter_rows():
        outcomes.append(row)
        if row["status"] in ("failed", "too_short"):
            print(f"mnad score: {row['error']}", file=sys.stderr, flush=True)
        else:
            _log(config, f"[{len(outcomes)}/{len(tasks)}] {row['video_id']}: {row['status']}"
                 f" ({row['frames']} frames)")
    return outcomes, time.perf_counter() - t0


def run_score(config: ScoreConfig) -> ScoreResult:
    """Score every video of the split and write scores, summary, report and MLflow run."""
    from mnad.checkpoint import load_checkpoint
    from pipelines import tracking

    summary = schema.validate_data(config.data, splits=(config.split,))
    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    tracking.check_tracking(uri)
    resolved = tracking.resolve_model(config.model, uri)
    preset = load_checkpoint(resolved.checkpoint_dir).preset
    assert summary.shape is not None  # validate_data guarantees one frame size
    _check_model_fits(preset, summary.shape, config.data)
    tasks = _tasks(config.data, config.split, config.out)

    with ray_session(config.quiet):
        outcomes, seconds = _score_videos(config, tasks, resolved.checkpoint_dir, summary.dataset)
    scored_now = sum(int(r["frames"]) for r in outcomes)
    failed = [str(r["error"]) for r in outcomes if r["status"] == "failed"]
    skipped = [str(r["error"]) for r in outcomes if r["status"] == "too_short"]

    frames = combine_parts(config.out, [t for t in tasks if _exists(t.part)])
    metrics = frame_metrics(frames)
    metrics["frames_per_s"] = scored_now / seconds if scored_now else 0.0
    summary_doc = {
        "dataset": summary.dataset,
        "split": config.split,
        "memory": config.memory,
        "granularity": config.granularity,
        "model": resolved.uri,
        "model_version": resolved.version,
        "frames": frames.num_rows,
        "videos": len(set(frames.column("video_id").to_pylist())),
        "failed": failed,
        "skipped": skipped,
        "seconds": round(seconds, 3),
        **{k: v for k, v in metrics.items()},
    }
    _write_json(schema.join(config.out, SUMMARY_FILE), summary_doc)
    report_dir = None
    if config.report:
        report_dir = write_score_report(config, tasks, frames, metrics, resolved.checkpoint_dir)
    run_id = _log_to_mlflow(config, uri, summary.dataset, resolved, metrics, report_dir)
    _log(
        config,
        f"{summary_doc['frames']} frames of {summary_doc['videos']} videos; "
        + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        + f"; {config.out}",
    )
    return ScoreResult(
        config.out, frames.num_rows, summary_doc["videos"], failed, metrics, run_id, report_dir
    )


def _exists(uri: str) -> bool:
    fs, path = schema.resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def combine_parts(out: str, tasks: list[VideoTask]) -> pa.Table:
    """All part files into SCORES/frames.parquet, sorted by video and frame."""
    tables = []
    for task in tasks:
        fs, path = schema.resolve(task.part)
        tables.append(pq.read_table(path, filesystem=fs).replace_schema_metadata(None))
    table = pa.concat_tables(tables) if tables else SCORES_SCHEMA.empty_table()
    table = table.sort_by([("video_id", "ascending"), ("frame_index", "ascending")])
    write_atomic(table, schema.join(out, FRAMES_FILE))
    return table


def frame_metrics(frames: pa.Table) -> dict[str, float]:
    """Micro AUC (the paper's), macro AUC and EER over the labelled frames, when any."""
    from mnad import metrics

    by_video: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    vids = frames.column("video_id").to_numpy(zero_copy_only=False)
    score = frames.column("score").to_numpy()
    label = frames.column("label").to_numpy()
    for vid in np.unique(vids):
        mask = vids == vid
        s, lab = metrics.known_frames(score[mask], label[mask])
        if len(lab):
            by_video[str(vid)] = (s, lab)
    pooled = np.concatenate([lab for _, lab in by_video.values()]) if by_video else np.zeros(0)
    if len(np.unique(pooled)) < 2:
        return {}
    scores_by = {k: v[0] for k, v in by_video.items()}
    labels_by = {k: v[1] for k, v in by_video.items()}
    macro = metrics.macro_auc(scores_by, labels_by)
    all_scores = np.concatenate(list(scores_by.values()))
    out = {
        "micro_auc": metrics.micro_auc(scores_by, labels_by),
        "eer": metrics.eer(all_scores, pooled),
    }
    if macro.n_videos:
        out["macro_auc"] = macro.value
    return out


def _video_scores(frames: pa.Table) -> list[Any]:
    from pipelines.report import VideoScores

    cols = {n: frames.column(n).to_numpy(zero_copy_only=False) for n in frames.schema.names}
    videos = []
    bounds = np.flatnonzero(cols["video_id"][1:] != cols["video_id"][:-1]) + 1
    for idx in np.split(np.arange(frames.num_rows), bounds):
        if idx.size == 0:
            continue
        label = cols["label"][idx]
        videos.append(
            VideoScores(
                video_id=str(cols["video_id"][idx[0]]),
                frame_index=cols["frame_index"][idx],
                score=cols["score"][idx],
                label=None if (label == schema.LABEL_UNKNOWN).all() else label,
                psnr=cols["psnr"][idx],
                feature_distance=cols["feature_distance"][idx],
            )
        )
    return videos


class FrameRenderer:
    """The report's picture of a frame: the frame, the model's prediction, the error map."""

    def __init__(self, checkpoint_dir: str, shards: dict[str, str]):
        from mnad.checkpoint import load_model

        self.model, self.preset = load_model(checkpoint_dir)
        self.shards = shards

    def __call__(self, video_id: str, frame_index: int) -> tuple[np.ndarray, ...]:
        import pyarrow.compute as pc
        import torch

        cfg = self.preset.model
        fs, path = schema.resolve(self.shards[video_id])
        first = frame_index - cfg.clip_length + 1
        table = pq.read_table(
            path,
            filesystem=fs,
            columns=["frame_index", "frame"],
            filters=(pc.field("frame_index") >= first) & (pc.field("frame_index") <= frame_index),
        ).sort_by("frame_index")
        shape = schema.shape_from_schema(pq.read_schema(path, filesystem=fs))
        frames = to_model_frames(schema.frames_to_numpy(table.column("frame"), shape), cfg.channels)
        c = cfg.channels
        x = frames.reshape(1, -1, *frames.shape[2:])  # (1, T*C, H, W)
        inputs = x[:, :-c] if cfg.task == "pred" else x
        with torch.no_grad():
            pred = self.model.decode(self.model.encode(inputs)).prediction[0]  # (C, H, W)
        target = (frames[-1] + 1) / 2  # (C, H, W) on [0, 1]
        pred = (pred + 1) / 2
        error = (pred - target).pow(2).mean(dim=0)  # (H, W)
        as_rgb = lambda t: t.expand(3, -1, -1).permute(1, 2, 0).clamp(0, 1).numpy()  # noqa: E731
        return as_rgb(target), as_rgb(pred), error.numpy()


def write_score_report(
    config: ScoreConfig,
    tasks: list[VideoTask],
    frames: pa.Table,
    metrics: dict[str, float],
    checkpoint_dir: str,
) -> str | None:
    """The plots and HTML page of a scoring job, under SCORES/report; returns a local path."""
    import tempfile

    from pipelines.report import pooled_roc, write_report

    videos = _video_scores(frames)
    if not videos:
        return None
    remote = "://" in config.out
    if remote:
        local = Path(tempfile.mkdtemp(prefix="mnad-report-"))
    else:
        local = Path(config.out) / REPORT_DIR
    render = FrameRenderer(checkpoint_dir, {t.video_id: t.shard for t in tasks})
    title = f"{frames.column('dataset')[0]} {config.split}: memory {config.memory}"
    write_report(
        videos, local, title=title, metrics=metrics, roc=pooled_roc(videos), render=render
    )
    if remote:
        fs, path = schema.resolve(schema.join(config.out, REPORT_DIR))
        pafs.copy_files(str(local), path, destination_filesystem=fs)
    return str(local)


def _write_json(uri: str, doc: dict[str, Any]) -> None:
    fs, path = schema.resolve(uri)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(doc, indent=2, default=float).encode())


def _log_to_mlflow(
    config: ScoreConfig,
    uri: str,
    dataset: str,
    resolved: Any,
    metrics: dict[str, float],
    report_dir: str | None,
) -> str:
    from pipelines import tracking

    params = {k: v for k, v in asdict(config).items() if k not in ("quiet",)}
    tags = {"mnad.stage": "score", "mnad.model_uri": resolved.uri}
    name = f"score-{config.memory}"
    with tracking.start_run(uri, config.experiment or dataset, name, params, tags) as run:
        if resolved.name and resolved.version:
            tracking.link_model_version(run, resolved.name, resolved.version)
        run.log_metrics(metrics, step=0)
        run.log_artifact(schema.join(config.out, FRAMES_FILE))
        run.log_artifact(schema.join(config.out, SUMMARY_FILE))
        if report_dir:
            run.log_artifacts(report_dir, "report")
        return run.run_id


__all__ = [
    "SCORES_SCHEMA",
    "ScoreConfig",
    "ScoreResult",
    "VideoScorer",
    "combine_parts",
    "frame_metrics",
    "iter_clips",
    "run_score",
]
