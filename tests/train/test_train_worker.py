"""The pieces of the training loop without Ray: clip inputs and losses as the worker takes
them (:mod:`mnad.clips`, :mod:`mnad.losses`), the restored cosine schedule, the per-rank
shuffle seed, and the query gather over a real two-process gloo group."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from mnad.clips import model_clips
from mnad.config import Preset
from mnad.losses import training_losses
from pipelines.train.collectives import all_gather_counts, all_reduce_sum, gather_queries
from pipelines.train.worker import retarget_cosine, shuffle_seed


def test_clip_inputs_split_inputs_and_target_on_the_model_scale(tiny: Preset) -> None:
    clips = torch.tensor([0, 51, 102, 204, 255], dtype=torch.uint8).reshape(1, 5, 1, 1)
    x, target = model_clips(clips.expand(2, 5, 8, 8).clone(), tiny.model)
    assert x.shape == (2, 4, 8, 8) and target.shape == (2, 1, 8, 8)
    assert x[0, :, 0, 0].tolist() == pytest.approx([-1.0, -0.6, -0.2, 0.6])
    assert target[0, 0, 0, 0].item() == 1.0
    recon = dataclasses.replace(tiny.model, task="recon", input_frames=1)
    x, target = model_clips(clips[:, :1].expand(2, 1, 8, 8).clone(), recon)
    assert torch.equal(x, target) and x.shape == (2, 1, 8, 8)


def test_training_loss_is_the_papers_weighted_sum(tiny: Preset) -> None:
    prediction, target = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    losses = training_losses(prediction, target, torch.tensor(2.0), torch.tensor(3.0), tiny.model)
    assert losses.prediction.item() == pytest.approx(0.25)
    assert losses.total.item() == pytest.approx(0.25 + 0.1 * 2.0 + 0.1 * 3.0)
    assert losses.stacked().shape == (4,)


def test_a_restored_cosine_schedule_follows_a_new_length() -> None:
    def schedule(t_max: int, steps: int) -> torch.optim.lr_scheduler.CosineAnnealingLR:
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max)
        for _ in range(steps):
            opt.step()
            sched.step()
        return sched

    resumed = schedule(2, 2)  # a finished 2-epoch run: lr 0
    retarget_cosine(resumed, 4)  # continued to 4 epochs
    fresh = schedule(4, 2)
    for _ in range(3):
        lrs = [sched.optimizer.param_groups[0]["lr"] for sched in (resumed, fresh)]
        assert lrs[0] == pytest.approx(lrs[1], abs=1e-12)
        for sched in (resumed, fresh):
            sched.optimizer.step()
            sched.step()


def test_shuffle_seeds_differ_by_epoch_and_rank_and_repeat() -> None:
    seeds = {shuffle_seed(0, epoch, rank) for epoch in range(3) for rank in range(2)}
    assert len(seeds) == 6
    assert shuffle_seed(0, 1, 1) == shuffle_seed(0, 1, 1)


def test_collectives_are_no_ops_on_one_process() -> None:
    queries = torch.ones(3, 2)
    assert gather_queries(queries, [3]) is queries
    assert all_gather_counts(5, torch.device("cpu")) == [5]
    assert torch.equal(all_reduce_sum(torch.tensor([1.0, 2.0])), torch.tensor([1.0, 2.0]))


def _gather_worker(rank: int, store: str, counts: list[int], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    local = torch.full((counts[rank], 3), float(rank + 1))
    torch.save(gather_queries(local, counts), f"{out}/{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("counts", [[4, 4], [5, 2]])
def test_gather_queries_concatenates_unequal_ranks_in_rank_order(
    tmp_path: Path, counts: list[int]
) -> None:
    torch_mp.spawn(_gather_worker, args=(str(tmp_path / "store"), counts, str(tmp_path)), nprocs=2)
    expected = torch.cat([torch.full((counts[0], 3), 1.0), torch.full((counts[1], 3), 2.0)])
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"{rank}.pt"), expected)
