"""The memory of normal patterns (Park, Noh, Ham, CVPR 2020, Sec. 3.2 and 3.3).

M items of dimension C, unit rows. Queries are the encoder's features at each spatial
position, L2-normalised: N = B*h*w queries of dimension C. With S = q m^T (N x M):

- read (Eq. 1-2): w = softmax of S over items; r = w m. The decoder sees concat(q, r).
- update (Eq. 3-5): v = softmax of S over the N queries; every query k goes to its nearest
  item i; m_i <- normalize(m_i + sum_{k -> i} v[k, i] / max_k' v[k', i] * q_k). Items that no
  query chose stay as they are. The result carries no gradient.
- compactness (Eq. 10): mean squared distance between a query and its nearest item.
- separateness (Eq. 11): triplet margin loss (margin 1) with the nearest item as the
  positive and the second nearest as the negative.

Items are detached in both losses and in the read, as in the paper's code. Everything here
is vectorised over queries and items: no Python loop over either. Because v spans all the
queries given, an update depends on how many frames are given together: the paper's
training updates on the whole batch, its test-time update on one frame.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def init_items(memory_size: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """The paper's initial memory: ``normalize(uniform[0, 1))`` row-wise. (M, C)"""
    return F.normalize(torch.rand((memory_size, dim), generator=generator), dim=1)


def features_to_queries(features: Tensor) -> Tensor:
    """Encoder map (B, C, h, w) to unit-norm queries (B*h*w, C), position-major per sample."""
    b, c, h, w = features.shape
    q = F.normalize(features, dim=1)  # (B, C, h, w)
    return q.permute(0, 2, 3, 1).reshape(b * h * w, c)  # (N, C)


def read(queries: Tensor, items: Tensor) -> Tensor:
    """Memory read (Eq. 1-2): r = softmax_items(q m^T) m, weights detached. (N, C)"""
    with torch.no_grad():
        w = torch.softmax(queries @ items.t(), dim=1)  # (N, M)
        return w @ items  # (N, C)


def nearest_two(queries: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the nearest and second-nearest item of each query. (N,), (N,)"""
    top = torch.topk(queries @ items.t(), 2, dim=1).indices  # (N, 2)
    return top[:, 0], top[:, 1]


def compactness(queries: Tensor, items: Tensor, nearest: Tensor) -> Tensor:
    """Feature compactness loss (Eq. 10): MSE between queries and their nearest items."""
    return F.mse_loss(queries, items.detach()[nearest])


def separateness(queries: Tensor, items: Tensor, nearest: Tensor, second: Tensor) -> Tensor:
    """Feature separateness loss (Eq. 11): triplet margin 1, nearest vs second nearest."""
    m = items.detach()
    return F.triplet_margin_loss(queries, m[nearest], m[second], margin=1.0)


def distance_per_sample(queries: Tensor, items: Tensor, batch: int) -> Tensor:
    """Feature distance D of each sample: compactness over that sample's queries. (B,)"""
    nearest = torch.argmax(queries @ items.t(), dim=1)  # (N,)
    sq = (queries - items[nearest]).pow(2)  # (N, C)
    return sq.reshape(batch, -1).mean(dim=1)  # (B,)


@torch.no_grad()
def updated_items(queries: Tensor, items: Tensor) -> Tensor:
    """The memory after one update with ``queries`` (Eq. 3-5). (M, C), no gradient.

    Written as dense products: ``assign`` is the one-hot nearest-item matrix (N, M) and the
    update of every item is one matrix product, so the cost does not grow with a loop over
    items. Items that no query chose are returned bit for bit unchanged.
    """
    scores = queries @ items.t()  # (N, M)
    v = torch.softmax(scores, dim=0)  # (N, M): over queries
    nearest = torch.argmax(scores, dim=1)  # (N,)
    assign = F.one_hot(nearest, items.shape[0]).to(queries.dtype)  # (N, M)
    weight = assign * v / v.amax(dim=0, keepdim=True)  # (N, M)
    delta = weight.t() @ queries  # (M, C)
    chosen = assign.sum(dim=0) > 0  # (M,)
    return torch.where(chosen[:, None], F.normalize(items + delta, dim=1), items)


# --- one memory per sample: (B, ...) stacks of the functions above -----------------------------
#
# A scorer that advances several videos at once keeps one memory per video; these are the
# functions above applied to each sample with its own memory, as batched matrix products:
# sample b of the result equals the unbatched function on sample b's queries and items.


def read_batched(queries: Tensor, items: Tensor) -> Tensor:
    """``read`` per sample: queries (B, N, C), items (B, M, C). (B, N, C)"""
    with torch.no_grad():
        w = torch.softmax(queries @ items.transpose(1, 2), dim=2)  # (B, N, M)
        return w @ items  # (B, N, C)


def distance_batched(queries: Tensor, items: Tensor) -> Tensor:
    """``distance_per_sample`` with each sample's own memory: queries (B, N, C), items
    (B, M, C). (B,)"""
    nearest = torch.argmax(queries @ items.transpose(1, 2), dim=2)  # (B, N)
    chosen = torch.gather(items, 1, nearest[..., None].expand(-1, -1, items.shape[2]))
    return (queries - chosen).pow(2).flatten(1).mean(dim=1)  # (B,)


@torch.no_grad()
def updated_items_batched(queries: Tensor, items: Tensor) -> Tensor:
    """``updated_items`` per sample: the update of memory b with queries b. queries
    (B, N, C), items (B, M, C); returns (B, M, C). The softmax over queries spans each
    sample's N queries only, as one update with those queries does."""
    scores = queries @ items.transpose(1, 2)  # (B, N, M)
    v = torch.softmax(scores, dim=1)  # (B, N, M): over each sample's queries
    nearest = torch.argmax(scores, dim=2)  # (B, N)
    assign = F.one_hot(nearest, items.shape[1]).to(queries.dtype)  # (B, N, M)
    weight = assign * v / v.amax(dim=1, keepdim=True)  # (B, N, M)
    delta = weight.transpose(1, 2) @ queries  # (B, M, C)
    chosen = assign.sum(dim=1) > 0  # (B, M)
    return torch.where(chosen[..., None], F.normalize(items + delta, dim=2), items)


def updated_items_loop(queries: Tensor, items: Tensor) -> Tensor:
    """Reference form of ``updated_items`` with a Python loop over items, as the paper's
    code writes it. For tests and the benchmark only."""
    scores = queries @ items.t()
    v = torch.softmax(scores, dim=0)
    nearest = torch.argmax(scores, dim=1)
    out = items.clone()
    for i in range(items.shape[0]):
        idx = torch.nonzero(nearest == i).squeeze(1)
        if idx.numel():
            delta = ((v[idx, i] / v[:, i].max())[:, None] * queries[idx]).sum(dim=0)
            out[i] = F.normalize(items[i] + delta, dim=0)
    return out


class MemoryOutput(NamedTuple):
    """What one pass through the memory gives the decoder and the losses."""

    decoder_input: Tensor  # (B, 2C, h, w): concat(q, r)
    queries: Tensor  # (N, C) unit rows, N = B*h*w
    nearest: Tensor  # (N,) index of each query's nearest item
    second: Tensor  # (N,) index of each query's second-nearest item


class Memory(nn.Module):
    """M memory items as a buffer: saved in the state_dict, never touched by an optimiser."""

    items: Tensor

    def __init__(self, memory_size: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        self.register_buffer("items", init_items(memory_size, dim, generator))

    def forward(self, features: Tensor, items: Tensor | None = None) -> MemoryOutput:
        """Read the memory for an encoder map (B, C, h, w); the memory is not changed.

        ``items`` reads from another memory state of the same shape instead of this one.
        """
        b, c, h, w = features.shape
        items = self.items if items is None else items
        assert items.shape == self.items.shape, f"items {tuple(items.shape)} for {self.items.shape}"
        assert c == items.shape[1], f"features have {c} channels, memory {tuple(items.shape)}"
        queries = features_to_queries(features)  # (N, C)
        nearest, second = nearest_two(queries, items)  # (N,), (N,)
        r = read(queries, items)  # (N, C)
        both = torch.cat([queries, r], dim=1)  # (N, 2C)
        decoder_input = both.reshape(b, h, w, 2 * c).permute(0, 3, 1, 2)  # (B, 2C, h, w)
        return MemoryOutput(decoder_input, queries, nearest, second)

    @torch.no_grad()
    def update_(self, queries: Tensor) -> None:
        """Apply the update rule with ``queries`` (N, C) in place."""
        self.items.copy_(updated_items(queries.detach().to(self.items.dtype), self.items))
