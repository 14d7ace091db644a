"""The training objective of MNAD (Sec. 3.3, Eq. 9): the prediction (or reconstruction) loss
plus the memory's compactness and separateness losses (Eqs. 7-8, ``mnad.memory``)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mnad.config import ModelConfig

LOSS_NAMES = ("loss", "prediction_error", "compactness", "separateness")
"""The metric names of :meth:`Losses.stacked`'s entries, in order."""


class Losses(NamedTuple):
    """The training objective and its parts, each a scalar tensor."""

    total: Tensor
    prediction: Tensor  # MSE on the [-1, 1] scale
    compactness: Tensor
    separateness: Tensor

    def stacked(self) -> Tensor:
        """(4,) detached: total, prediction, compactness, separateness."""
        return torch.stack([t.detach().float() for t in self])


def training_losses(
    prediction: Tensor, target: Tensor, compact: Tensor, separate: Tensor, cfg: ModelConfig
) -> Losses:
    """L = MSE(prediction, target) + lambda_c * compactness + lambda_s * separateness."""
    mse = F.mse_loss(prediction.float(), target.float())
    total = mse + cfg.lambda_compact * compact + cfg.lambda_separate * separate
    return Losses(total, mse, compact, separate)


__all__ = ["LOSS_NAMES", "Losses", "training_losses"]
