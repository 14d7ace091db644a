"""One video's scores as `mnad score` writes them: the parts shared by the scoring actors
(:mod:`pipelines.score.actor`) and the served model (:mod:`pipelines.tracking.pyfunc`).

- :func:`scoring_model`: a checkpoint's model as scoring runs it
  (:func:`mnad.network.inference_copy`: BatchNorm folded, channels_last weights).
- :func:`score_frames`: a run of one video's frames held in memory, made what the model
  takes as the scoring reader makes them (:func:`mnad.clips.model_frames`), clip by clip in
  frame order through a :class:`mnad.streaming.StreamingScorer` (the test-time memory
  update of Sec. 3.4); the first T - 1 frames get no clip, as in `mnad score`.
- :func:`normalised_scores`: the per-video fused score of Eq. (13)
  (:func:`mnad.anomaly_score.fused_abnormality`) and, for a calibrated model, the
  calibrated one (:meth:`mnad.calibration.Calibration.score`).

torch and numpy only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from mnad.anomaly_score import fused_abnormality
from mnad.calibration import Calibration
from mnad.checkpoint import Checkpoint
from mnad.clips import model_clips, model_frames, stack_clips
from mnad.config import ModelConfig
from mnad.network import MNAD, inference_copy
from mnad.streaming import FrameScores, StreamingScorer


class NormalisedScores(NamedTuple):
    """A video's per-frame abnormality on both scales, (T,) float64 each."""

    per_video: np.ndarray  # Eq. (13): min-max over this video; needs the whole video
    calibrated: np.ndarray | None  # on the calibration's scale; None without a calibration


def scoring_model(checkpoint: Checkpoint, device: str | torch.device = "cpu") -> MNAD:
    """The checkpoint's model as scoring runs it, on ``device``: the same scores as the
    model to float rounding, faster."""
    return inference_copy(checkpoint.build_model()).to(device)


def score_frames(
    scorer: StreamingScorer, frames: np.ndarray, cfg: ModelConfig, batch: int = 64
) -> FrameScores:
    """Scores of the frames of one video, uint8 (n, H, W, c) in frame order, ``batch`` clips
    at a time: one row per frame from frame T - 1 on (n - T + 1 rows; none when n < T).

    The scorer carries its memory on: reset it first for a video of its own. ``c`` is the
    data's channels, 3 (RGB) or 1 (grey); frames pass :func:`mnad.clips.model_frames` as
    the scoring reader's do (a no-op for frames that fit the model).
    """
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (n, H, W, C), got {frames.dtype} {frames.shape}")
    frames = model_frames(frames, cfg)  # (n, cfg.height, cfg.width, c')
    starts = np.arange(frames.shape[0] - cfg.clip_length + 1)  # (n - T + 1,) or empty
    parts = []
    for first in range(0, len(starts), batch):
        clips = stack_clips(frames, starts[first : first + batch], cfg.clip_length)
        x = model_clips(clips, cfg)  # (b, T*C, H, W) on [-1, 1] split into input and target
        parts.append(scorer.score(x.inputs, x.target))
    return FrameScores.concat(parts)


def normalised_scores(
    psnr: np.ndarray, distance: np.ndarray, alpha: float, calibration: Calibration | None
) -> NormalisedScores:
    """A whole video's (or window's) PSNR and feature distances on both scales."""
    per_video = fused_abnormality(psnr, distance, alpha)
    calibrated = None if calibration is None else calibration.score(psnr, distance)
    return NormalisedScores(per_video, calibrated)


__all__ = ["NormalisedScores", "normalised_scores", "score_frames", "scoring_model"]
