"""The collectives of the training loop (runs in the Ray Train workers, over the process group
that Ray Train's ``TorchConfig`` set up: gloo on CPUs, NCCL on GPUs).

Each is a no-op on a single process, so the loop runs unchanged with one worker.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


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


__all__ = ["all_gather_counts", "all_reduce_sum", "distributed", "gather_queries"]
