"""Distributed training that equals one process: BatchNorm synchronised over a real gloo group,
the global per-epoch shuffle of the clips held in memory, and a real two-worker Ray Train fit
checked against a single process that takes the concatenated global batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp
from torch import nn

from mnad.checkpoint import load_checkpoint
from mnad.clips import model_clips
from mnad.config import Preset
from mnad.losses import training_losses
from mnad.network import build_model, fold_batchnorm
from pipelines.train.collectives import SyncBatchNorm2d, sync_batchnorm
from pipelines.train.data import (
    ClipSource,
    ClipTable,
    InMemoryClips,
    epoch_order,
    list_videos,
    rank_batches,
    video_frames,
)
from pipelines.train.worker import WorkerPlan, train_loop

T = 5  # the tiny preset's clip: 4 inputs and the target

# --- SyncBatchNorm2d over a real two-process gloo group ---------------------------------------


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 2, 3, padding=1), nn.BatchNorm2d(2),
    )  # fmt: skip


def _global_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(6, 3, 5, 5, generator=generator) * 3 + 2  # far from zero mean


def _bn_worker(rank: int, store: str, out: str) -> None:
    """Two steps of DDP on this rank's half of the batch, with and without synchronised
    BatchNorm; the gradients and states go to ``out``."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    runs = {}
    for sync in (True, False):
        net = sync_batchnorm(_net(), torch.device("cpu")) if sync else _net()
        model = nn.parallel.DistributedDataParallel(net, broadcast_buffers=False)
        for _ in range(2):
            model.zero_grad()
            (model(_global_batch()[rank * 3 : (rank + 1) * 3]) ** 2).mean().backward()
        grads = {name: p.grad for name, p in net.named_parameters()}
        runs[sync] = {"grads": grads, "state": net.state_dict()}
    torch.save(runs, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_synchronised_batchnorm_equals_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    reference = _net()
    for _ in range(2):
        reference.zero_grad()
        (reference(_global_batch()) ** 2).mean().backward()
    torch_mp.spawn(_bn_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1)]
    for rank in (ranks[0][True], ranks[1][True]):
        assert list(rank["state"]) == list(reference.state_dict())  # a plain BN state_dict
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(rank["state"][name], value, rtol=1e-5, atol=1e-6)
        for name, p in reference.named_parameters():
            torch.testing.assert_close(rank["grads"][name], p.grad, rtol=1e-4, atol=1e-6)
    # Without it, each rank's statistics are those of its half: not the batch's.
    plain = ranks[0][False]["state"]["1.running_mean"]
    assert not torch.allclose(plain, reference.state_dict()["1.running_mean"], atol=1e-3)


def test_synchronised_batchnorm_keeps_the_models_state_and_is_plain_on_one_process(
    tiny: Preset,
) -> None:
    model = build_model(tiny.model, seed=0)
    names = list(model.state_dict())
    weight = model.encoder.stage1[1].weight
    sync_batchnorm(model, torch.device("cpu"))
    assert isinstance(model.encoder.stage1[1], SyncBatchNorm2d)
    assert model.encoder.stage1[1].weight is weight  # the same parameters, not copies
    assert list(model.state_dict()) == names
    x = torch.rand(2, 4, 16, 16) * 2 - 1
    plain = build_model(tiny.model, seed=0)
    torch.testing.assert_close(model(x).prediction, plain(x).prediction)  # no process group
    restored = build_model(tiny.model, seed=1)
    restored.load_state_dict(model.state_dict())  # strict: a plain model takes its state
    folded = fold_batchnorm(restored)
    torch.testing.assert_close(folded(x).prediction, model.eval()(x).prediction, atol=1e-5, rtol=0)


# --- the global shuffle -------------------------------------------------------------------------


def test_an_epoch_order_mixes_every_video_into_every_batch_and_repeats_by_seed() -> None:
    counts = [180, 150, 120, 180, 150, 180, 120, 150]  # eight videos
    source = ClipSource([np.zeros((n + T - 1, 2, 2, 1), np.uint8) for n in counts], counts, T)
    order = epoch_order(source.num_clips, seed=3, epoch=0)
    assert sorted(order.tolist()) == list(range(source.num_clips))  # every clip once
    batches = rank_batches(order, 64, 0, 1, drop_last=True)
    videos_per_batch = [len(np.unique(source.video_of(ids))) for ids in batches]
    assert min(videos_per_batch) >= 7  # each batch draws on (nearly) every video
    assert np.array_equal(epoch_order(source.num_clips, 3, 0), order)  # repeatable by seed
    assert not np.array_equal(epoch_order(source.num_clips, 3, 1), order)  # a new epoch
    assert not np.array_equal(epoch_order(source.num_clips, 4, 0), order)  # another seed


def test_rank_parts_concatenate_to_the_global_batches() -> None:
    order = np.random.default_rng(0).permutation(23)
    single = rank_batches(order, 4, 0, 1, drop_last=True)
    parts = [rank_batches(order, 4, r, 2, drop_last=True) for r in (0, 1)]
    assert len(single) == 5 and all(len(p) == 5 for p in parts)  # full batches only
    for b, whole in enumerate(single):
        assert np.array_equal(np.concatenate([parts[0][b], parts[1][b]]), whole)
    every = [rank_batches(order, 4, r, 2, drop_last=False) for r in (0, 1)]
    assert sorted(np.concatenate(every[0] + every[1]).tolist()) == list(range(23))


def test_clip_source_cuts_clips_of_one_video(tiny_data: Path) -> None:
    videos = list_videos(str(tiny_data), "train")
    counts = [v.num_clips(T) for v in videos]
    source = ClipSource([video_frames(v.path, v.frames) for v in videos], counts, T)
    ids = np.array([0, 25, 26, 69, 43])  # first and last of v0, first of v1, last of v3, v2
    clips = source.clips(ids)  # (5, T, 16, 16)
    assert source.video_of(ids).tolist() == [0, 0, 1, 3, 2]
    assert clips[:, :, 0, 0].tolist() == [[v] * T for v in (0, 0, 1, 3, 2)]  # one video each
    firsts = [0, 25, 0, 21, 0]  # the first frame of each clip in its video
    assert clips[:, :, 0, 1].tolist() == [list(range(f, f + T)) for f in firsts]


# --- a real two-worker fit against one process ------------------------------------------------


def _one_process(preset: Preset, source: ClipSource, steps: set[int]) -> dict[int, dict]:
    """The paper's single-process loop on the global batches of every epoch: its state
    after each step in ``steps``."""
    cfg, optim = preset.model, preset.optim
    model = build_model(cfg, seed=optim.seed).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=optim.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=optim.epochs)
    states, step = {}, 0
    for epoch in range(optim.epochs):
        order = epoch_order(source.num_clips, optim.seed, epoch)
        for ids in rank_batches(order, optim.batch_size, 0, 1, drop_last=True):
            x, target = model_clips(torch.from_numpy(source.clips(ids)), cfg)
            out = model(x)  # updates the memory with the batch's queries
            losses = training_losses(out.prediction, target, out.compactness, out.separateness, cfg)
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            optimizer.step()
            step += 1
            if step in steps:
                states[step] = {k: v.clone() for k, v in model.state_dict().items()}
        scheduler.step()
    return states


def _unseen_biases(model: nn.Module) -> set[str]:
    """The biases of the convolutions that a BatchNorm follows. The loss does not depend on
    them (in training mode the BatchNorm takes the batch mean out), so their gradient is
    float rounding, which Adam scales up to steps of about the learning rate: they, and the
    running means that track them, follow the noise of each process, not the data."""
    names = set()
    for prefix, seq in model.named_modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d | nn.ConvTranspose2d) and isinstance(
                    seq[i + 1], nn.BatchNorm2d
                ):
                    names.add(f"{prefix}.{i}.bias")
    return names


def _assert_equal_states(got: dict, want: dict, skip: set[str]) -> None:
    assert list(got) == list(want)  # the plain model's names
    for name, value in want.items():
        if name in skip:
            continue
        if value.is_floating_point():
            torch.testing.assert_close(got[name], value, rtol=1e-3, atol=1e-4, msg=name)
        else:
            assert torch.equal(got[name], value), name  # num_batches_tracked


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_equal_one_process_on_the_global_batch(
    ray_local, tiny_data: Path, tiny: Preset, tmp_path: Path
) -> None:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    preset = tiny.replace(epochs=2)
    steps = 2 * (70 // 4)  # 70 clips, 4 a global batch, 2 a rank
    videos = list_videos(str(tiny_data), "train")
    table = ClipTable.load(videos, T, fit=None)
    plan = WorkerPlan(
        preset=preset, batch_per_worker=preset.optim.batch_size // 2, checkpoint_every=0,
        shuffle_buffer=0, threads=1, use_gpu=False, in_memory=InMemoryClips(table, None),
    )  # fmt: skip
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"plan": plan},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="sync", storage_path=str(tmp_path)),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        final = load_checkpoint(folder)
    assert (final.epoch, final.step) == (2, steps)

    reference = _one_process(preset, table.open(), {steps})
    unseen = _unseen_biases(build_model(preset.model))
    assert len(unseen) == 18  # one per BatchNorm
    # Everything the loss sees: weights, BatchNorm scales, shifts and running variances,
    # the memory. (The running means follow the unseen biases; that they are the global
    # batch's is the test above.)
    means = {name for name in reference[steps] if name.endswith("running_mean")}
    _assert_equal_states(final.model_state, reference[steps], skip=unseen | means)
    initial = build_model(preset.model, seed=preset.optim.seed).state_dict()
    assert not torch.allclose(reference[steps]["memory.items"], initial["memory.items"])
