"""The report's pictures of a segment's peak: frame | the model's prediction | error map.

Runs where the model is: a scoring job renders its report's pictures in a Ray task
(:mod:`pipelines.score.pictures`), never on the driver. :class:`FrameRenderer` reads the
clip that ends on a frame from its shard (:func:`pipelines.data.read_frames`), lays it out
and scales it as training and scoring do (:func:`mnad.clips.model_frames`,
:func:`mnad.clips.stack_clips`, :func:`mnad.clips.model_clips`) and runs the model once;
:func:`segment_picture` composes the three panels in numpy and the report writes them as
PNGs directly, far cheaper than a figure each.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import matplotlib
import numpy as np
import torch

from mnad.checkpoint import load_model
from mnad.clips import model_clips, model_frames, stack_clips
from pipelines.data import read_frames

Render = Callable[[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``render(video_id, frame_index) -> (frame, prediction, error)``: the target frame and the
model's prediction, each (H, W), (H, W, 1) or (H, W, 3) RGB as uint8 or float in [0, 1], and
the per-pixel error (H, W) float (any non-negative scale; shown normalised to its maximum)."""

PICTURE_MIN_HEIGHT = 128
"""Segment pictures smaller than this (pixels) are enlarged by an integer nearest-neighbour
factor, so the 96x96 frames of the CPU preset stay legible."""
PICTURE_GAP = 4
"""White pixels between the three panels of a segment picture."""
ERROR_CMAP = "inferno"


def _as_rgb8(image: np.ndarray, what: str, where: str) -> np.ndarray:
    """An (H, W), (H, W, 1) or (H, W, 3) uint8 or [0, 1] float image as (H, W, 3) uint8."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"{where}: {what} must be (H, W), (H, W, 1) or (H, W, 3), got {array.shape}"
        )
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{where}: {what} must be uint8 or float, got {array.dtype}")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"{where}: {what} float values must lie in [0, 1], found [{low:.3g}, {high:.3g}]; "
            "map the model's [-1, 1] with (x + 1) / 2"
        )
    return np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)


def _error_rgb8(error: np.ndarray, shape: tuple[int, int], where: str) -> tuple[np.ndarray, float]:
    """A per-pixel error map coloured from 0 to its own maximum: ((H, W, 3) uint8, maximum)."""
    array = np.asarray(error, dtype=np.float32)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.shape != shape:
        raise ValueError(f"{where}: error map has shape {array.shape}, expected {shape}")
    peak = float(array.max()) if array.size else 0.0
    scaled = array / peak if peak > 0 else np.zeros_like(array)
    return matplotlib.colormaps[ERROR_CMAP](scaled, bytes=True)[:, :, :3], peak


def segment_picture(
    frame: np.ndarray, prediction: np.ndarray, error: np.ndarray, *, where: str = "render"
) -> tuple[np.ndarray, float]:
    """Frame, prediction and error map side by side, as one (H', W', 3) uint8 image.

    Small frames are enlarged by an integer factor (nearest neighbour) to at least
    ``PICTURE_MIN_HEIGHT`` rows. The error map is coloured from 0 to its own maximum.

    Returns:
        ``(picture, error_max)``.
    """
    target = _as_rgb8(frame, "frame", where)  # (H, W, 3)
    predicted = _as_rgb8(prediction, "prediction", where)  # (H, W, 3)
    if predicted.shape != target.shape:
        raise ValueError(f"{where}: prediction {predicted.shape} and frame {target.shape} differ")
    height, width = target.shape[:2]
    coloured, error_max = _error_rgb8(error, (height, width), where)  # (H, W, 3)
    gap = np.full((height, PICTURE_GAP, 3), 255, dtype=np.uint8)
    picture = np.concatenate([target, gap, predicted, gap, coloured], axis=1)  # (H, 3W + 2g, 3)
    factor = max(1, math.ceil(PICTURE_MIN_HEIGHT / max(height, 1)))
    if factor > 1:
        picture = np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)
    return picture, error_max


class FrameRenderer:
    """The report's ``Render``: a frame, the model's prediction of it, the error map.

    ``shards``: video_id -> the video's shard in DATA. The model is loaded once, from the
    checkpoint folder the scoring job fetched.
    """

    def __init__(self, checkpoint_dir: str, shards: dict[str, str]):
        self.model, self.preset = load_model(checkpoint_dir)
        self.shards = shards

    def __call__(self, video_id: str, frame_index: int) -> tuple[np.ndarray, ...]:
        cfg = self.preset.model
        first = frame_index - cfg.clip_length + 1
        frames = read_frames(self.shards[video_id], first, frame_index + 1)  # (T, H, W, c)
        frames = model_frames(frames, cfg)  # at the model's size, in its channel order
        clip = model_clips(stack_clips(frames, np.zeros(1, np.int64), cfg.clip_length), cfg)
        with torch.no_grad():
            encoded = self.model.encode(clip.inputs)
            pred = self.model.decode(encoded).prediction[0]  # (C, H, W) on [-1, 1]
        target = (clip.target[0] + 1) / 2  # (C, H, W) on [0, 1]
        pred = (pred + 1) / 2
        if cfg.channel_order == "bgr" and target.shape[0] == 3:  # shown as RGB
            target, pred = target.flip(0), pred.flip(0)
        error = (pred - target).pow(2).mean(dim=0)  # (H, W)
        as_rgb = lambda t: t.expand(3, -1, -1).permute(1, 2, 0).clamp(0, 1).numpy()  # noqa: E731
        return as_rgb(target), as_rgb(pred), error.numpy()


__all__ = ["FrameRenderer", "Render", "segment_picture"]
