"""Per-frame anomaly scores of MNAD (Park, Noh, Ham, CVPR 2020), Sec. 3.4 and Eqs. (11)-(13).

- ``prediction_error`` and ``psnr``: Eq. (11), the PSNR of the predicted (or reconstructed)
  frame on a [0, 1] pixel scale, ``10 * log10(1 / mse)``.
- ``point_score``: the test-time memory-update gate of Sec. 3.4 (the paper's code
  ``utils.point_score``), a pixel-weighted error compared against a threshold.
- ``min_max``: g(.) of Eq. (13), min-max normalisation over one video.
- ``fused_abnormality``: Eq. (13), applied to one video at a time,, the normality score
  ``s = alpha * g(P) + (1 - alpha) * (1 - g(D))`` with D the feature distance of Eq. (12)
  (the compactness of the frame's queries to their nearest items), returned as the
  abnormality ``1 - s``.

Frames arrive on the model's [-1, 1] scale and are mapped to [0, 1] by ``(x + 1) / 2`` first,
as in the paper's code. Everything here is pure and vectorised; nothing loops over frames.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

MSE_EPS = 1e-10
"""Smallest MSE fed to ``psnr``: a perfect prediction scores 10 * log10(1e10) = 100 dB."""

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)


def _check_frames(pred: Tensor, target: Tensor) -> None:
    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must both be (B, C, H, W) of one shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )


def _squared_error01(pred: Tensor, target: Tensor) -> Tensor:
    """Per-pixel squared error on the [0, 1] scale, in float32 or wider. (B, C, H, W)."""
    _check_frames(pred, target)
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    p01 = (pred.to(dtype) + 1) / 2  # (B, C, H, W)
    t01 = (target.to(dtype) + 1) / 2  # (B, C, H, W)
    return (p01 - t01) ** 2  # (B, C, H, W)


def prediction_error(pred: Tensor, target: Tensor) -> Tensor:
    """Per-sample mean squared error on the [0, 1] scale: the ``mse`` of Eq. (11).

    Args:
        pred: predicted frames on [-1, 1], (B, C, H, W).
        target: true frames on [-1, 1], (B, C, H, W).

    Returns:
        (B,) float tensor (float32, or float64 for float64 input): mean over C, H, W of
        ``((pred + 1) / 2 - (target + 1) / 2) ** 2``.
    """
    return _squared_error01(pred, target).mean(dim=(1, 2, 3))  # (B,)


def psnr(mse: ArrayT | float, eps: float = MSE_EPS) -> ArrayT:
    """Peak signal-to-noise ratio on a [0, 1] scale, Eq. (11): ``10 * log10(1 / mse)``.

    ``mse`` is clamped below at ``eps`` (default ``MSE_EPS`` = 1e-10, i.e. at most 100 dB), so a
    perfect prediction gives a large finite value rather than ``inf``; the paper's code would
    raise ``ZeroDivisionError`` there. NaN stays NaN.

    Args:
        mse: mean squared error(s), >= 0: a tensor (any shape), an array or a float.
        eps: the smallest MSE used.

    Returns:
        PSNR in dB, a tensor of ``mse``'s shape and dtype for a tensor, else a float64 array
        (0-d for a scalar).
    """
    if isinstance(mse, Tensor):
        return 10 * torch.log10(1 / mse.clamp_min(eps))
    mse_arr = np.asarray(mse, dtype=np.float64)
    return 10 * np.log10(1 / np.maximum(mse_arr, eps))


def point_score(pred: Tensor, target: Tensor) -> Tensor:
    """The test-time update gate of Sec. 3.4: an error that weights each pixel by its error.

    With ``e`` the per-pixel squared error on the [0, 1] scale and ``w = 1 - exp(-e)``,
    the score of a sample is ``sum(w * e) / sum(w)`` over C, H, W. The memory is updated with
    the frame's queries when the score is below the threshold (0.01 prediction, 0.015
    reconstruction). ``w`` is computed as ``-expm1(-e)``, equal to the paper's
    ``1 - exp(-e)`` but exact for small errors. A perfect prediction (``sum(w) == 0``) scores 0.

    Args:
        pred: predicted frames on [-1, 1], (B, C, H, W).
        target: true frames on [-1, 1], (B, C, H, W).

    Returns:
        (B,) float tensor of scores, >= 0.
    """
    e = _squared_error01(pred, target)  # (B, C, H, W)
    w = -torch.expm1(-e)  # (B, C, H, W)
    num = (w * e).sum(dim=(1, 2, 3))  # (B,)
    den = w.sum(dim=(1, 2, 3))  # (B,)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)  # (B,)


def min_max(x: np.ndarray) -> np.ndarray:
    """g(.) of Eq. (13): ``(x - min) / (max - min)`` over one video's scores.

    A constant video (``max == min``) maps to zeros instead of dividing by zero (the paper's
    code gives NaN there). An empty array returns an empty array.

    Args:
        x: one video's per-frame scores, any shape (normalised over all elements).

    Returns:
        float64 array of ``x``'s shape, in [0, 1].
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    lo = x.min()
    span = x.max() - lo
    if span == 0:
        return np.zeros_like(x)
    return (x - lo) / span


def fused_abnormality(psnr: np.ndarray, distance: np.ndarray, alpha: float) -> np.ndarray:
    """Eq. (13) for one video, returned as abnormality (higher = more anomalous).

    Normality ``s = alpha * g(psnr) + (1 - alpha) * (1 - g(distance))`` with g the per-video
    ``min_max``; the result is ``1 - s``, in [0, 1]. The paper uses alpha = 0.6 for prediction
    and 0.7 for reconstruction.

    Args:
        psnr: the video's per-frame PSNR (Eq. 11), (T,).
        distance: the video's per-frame feature distance D (Eq. 12), (T,).
        alpha: weight of the PSNR term, in [0, 1].

    Returns:
        (T,) float64 abnormality scores.
    """
    psnr = np.asarray(psnr)
    distance = np.asarray(distance)
    if psnr.ndim != 1 or psnr.shape != distance.shape:
        raise ValueError(
            "psnr and distance must be 1-D per-frame scores of one length, got shapes "
            f"{psnr.shape} and {distance.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    normality = alpha * min_max(psnr) + (1 - alpha) * (1 - min_max(distance))  # (T,)
    return 1 - normality

