"""The collectives of the training loop (runs in the Ray Train workers, over the process group
that Ray Train's ``TorchConfig`` set up: gloo on CPUs, NCCL on GPUs).

Each is a no-op on a single process, so the loop runs unchanged with one worker.

BatchNorm synchronised over the ranks (:func:`sync_batchnorm`): in training mode every
BatchNorm normalises with the mean and variance of the GLOBAL batch and updates its running
statistics with them, as one process given the whole batch does; backward gathers the two
per-channel gradient sums the normalisation needs from every rank. With DDP's averaging of
the parameter gradients, a step of W ranks then equals one process's step on the
concatenated batch (to float rounding). On GPUs this is ``torch.nn.SyncBatchNorm``; on CPUs,
which that class refuses, :class:`SyncBatchNorm2d` does the same over gloo. Both keep the
parameter and buffer names of ``nn.BatchNorm2d``, so a state_dict (a checkpoint) is the same
as the plain model's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


def distributed() -> bool:
    """Whether this process is one rank of several."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_counts(count: int, device: torch.device) -> list[int]:
    """Every rank's ``count``, in rank order (one collective; [count] on a single process)."""
    if not distributed():
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
    if distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def batch_moments(local: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The global (count, mean, M2) per channel from every rank's ``local`` (2C + 1,):
    [count, mean (C,), M2 (C,)], M2 being the sum of squared deviations from that rank's
    mean. Ranks are combined with the pairwise formula (Chan et al.), which keeps the
    precision of a two-pass variance; one all-gather."""
    if distributed():
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        table = torch.stack(parts)  # (W, 2C + 1)
    else:
        table = local[None]
    c = (table.shape[1] - 1) // 2
    counts, means, m2 = table[:, :1], table[:, 1 : c + 1], table[:, c + 1 :]  # (W, 1), (W, C)
    total = counts.sum()
    mean = (counts * means).sum(dim=0) / total  # (C,)
    return total, mean, (m2 + counts * (means - mean).pow(2)).sum(dim=0)


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch normalisation over the global batch, for (B, C, ...) inputs on any device."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local_mean = x.mean(dim=dims)  # (C,)
        local_m2 = (x - local_mean.reshape(shape)).pow(2).sum(dim=dims)  # (C,)
        n = x.new_tensor([x.numel() // x.shape[1]])
        total, mean, m2 = batch_moments(torch.cat([n, local_mean, local_m2]))
        invstd = torch.rsqrt(m2 / total + eps)  # (C,)
        xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
        ctx.save_for_backward(xhat, weight, invstd, total)
        ctx.dims, ctx.shape = dims, shape
        y = xhat * weight.reshape(shape) + bias.reshape(shape)
        ctx.mark_non_differentiable(mean, m2, total)
        return y, mean, m2, total

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dy: Tensor, *_: Any
    ) -> tuple[Tensor, Tensor, Tensor, None]:
        xhat, weight, invstd, total = ctx.saved_tensors
        dims, shape = ctx.dims, ctx.shape
        sum_dy = dy.sum(dim=dims)  # (C,) this rank's: the gradient of the bias
        sum_dy_xhat = (dy * xhat).sum(dim=dims)  # (C,) this rank's: of the weight
        both = all_reduce_sum(torch.cat([sum_dy, sum_dy_xhat]))  # a copy: cat is new
        c = sum_dy.shape[0]
        mean_dy = (both[:c] / total).reshape(shape)
        mean_dy_xhat = (both[c:] / total).reshape(shape)
        dx = (dy - mean_dy - xhat * mean_dy_xhat) * (weight * invstd).reshape(shape)
        return dx, sum_dy_xhat, sum_dy, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode statistics are those of the global batch over
    every rank (see the module docstring); in eval mode, or on a single process, exactly
    ``nn.BatchNorm2d``. Same parameters and buffers, so the same state_dict."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and distributed()):
            return super().forward(x)
        if not (self.affine and self.track_running_stats and self.momentum is not None):
            raise ValueError("SyncBatchNorm2d needs affine=True, running stats and a momentum")
        y, mean, m2, total = _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum
            unbiased = m2 / (total - 1).clamp(min=1)
            self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
            self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` synchronised over the ranks, in place (its
    parameters and buffers kept, not copied): ``torch.nn.SyncBatchNorm`` on a GPU,
    :class:`SyncBatchNorm2d` elsewhere. The state_dict's names do not change."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine,
                child.track_running_stats,
            )  # fmt: skip
            sync.weight, sync.bias = child.weight, child.bias
            sync.running_mean, sync.running_var = child.running_mean, child.running_var
            sync.num_batches_tracked = child.num_batches_tracked
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            sync_batchnorm(child, device)
    return module


__all__ = [
    "SyncBatchNorm2d",
    "all_gather_counts",
    "all_reduce_sum",
    "batch_moments",
    "distributed",
    "gather_queries",
    "sync_batchnorm",
]
