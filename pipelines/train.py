"""`mnad train`: MNAD trained with Ray Train (V2) and PyTorch DDP, tracked in MLflow.

The driver (:func:`run_train`) checks everything a user can get wrong before any work starts
(DATA, preset, worker placement, tracking store), builds the clip datasets
(:mod:`pipelines.clips`), starts or resumes an MLflow run (:mod:`pipelines.tracking`), runs a
``TorchTrainer`` and, while it runs, logs every epoch's metrics and prints one progress line
per epoch. At the end it logs the final checkpoint and registers it as ``mnad-<dataset>``
with the alias ``latest``.

Each worker (:func:`train_loop`) streams its shard of the training clips, and per step:
forward on its part of the global batch with the memory read but not updated; the loss of
the paper (MSE + lambda_c * compactness + lambda_s * separateness, Sec. 3.3); backward with
DDP averaging the gradients; Adam. Then the memory update (Sec. 3.2, Eq. 3-5) on the queries
of the WHOLE global batch: every rank gathers the queries of every rank, in rank order, and
applies the update rule to them. Every rank so holds the same memory after every step, equal
to what one process computes on the global batch; no rank drifts, and nothing is averaged.
(The weights v of Eq. 4 are normalised over all the queries given, which is why the update
cannot be done per rank and then averaged.) The learning rate follows cosine annealing per
epoch (the paper's ``Train.py``).

Checkpoints (:mod:`mnad.checkpoint`'s format) are reported from rank 0 at the end of every
epoch and every ``checkpoint_every`` steps; Ray Train keeps the last ``keep_checkpoints``.
After a worker failure Ray Train restarts the workers and the loop resumes from the latest
checkpoint: model, memory, optimizer, scheduler, epoch and the batches already done in it.
``--resume`` continues a run whose driver died: Ray Train V2 restores a run launched again
with the same storage path and name, and the MLflow run is continued by its id.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from mnad import memory as mem
from mnad.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mnad.config import ModelConfig, Preset, get_preset
from mnad.network import MNAD, TrainOutput, build_model
from pipelines.errors import UserError
from pipelines.ray_session import ray_session

if TYPE_CHECKING:
    import ray.train

RUN_RECORD = "mnad-train.json"
"""The file beside Ray Train's state of a run that ``--resume`` reads back."""


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Options of `mnad train`."""

    data: str = field(
        metadata=_help("DATA folder or URI written by `mnad ingest`", positional=True)
    )
    preset: str = field(
        default="small",
        metadata=_help("model preset (paper-pred, paper-recon, small) or a preset JSON file"),
    )
    epochs: int | None = field(default=None, metadata=_help("epochs (default: the preset's)"))
    batch_size: int | None = field(
        default=None, metadata=_help("clips per step over all workers (default: the preset's)")
    )
    lr: float | None = field(default=None, metadata=_help("Adam learning rate (default: preset)"))
    seed: int | None = field(
        default=None, metadata=_help("seed of weights, memory, clip order, val videos (preset)")
    )
    val_fraction: float = field(
        default=0.0,
        metadata=_help("fraction of the training videos held out for a validation loss"),
    )
    workers: int = field(default=2, metadata=_help("Ray Train workers (DDP ranks)"))
    cpus_per_worker: float = field(
        default=1.0,
        metadata=_help("CPUs each worker reserves (0: the cluster's CPUs split over the workers)"),
    )
    gpus_per_worker: float = field(
        default=0.0, metadata=_help("GPUs each worker reserves; > 0 trains on GPUs (NCCL, bf16)")
    )
    experiment: str | None = field(
        default=None, metadata=_help("MLflow experiment (default: the data set's name)")
    )
    tracking_uri: str | None = field(
        default=None,
        metadata=_help("MLflow store (default: $MLFLOW_TRACKING_URI, else mnad-runs/mlflow.db)"),
    )
    alias: str | None = field(
        default=None,
        metadata=_help("alias to set on the registered version too, e.g. champion"),
    )
    output: str = field(
        default="mnad-runs",
        metadata=_help("folder (or URI) for Ray Train's checkpoints, under OUTPUT/train/NAME"),
    )
    name: str | None = field(
        default=None,
        metadata=_help("run name (default: <dataset>-<preset>-<time>; with --resume: the latest)"),
    )
    resume: bool = field(
        default=False, metadata=_help("continue the run NAME (default: the latest) from its state")
    )
    checkpoint_every: int = field(
        default=0, metadata=_help("also checkpoint every this many steps (0: each epoch only)")
    )
    keep_checkpoints: int = field(default=3, metadata=_help("checkpoints to keep"))
    max_failures: int = field(
        default=3, metadata=_help("worker failures to recover from (-1: no limit)")
    )
    shuffle_buffer: int = field(
        default=256, metadata=_help("clips in each worker's local shuffle buffer (0: off)")
    )
    chunk_clips: int | None = field(
        default=None, metadata=_help("clips per read chunk (default: about 32 MiB of clips)")
    )
    quiet: bool = field(default=False, metadata=_help("no progress lines"))
    probe: StepProbe | None = field(default=None, metadata={"cli": False})
    """A hook the worker loop calls at its start and after every step (tests, debugging)."""

    def __post_init__(self) -> None:
        if not self.data:
            raise UserError("DATA is empty")
        if self.alias is not None and (
            not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,254}", self.alias)
            or self.alias == "latest"
            or re.fullmatch(r"[vV]\d+", self.alias)
        ):
            raise UserError(
                f"--alias {self.alias!r}: use letters, digits, '_' and '-', starting with a "
                "letter; 'latest' and v<number> are reserved by MLflow"
            )
        for name, low in (("workers", 1), ("keep_checkpoints", 1), ("checkpoint_every", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise UserError(f"--{name.replace('_', '-')} must be an integer >= {low}")
        if self.max_failures < -1:
            raise UserError("--max-failures must be >= -1")
        if self.shuffle_buffer < 0:
            raise UserError("--shuffle-buffer must be >= 0")
        if self.chunk_clips is not None and self.chunk_clips < 1:
            raise UserError("--chunk-clips must be >= 1")
        if not self.cpus_per_worker >= 0 or self.gpus_per_worker < 0:
            raise UserError("--cpus-per-worker and --gpus-per-worker must be >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"--val-fraction must lie in [0, 1), not {self.val_fraction}")
        preset = self.resolved_preset()  # unknown preset, bad overrides: UserError here
        if preset.optim.batch_size % self.workers:
            raise UserError(
                f"batch size {preset.optim.batch_size} does not split over {self.workers} "
                f"workers: pass --batch-size as a multiple of {self.workers}"
            )

    def resolved_preset(self) -> Preset:
        """The preset with this config's overrides applied."""
        preset = load_preset(self.preset)
        overrides = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        overrides["seed"] = self.seed
        return preset.replace(**{k: v for k, v in overrides.items() if v is not None})

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def to_params(self) -> dict[str, Any]:
        """The config as MLflow params and as the run record (the probe left out)."""
        names = [f.name for f in dataclasses.fields(self) if f.metadata.get("cli") is not False]
        return {name: getattr(self, name) for name in names}


def load_preset(name_or_file: str) -> Preset:
    """A named preset, or a preset JSON file (``Preset.to_json``)."""
    if name_or_file.endswith(".json"):
        try:
            return Preset.from_json(Path(name_or_file).read_text())
        except FileNotFoundError:
            raise UserError(f"preset file {name_or_file} does not exist") from None
        except (ValueError, TypeError) as err:
            raise UserError(f"preset file {name_or_file}: {err}") from None
    return get_preset(name_or_file)


# --------------------------------------------------------------------------------------------
# The worker loop: pure pieces
# --------------------------------------------------------------------------------------------


class StepRecord(NamedTuple):
    """What a probe sees after a step (CPU tensors)."""

    local_queries: Tensor  # (n_rank, C) this rank's queries
    gathered_queries: Tensor  # (N, C) every rank's, in rank order
    items_before: Tensor  # (M, C) memory before the update
    items_after: Tensor  # (M, C) memory after it


class StepProbe(Protocol):
    """A hook into the worker loop; it must pickle (it travels to the workers)."""

    def on_start(self, rank: int, epoch: int, step: int) -> None:
        """After the state is set up: ``epoch`` and ``step`` are where the loop starts."""

    def on_step(self, rank: int, step: int, record: StepRecord) -> None:
        """After step ``step`` (1-based, global) has updated the memory."""


class Losses(NamedTuple):
    """The training objective (Sec. 3.3) and its parts, each a scalar tensor."""

    total: Tensor
    prediction: Tensor  # MSE on the [-1, 1] scale
    compactness: Tensor
    separateness: Tensor

    def stacked(self) -> Tensor:
        """(4,) detached: total, prediction, compactness, separateness."""
        return torch.stack([t.detach().float() for t in self])


LOSS_NAMES = ("loss", "prediction_error", "compactness", "separateness")


def training_losses(
    prediction: Tensor, target: Tensor, compact: Tensor, separate: Tensor, cfg: ModelConfig
) -> Losses:
    """L = MSE(prediction, target) + lambda_c * compactness + lambda_s * separateness."""
    mse = F.mse_loss(prediction.float(), target.float())
    total = mse + cfg.lambda_compact * compact + cfg.lambda_separate * separate
    return Losses(total, mse, compact, separate)


def clip_inputs(clips: Tensor, cfg: ModelConfig) -> tuple[Tensor, Tensor]:
    """uint8 clips (B, T*C, H, W) to the model input (B, C*input_frames, H, W) and the target
    (B, C, H, W), both on [-1, 1]: the next frame (pred) or the frame itself (recon)."""
    x = clips.float().div_(127.5).sub_(1.0)  # (B, T*C, H, W)
    split = cfg.channels * cfg.input_frames
    if cfg.task == "recon":
        return x, x
    return x[:, :split], x[:, split:]


def all_gather_counts(count: int, device: torch.device) -> list[int]:
    """Every rank's ``count``, in rank order (one collective; [count] on a single process)."""
    if not _distributed():
        return [count]
    mine = torch.tensor([count], dtype=torch.int64, device=device)
    parts = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, mine)
    return [int(p.item()) for p in parts]


def gather_queries(queries: Tensor, counts: list[int]) -> Tensor:
    """The queries of every rank, concatenated in rank order: (sum(counts), C).

    ``counts[r]`` is rank r's number of queries; unequal counts are padded for the
    collective and trimmed after it.
    """
    if len(counts) == 1:
        return queries
    largest = max(counts)
    padded = queries.new_zeros((largest, queries.shape[1]))  # (max n, C)
    padded[: queries.shape[0]] = queries
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])  # (N, C)


def all_reduce_sum(t: Tensor) -> Tensor:
    """``t`` summed over the ranks (in place; unchanged on a single process)."""
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def retarget_cosine(scheduler: torch.optim.lr_scheduler.CosineAnnealingLR, epochs: int) -> None:
    """Give a restored cosine schedule a new length (a resumed run given more epochs): the
    learning rate is set to the closed form at the current epoch, from which the scheduler's
    own recursive steps follow the new curve."""
    if scheduler.T_max == epochs:
        return
    scheduler.T_max = epochs
    t = min(scheduler.last_epoch, epochs)
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
        eta_min = scheduler.eta_min
        group["lr"] = eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / epochs)) / 2


def shuffle_seed(seed: int, epoch: int, rank: int) -> int:
    """The local shuffle seed of one rank in one epoch."""
    return int(np.random.SeedSequence((seed, epoch, rank)).generate_state(1)[0])


# --------------------------------------------------------------------------------------------
# The worker loop
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopSpec:
    """Everything the worker loop needs, built once by the driver; pickled to the workers."""

    preset: Preset
    batch_per_worker: int
    checkpoint_every: int
    shuffle_buffer: int
    threads: int
    use_gpu: bool
    has_val: bool = False
    events: Any = None  # ray.util.queue.Queue: rank 0 puts one record per epoch
    probe: StepProbe | None = None


@dataclass
class _State:
    """Where training stands: restored from a checkpoint or fresh."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps over the run
    batch_in_epoch: int = 0  # steps already done in epoch `epoch` (a mid-epoch checkpoint)
    history: list[dict[str, float]] = field(default_factory=list)


class _Worker:
    """One rank's model, optimizer and data; built inside the Ray Train worker."""

    def __init__(self, spec: LoopSpec, restored: Checkpoint | None):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.spec = spec
        self.cfg = spec.preset.model
        self.rank = context.get_world_rank()
        self.device = ray.train.torch.get_device()
        torch.set_num_threads(spec.threads)
        model = build_model(self.cfg, seed=spec.preset.optim.seed)  # same on every rank
        if restored is not None:
            model.load_state_dict(restored.model_state)
        if spec.use_gpu:
            model = model.to(memory_format=torch.channels_last)
        # broadcast_buffers: BN running statistics follow rank 0's, as usual with DDP. The
        # memory is a buffer too; rank 0 re-broadcasting it is a no-op, since every rank
        # applies the same update to the same gathered queries.
        self.model = ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"broadcast_buffers": True}
        )
        self.module: MNAD = getattr(self.model, "module", self.model)
        optim = spec.preset.optim
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=optim.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=optim.epochs
        )
        self.state = _State()
        if restored is not None:
            self.optimizer.load_state_dict(restored.optimizer_state)
            self.scheduler.load_state_dict(restored.scheduler_state)
            retarget_cosine(self.scheduler, optim.epochs)
            self.state = _State(
                epoch=restored.epoch,
                step=restored.step,
                batch_in_epoch=int(restored.extra.get("batch_in_epoch", 0)),
                history=list(restored.extra.get("history", [])),
            )
        self.train_shard = ray.train.get_dataset_shard("train")
        self.val_shard = ray.train.get_dataset_shard("val") if spec.has_val else None

    def autocast(self) -> Any:
        if self.spec.use_gpu:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def inputs(self, clips: Tensor) -> tuple[Tensor, Tensor]:
        x, target = clip_inputs(clips.to(self.device, non_blocking=True), self.cfg)
        if self.spec.use_gpu:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, target

    def batches(self, shard: Any, epoch: int, shuffle: bool) -> Iterator[dict[str, Tensor]]:
        return iter(
            shard.iter_torch_batches(
                batch_size=self.spec.batch_per_worker,
                drop_last=shuffle,
                local_shuffle_buffer_size=(self.spec.shuffle_buffer or None) if shuffle else None,
                local_shuffle_seed=shuffle_seed(self.spec.preset.optim.seed, epoch, self.rank),
                pin_memory=self.spec.use_gpu,
            )
        )

    # -- one step ------------------------------------------------------------------------

    def step(self, clips: Tensor, counts: list[int]) -> Tensor:
        """One optimisation step on this rank's clips, then the global memory update.
        Returns the (4,) detached losses."""
        x, target = self.inputs(clips)
        with self.autocast():
            out: TrainOutput = self.model(x, update_memory=False)
        losses = training_losses(
            out.prediction, target, out.compactness, out.separateness, self.cfg
        )
        self.optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        self.optimizer.step()
        self.state.step += 1
        self.update_memory(out.queries, counts)
        return losses.stacked()

    def update_memory(self, queries: Tensor, counts: list[int]) -> None:
        """The paper's update (Eq. 3-5) on the queries of the whole global batch."""
        per_clip = queries.shape[0] // counts[self.rank]  # h * w queries per clip
        gathered = gather_queries(queries, [n * per_clip for n in counts])  # (N, C)
        before = self.module.memory.items.detach().clone() if self.spec.probe else None
        self.module.memory.update_(gathered)
        if self.spec.probe is not None:
            record = StepRecord(
                queries.detach().cpu(),
                gathered.detach().cpu(),
                before.cpu(),
                self.module.memory.items.detach().cpu().clone(),
            )
            self.spec.probe.on_step(self.rank, self.state.step, record)

    # -- one epoch -----------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (the rest of it, after a mid-epoch restore); its metrics."""
        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        sums = torch.zeros(4, device=self.device)
        clips_seen = torch.zeros(1, device=self.device)
        batches = self.batches(self.train_shard, epoch, shuffle=True)
        skip, done = self.state.batch_in_epoch, 0
        start, cpu_start = time.perf_counter(), time.process_time()
        while True:
            batch = next(batches, None)
            counts = all_gather_counts(0 if batch is None else len(batch["clip"]), self.device)
            if min(counts) == 0:
                break  # every rank ends the epoch at the same step, or a collective would hang
            done += 1
            if done <= skip:
                continue  # done before the checkpoint this attempt resumed from
            sums += self.step(batch["clip"], counts) * counts[self.rank]
            clips_seen += counts[self.rank]
            self.state.batch_in_epoch = done
            if self.spec.checkpoint_every and self.state.step % self.spec.checkpoint_every == 0:
                self.report({"epoch": epoch, "step": self.state.step}, epoch_done=False)
        seconds = time.perf_counter() - start
        cpu = torch.tensor([time.process_time() - cpu_start], device=self.device)
        sums = all_reduce_sum(torch.cat([sums, clips_seen, cpu]))
        clips, cpu_seconds = float(sums[4]), float(sums[5])
        means = (sums[:4] / max(clips, 1.0)).tolist()
        return {
            "epoch": epoch + 1,
            "step": self.state.step,
            **dict(zip(LOSS_NAMES, means, strict=True)),
            "lr": lr,
            "clips": clips,
            "seconds": seconds,
            "clips_per_s": clips / seconds if seconds > 0 else 0.0,
            "cpu_seconds": cpu_seconds,  # all ranks' processes: a load-independent cost
        }

    @torch.no_grad()
    def validate(self, epoch: int) -> float | None:
        """Mean loss over this rank's validation clips, reduced over the ranks; memory and
        BN statistics are read, not changed (eval mode, no update)."""
        if self.val_shard is None:
            return None
        module = self.module  # unwrapped: eval needs no collectives
        module.eval()
        sums = torch.zeros(2, device=self.device)
        for batch in self.batches(self.val_shard, epoch, shuffle=False):
            x, target = self.inputs(batch["clip"])
            with self.autocast():
                enc = module.encode(x)
                dec = module.decode(enc)
            items = module.memory.items
            nearest, second = mem.nearest_two(dec.queries, items)
            losses = training_losses(
                dec.prediction,
                target,
                mem.compactness(dec.queries, items, nearest),
                mem.separateness(dec.queries, items, nearest, second),
                self.cfg,
            )
            sums += torch.stack([losses.total.float() * len(x), torch.tensor(float(len(x)))])
        module.train()
        sums = all_reduce_sum(sums)
        return float(sums[0] / sums[1]) if sums[1] > 0 else None

    # -- checkpoints ---------------------------------------------------------------------

    def report(self, metrics: dict[str, Any], epoch_done: bool) -> None:
        """ray.train.report from every rank; rank 0 attaches a checkpoint of the state."""
        import ray.train

        state = self.state
        name = f"checkpoint-e{state.epoch:04d}-s{state.step:08d}"
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        extra = {"batch_in_epoch": 0 if epoch_done else state.batch_in_epoch}
        extra["history"] = state.history
        with tempfile.TemporaryDirectory(prefix="mnad-ckpt-") as tmp:
            path = save_checkpoint(
                Path(tmp) / "checkpoint",
                self.module,
                self.spec.preset,
                self.optimizer,
                self.scheduler,
                epoch=state.epoch,
                step=state.step,
                extra=extra,
            )
            checkpoint = ray.train.Checkpoint.from_directory(path)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


def train_loop(config: dict[str, Any]) -> list[dict[str, float]]:
    """The Ray Train worker loop (``train_loop_per_worker``); ``config["spec"]`` is a
    :class:`LoopSpec`. Returns the per-epoch metrics of the whole run (rank 0's is the
    ``Result.return_value``)."""
    import ray.train

    spec: LoopSpec = config["spec"]
    restored = ray.train.get_checkpoint()
    checkpoint = None
    if restored is not None:
        with restored.as_directory() as folder:
            checkpoint = load_checkpoint(folder)
    worker = _Worker(spec, checkpoint)
    state = worker.state
    if spec.probe is not None:
        spec.probe.on_start(worker.rank, state.epoch, state.step)
    for epoch in range(state.epoch, spec.preset.optim.epochs):
        record = worker.train_epoch(epoch)
        worker.scheduler.step()
        val = worker.validate(epoch)
        if val is not None:
            record["val_loss"] = val
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        state.history.append(record)
        worker.report(record, epoch_done=True)
        if worker.rank == 0 and spec.events is not None:
            spec.events.put(record)  # after the checkpoint is stored: never an epoch twice
    return state.history


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    run_id: str  # MLflow run
    experiment_id: str
    tracking_uri: str
    name: str  # Ray Train run name, under OUTPUT/train
    checkpoint: str  # the final checkpoint (mnad.checkpoint format) in Ray Train's storage
    model_name: str
    model_version: str
    model_uri: str  # models:/<name>/<version>
    epochs: list[dict[str, float]]  # per-epoch metrics, the whole run (resumed parts too)


@dataclass(frozen=True)
class RunRecord:
    """OUTPUT/train/NAME/mnad-train.json: how to continue a run whose driver died."""

    name: str
    run_id: str
    experiment: str
    tracking_uri: str
    config: dict[str, Any]


#: Options that --resume takes from the command line; all others come from the run record.
RESUME_OVERRIDES = (
    "epochs",
    "workers",
    "cpus_per_worker",
    "gpus_per_worker",
    "max_failures",
    "shuffle_buffer",
    "quiet",
    "probe",
)


def run_train(config: TrainConfig) -> TrainResult:
    """Train MNAD on DATA's training videos with Ray Train; see the module docstring."""
    from pipelines.clips import training_clips
    from pipelines.schema import validate_data
    from pipelines.tracking import check_tracking, resolve_tracking_uri, start_run

    storage = _join(config.output, "train")
    record = _find_record(storage, config.name) if config.resume else None
    if record is not None:
        config = _resumed_config(config, record)
    summary = validate_data(config.data, splits=("train",))
    preset = config.resolved_preset()
    _check_frames(preset.model, summary.shape, config.data)
    tracking_uri = record.tracking_uri if record else resolve_tracking_uri(config.tracking_uri)
    check_tracking(tracking_uri)
    experiment = record.experiment if record else (config.experiment or summary.dataset)
    name = record.name if record else (config.name or _default_name(summary.dataset, preset))
    if record is None:
        _check_new_name(storage, name)
    with ray_session(config.quiet, log_to_driver=False):
        config = _resolve_cpus(config)
        _check_placement(config)
        clips = training_clips(
            config.data,
            preset.model.clip_length,
            summary.shape,
            seed=preset.optim.seed,
            val_fraction=config.val_fraction,
            chunk_clips=config.chunk_clips,
        )
        _check_enough_clips(clips.num_train_clips, preset.optim.batch_size, config.workers)
        params = {**config.to_params(), "preset": preset.to_dict(), "dataset": summary.dataset}
        params["train_videos"] = len(clips.train_videos)
        params["val_videos"] = ",".join(v.video_id for v in clips.val_videos) or "-"
        tags = {"mnad.stage": "train", "mnad.ray_run": name, "mnad.storage": storage}
        run_id = record.run_id if record else None
        with start_run(tracking_uri, experiment, name, params, tags, run_id=run_id) as run:
            if record is None:
                fresh = RunRecord(name, run.run_id, experiment, tracking_uri, config.to_params())
                _write_record(storage, fresh)
            progress = _Progress(run, preset.optim.epochs, config.quiet)
            result = _fit(config, preset, clips, storage, name, progress)
            history = list(result.return_value or progress.records)
            with result.checkpoint.as_directory() as final:
                run.log_artifacts(final, "checkpoint")
                aliases = ("latest",) + ((config.alias,) if config.alias else ())
                info = _register(
                    run, final, f"mnad-{summary.dataset}", preset.optim.epochs, aliases
                )
            checkpoint_path = result.checkpoint.path
    if not config.quiet:
        print(
            f"mnad train: registered {info.uri} (aliases {', '.join(aliases)}); "
            f"MLflow run {run.run_id}; "
            f"checkpoint {checkpoint_path}",
            flush=True,
        )
    return TrainResult(
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        tracking_uri=tracking_uri,
        name=name,
        checkpoint=checkpoint_path,
        model_name=info.name,
        model_version=info.version,
        model_uri=info.uri,
        epochs=history,
    )


def _fit(
    config: TrainConfig,
    preset: Preset,
    clips: Any,
    storage: str,
    name: str,
    progress: _Progress,
) -> ray.train.Result:
    """Run the TorchTrainer; epoch records reach ``progress`` while it runs."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    events = Queue(actor_options={"num_cpus": 0})
    spec = LoopSpec(
        preset=preset,
        batch_per_worker=preset.optim.batch_size // config.workers,
        checkpoint_every=config.checkpoint_every,
        shuffle_buffer=config.shuffle_buffer,
        threads=max(1, int(config.cpus_per_worker)),
        use_gpu=config.use_gpu,
        has_val=clips.val is not None,
        events=events,
        probe=config.probe,
    )
    resources = {"CPU": config.cpus_per_worker}
    if config.use_gpu:
        resources["GPU"] = config.gpus_per_worker
    datasets = {"train": clips.train}
    if clips.val is not None:
        datasets["val"] = clips.val
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"spec": spec},
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.workers, use_gpu=config.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
        ),
        datasets=datasets,
    )
    try:
        # fit() blocks; it runs in a thread so that this one logs each epoch as it ends.
        with ThreadPoolExecutor(1, thread_name_prefix="mnad-fit") as pool:
            future = pool.submit(trainer.fit)
            for record in _drain(events, future.done):
                progress.epoch(record)
            return future.result()
    finally:
        events.shutdown()


def _drain(events: Any, finished: Callable[[], bool]) -> Iterator[dict[str, float]]:
    """Records from the queue until ``finished()`` and the queue is empty."""
    from ray.util.queue import Empty

    while True:
        done = finished()
        try:
            yield events.get(timeout=0.5)
        except Empty:
            if done:
                return


class _Progress:
    """Per-epoch MLflow metrics and the one-line progress report."""

    def __init__(self, run: Any, epochs: int, quiet: bool):
        self.run = run
        self.epochs = epochs
        self.quiet = quiet
        self.records: list[dict[str, float]] = []
        self.last = time.monotonic()

    def epoch(self, record: dict[str, float]) -> None:
        self.records.append(record)
        keys = (*LOSS_NAMES, "lr", "clips_per_s", "val_loss")
        metrics = {k: record[k] for k in keys if k in record}
        self.run.log_metrics(metrics, step=int(record["epoch"]))
        now = time.monotonic()
        seconds, self.last = now - self.last, now
        if self.quiet:
            return
        k = int(record["epoch"])
        val = f"  val {record['val_loss']:.4f}" if "val_loss" in record else ""
        print(
            f"mnad train: epoch {k}/{self.epochs}  loss {record['loss']:.4f} "
            f"(pred {record['prediction_error']:.4f}, compact {record['compactness']:.4f}, "
            f"separate {record['separateness']:.4f}){val}  {record['clips_per_s']:.0f} clips/s"
            f"  {_duration(seconds * (self.epochs - k))} left",
            flush=True,
        )


def _register(
    run: Any, checkpoint: str, model_name: str, step: int, aliases: tuple[str, ...]
) -> Any:
    from pipelines.tracking import register_checkpoint

    return register_checkpoint(run, checkpoint, model_name, aliases=aliases, step=step)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


# --- checks before any work -----------------------------------------------------------------


def _check_frames(model: ModelConfig, shape: Any, data: str) -> None:
    want = (model.height, model.width, model.channels)
    if tuple(shape) != want:
        raise UserError(
            f"{data}: frames are {shape.height}x{shape.width}x{shape.channels}, the preset "
            f"takes {want[0]}x{want[1]}x{want[2]}: re-run `mnad ingest --size {want[0]} "
            f"{want[1]} --channels {want[2]}` or choose another preset"
        )


def _resolve_cpus(config: TrainConfig) -> TrainConfig:
    """``cpus_per_worker`` 0: the cluster's CPUs split evenly over the workers (at least 1)."""
    if config.cpus_per_worker:
        return config
    import ray

    cpus = ray.cluster_resources().get("CPU", 1.0)
    return dataclasses.replace(config, cpus_per_worker=max(1, int(cpus // config.workers)))


def _check_placement(config: TrainConfig) -> None:
    """UserError if the cluster cannot place the workers (its total resources)."""
    import ray

    have = ray.cluster_resources()
    need = {"CPU": config.workers * config.cpus_per_worker}
    if config.use_gpu:
        need["GPU"] = config.workers * config.gpus_per_worker
    for resource, amount in need.items():
        if amount > have.get(resource, 0.0) + 1e-9:
            per = config.cpus_per_worker if resource == "CPU" else config.gpus_per_worker
            raise UserError(
                f"{config.workers} workers x {per:g} {resource} need {amount:g} {resource}; "
                f"the Ray cluster has {have.get(resource, 0.0):g}: pass fewer --workers"
            )


def _check_enough_clips(clips: int, batch_size: int, workers: int) -> None:
    if clips // workers < batch_size // workers:
        raise UserError(
            f"{clips} training clips are fewer than one batch of {batch_size}: "
            "pass a smaller --batch-size or more data"
        )


# --- run names, records and --resume --------------------------------------------------------


def _default_name(dataset: str, preset: Preset) -> str:
    return f"{dataset}-{preset.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _join(base: str, *parts: str) -> str:
    from pipelines.schema import join

    return join(base if "://" in base else os.path.abspath(base), *parts)


def _check_new_name(storage: str, name: str) -> None:
    from pipelines.schema import resolve

    fs, path = resolve(_join(storage, name))
    import pyarrow.fs as pafs

    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        raise UserError(
            f"a run named {name!r} exists under {storage}: pass --resume to continue it, "
            "or another --name"
        )


def _write_record(storage: str, record: RunRecord) -> None:
    from pipelines.schema import resolve

    fs, path = resolve(_join(storage, record.name, RUN_RECORD))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(dataclasses.asdict(record), indent=2, default=str).encode())


def _find_record(storage: str, name: str | None) -> RunRecord:
    """The record of run ``name``, or of the latest run under ``storage``."""
    import pyarrow.fs as pafs

    from pipelines.schema import resolve

    fs, root = resolve(storage)
    if name is None:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        runs = [i for i in infos if i.type == pafs.FileType.Directory]
        found = [(fs.get_file_info(f"{i.path}/{RUN_RECORD}"), i.base_name) for i in runs]
        found = [(info.mtime, run) for info, run in found if info.type == pafs.FileType.File]
        if not found:
            raise UserError(f"--resume: no run to continue under {storage}")
        name = max(found)[1]
    fs, path = resolve(_join(storage, name, RUN_RECORD))
    try:
        with fs.open_input_stream(path) as f:
            raw = json.loads(f.read())
        return RunRecord(**raw)
    except FileNotFoundError:
        raise UserError(f"--resume: no run {name!r} under {storage}") from None
    except (json.JSONDecodeError, TypeError) as err:
        raise UserError(f"--resume: {path} is not a run record ({err})") from None


def _resumed_config(config: TrainConfig, record: RunRecord) -> TrainConfig:
    """The recorded run's config, with this invocation's execution options."""
    stored = {k: v for k, v in record.config.items() if k not in RESUME_OVERRIDES}
    if os.path.abspath(stored["data"]) != os.path.abspath(config.data) and "://" not in config.data:
        raise UserError(f"run {record.name!r} trained on {stored['data']}, not {config.data}")
    current = {k: getattr(config, k) for k in RESUME_OVERRIDES}
    if current["epochs"] is None:
        current["epochs"] = record.config.get("epochs")
    return TrainConfig(**{**stored, **current, "resume": True, "name": record.name})
