"""The training loop of one DDP rank (runs in the Ray Train workers: torch, :mod:`mnad` and
``ray.train`` only; no MLflow, no driver code).

Each worker (:func:`train_loop`) takes its part of every global batch: with the clips in
memory (:class:`pipelines.train.data.ClipTable`), its slice of each batch of the epoch's
permutation of all the clips, drawn from (seed, epoch); else its shard of the streamed
clips. Per step: forward on its part of the global batch with the memory read but not
updated, every BatchNorm normalising with the statistics of the global batch when there
are several ranks (:func:`pipelines.train.collectives.sync_batchnorm`); the loss of
the paper (MSE + lambda_c * compactness + lambda_s * separateness, Sec. 3.3,
:mod:`mnad.losses`); backward with DDP averaging the gradients; Adam. Then the memory update
(Sec. 3.2, Eq. 3-5) on the queries of the WHOLE global batch: every rank gathers the
queries of every rank, in rank order (:mod:`pipelines.train.collectives`), and applies the
update rule to them. Every rank so holds the same memory after every step, equal to what
one process computes on the global batch; no rank drifts, and nothing is averaged. (The
weights v of Eq. 4 are normalised over all the queries given, which is why the update
cannot be done per rank and then averaged.) The learning rate follows cosine annealing per
epoch (the paper's ``Train.py``). With the clips in memory a run of W workers so takes the
steps one process takes on the same global batches: the same weights, BatchNorm statistics
and memory, to float rounding.

Checkpoints (:mod:`mnad.checkpoint`'s format) are reported from rank 0 at the end of every
epoch and every ``checkpoint_every`` steps. After a worker failure Ray Train restarts the
workers and the loop resumes from the latest checkpoint: model, memory, optimizer,
scheduler, epoch and the batches already done in it.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from mnad import memory as mem
from mnad.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mnad.clips import ClipInput, model_clips
from mnad.config import Preset
from mnad.losses import LOSS_NAMES, training_losses
from mnad.network import MNAD, TrainOutput, build_model
from pipelines.train.collectives import (
    all_gather_counts,
    all_reduce_sum,
    gather_queries,
    sync_batchnorm,
)
from pipelines.train.data import ClipSource, InMemoryClips, epoch_order, rank_batches


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


@dataclass(frozen=True)
class WorkerPlan:
    """Everything the worker loop needs, built once by the driver; pickled to the workers."""

    preset: Preset
    batch_per_worker: int
    checkpoint_every: int
    shuffle_buffer: int
    threads: int
    use_gpu: bool
    has_val: bool = False
    events: Any = None  # ray.util.queue.Queue: each rank's node at start, rank 0's epochs
    probe: StepProbe | None = None
    in_memory: InMemoryClips | None = None  # None: the clips stream from the dataset shards
    sync_batchnorm: bool = True  # BatchNorm statistics of the global batch (several ranks)


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


@dataclass
class _State:
    """Where training stands: restored from a checkpoint or fresh."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps over the run
    batch_in_epoch: int = 0  # steps already done in epoch `epoch` (a mid-epoch checkpoint)
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def of(cls, restored: Checkpoint | None) -> _State:
        if restored is None:
            return cls()
        return cls(
            epoch=restored.epoch,
            step=restored.step,
            batch_in_epoch=int(restored.extra.get("batch_in_epoch", 0)),
            history=list(restored.extra.get("history", [])),
        )


class _Worker:
    """One rank's model, optimizer and data; built inside the Ray Train worker."""

    def __init__(self, plan: WorkerPlan, restored: Checkpoint | None):
        import ray.train
        import ray.train.torch

        self.plan = plan
        self.cfg = plan.preset.model
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        torch.set_num_threads(plan.threads)
        model = build_model(self.cfg, seed=plan.preset.optim.seed)  # same on every rank
        if restored is not None:
            model.load_state_dict(restored.model_state)
        if self.world > 1 and plan.sync_batchnorm:
            model = sync_batchnorm(model, self.device)  # same state_dict names
        if plan.use_gpu:
            model = model.to(memory_format=torch.channels_last)
        # broadcast_buffers: BN running statistics follow rank 0's, as usual with DDP (with
        # synchronised BatchNorm they are the same on every rank anyway). The memory is a
        # buffer too; rank 0 re-broadcasting it is a no-op, since every rank applies the
        # same update to the same gathered queries.
        self.model = ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"broadcast_buffers": True}
        )
        self.module: MNAD = getattr(self.model, "module", self.model)
        optim = plan.preset.optim
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=optim.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=optim.epochs
        )
        if restored is not None:
            self.optimizer.load_state_dict(restored.optimizer_state)
            self.scheduler.load_state_dict(restored.scheduler_state)
            retarget_cosine(self.scheduler, optim.epochs)
        self.state = _State.of(restored)
        self.train_source: ClipSource | None = None
        self.val_source: ClipSource | None = None
        self.train_shard = self.val_shard = None
        if plan.in_memory is not None:
            self.train_source = plan.in_memory.train.open()
            if plan.in_memory.val is not None:
                self.val_source = plan.in_memory.val.open()
        else:
            self.train_shard = ray.train.get_dataset_shard("train")
            self.val_shard = ray.train.get_dataset_shard("val") if plan.has_val else None

    def autocast(self) -> Any:
        if self.plan.use_gpu:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def inputs(self, clips: Tensor) -> ClipInput:
        """uint8 clips (B, T*C, H, W) as the model's input and target, on this rank's device."""
        x, target = model_clips(clips.to(self.device, non_blocking=True), self.cfg)
        if self.plan.use_gpu:
            x = x.contiguous(memory_format=torch.channels_last)
        return ClipInput(x, target)

    def train_batches(self, epoch: int, skip: int) -> Iterator[Tensor]:
        """This rank's parts of the global batches of epoch ``epoch`` after the first
        ``skip`` (done before the checkpoint this attempt resumed from): uint8 clips."""
        if self.train_source is not None:
            order = epoch_order(self.train_source.num_clips, self.plan.preset.optim.seed, epoch)
            global_batch = self.plan.batch_per_worker * self.world
            parts = rank_batches(order, global_batch, self.rank, self.world, drop_last=True)
            return self.source_batches(self.train_source, parts[skip:])
        batches = self.shard_batches(self.train_shard, epoch, shuffle=True)
        for _ in range(skip):
            next(batches, None)
        return batches

    def val_batches(self, epoch: int) -> Iterator[Tensor]:
        """This rank's share of the validation clips, in order: uint8 clips."""
        if self.val_source is not None:
            order = np.arange(self.val_source.num_clips)
            global_batch = self.plan.batch_per_worker * self.world
            parts = rank_batches(order, global_batch, self.rank, self.world, drop_last=False)
            return self.source_batches(self.val_source, parts)
        if self.val_shard is None:
            return iter(())
        return self.shard_batches(self.val_shard, epoch, shuffle=False)

    @staticmethod
    def source_batches(source: ClipSource, parts: list[np.ndarray]) -> Iterator[Tensor]:
        for ids in parts:
            yield torch.from_numpy(source.clips(ids))

    def shard_batches(self, shard: Any, epoch: int, shuffle: bool) -> Iterator[Tensor]:
        batches = shard.iter_torch_batches(
            batch_size=self.plan.batch_per_worker,
            drop_last=shuffle,
            local_shuffle_buffer_size=(self.plan.shuffle_buffer or None) if shuffle else None,
            local_shuffle_seed=shuffle_seed(self.plan.preset.optim.seed, epoch, self.rank),
            pin_memory=self.plan.use_gpu,
        )
        return (batch["clip"] for batch in batches)

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
        before = self.module.memory.items.detach().clone() if self.plan.probe else None
        self.module.memory.update_(gathered)
        if self.plan.probe is not None:
            record = StepRecord(
                queries.detach().cpu(),
                gathered.detach().cpu(),
                before.cpu(),
                self.module.memory.items.detach().cpu().clone(),
            )
            self.plan.probe.on_step(self.rank, self.state.step, record)

    # -- one epoch -----------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (the rest of it, after a mid-epoch restore); its metrics."""
        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        sums = torch.zeros(4, device=self.device)
        clips_seen = torch.zeros(1, device=self.device)
        done = self.state.batch_in_epoch
        batches = self.train_batches(epoch, skip=done)
        start, cpu_start = time.perf_counter(), time.process_time()
        while True:
            batch = next(batches, None)
            counts = all_gather_counts(0 if batch is None else len(batch), self.device)
            if min(counts) == 0:
                break  # every rank ends the epoch at the same step, or a collective would hang
            done += 1
            sums += self.step(batch, counts) * counts[self.rank]
            clips_seen += counts[self.rank]
            self.state.batch_in_epoch = done
            if self.plan.checkpoint_every and self.state.step % self.plan.checkpoint_every == 0:
                self.report({"epoch": epoch, "step": self.state.step}, epoch_done=False)
        seconds = time.perf_counter() - start
        cpu = torch.tensor([time.process_time() - cpu_start], device=self.device)
        sums = all_reduce_sum(torch.cat([sums, clips_seen, cpu]))
        return _epoch_record(epoch, self.state.step, lr, sums, seconds)

    @torch.no_grad()
    def validate(self, epoch: int) -> float | None:
        """Mean loss over this rank's validation clips, reduced over the ranks; memory and
        BN statistics are read, not changed (eval mode, no update)."""
        if not self.plan.has_val:
            return None
        module = self.module  # unwrapped: eval needs no collectives
        module.eval()
        sums = torch.zeros(2, device=self.device)
        for batch in self.val_batches(epoch):
            x, target = self.inputs(batch)
            with self.autocast():
                dec = module.decode(module.encode(x))
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
                self.plan.preset,
                self.optimizer,
                self.scheduler,
                epoch=state.epoch,
                step=state.step,
                extra=extra,
            )
            checkpoint = ray.train.Checkpoint.from_directory(path)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


def _epoch_record(
    epoch: int, step: int, lr: float, sums: Tensor, seconds: float
) -> dict[str, float]:
    """An epoch's metrics from ``sums`` (6,), reduced over the ranks: the four loss sums
    weighted by clips, the clips and the CPU seconds."""
    clips, cpu_seconds = float(sums[4]), float(sums[5])
    means = (sums[:4] / max(clips, 1.0)).tolist()
    return {
        "epoch": epoch + 1,
        "step": step,
        **dict(zip(LOSS_NAMES, means, strict=True)),
        "lr": lr,
        "clips": clips,
        "seconds": seconds,
        "clips_per_s": clips / seconds if seconds > 0 else 0.0,
        "cpu_seconds": cpu_seconds,  # all ranks' processes: a load-independent cost
    }


def train_loop(config: dict[str, Any]) -> list[dict[str, float]]:
    """The Ray Train worker loop (``train_loop_per_worker``); ``config["plan"]`` is a
    :class:`WorkerPlan`. Returns the per-epoch metrics of the whole run (rank 0's is the
    ``Result.return_value``)."""
    import ray
    import ray.train

    plan: WorkerPlan = config["plan"]
    restored = ray.train.get_checkpoint()
    checkpoint = None
    if restored is not None:
        with restored.as_directory() as folder:
            checkpoint = load_checkpoint(folder)
    worker = _Worker(plan, checkpoint)
    state = worker.state
    if plan.events is not None:
        node = ray.get_runtime_context().get_node_id()
        plan.events.put({"rank": worker.rank, "node": node})
    if plan.probe is not None:
        plan.probe.on_start(worker.rank, state.epoch, state.step)
    for epoch in range(state.epoch, plan.preset.optim.epochs):
        record = worker.train_epoch(epoch)
        worker.scheduler.step()
        val = worker.validate(epoch)
        if val is not None:
            record["val_loss"] = val
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        state.history.append(record)
        worker.report(record, epoch_done=True)
        if worker.rank == 0 and plan.events is not None:
            # After report(): a worker restarted from an earlier checkpoint (its node died
            # before the controller registered this one) sends this epoch again.
            plan.events.put(record)
    return state.history


__all__ = [
    "StepProbe",
    "StepRecord",
    "WorkerPlan",
    "retarget_cosine",
    "shuffle_seed",
    "train_loop",
]
