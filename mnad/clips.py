"""The clip layout and the input scaling of MNAD (Sec. 3.1): one place for both.

A clip is ``T`` consecutive frames of one video stacked on the channel axis, oldest first:
``(T*C, H, W)``. For prediction ``T = input_frames + 1``: the first ``input_frames`` frames
are the input and the last one is the target. For reconstruction ``T = 1``: the frame is
both. Pixels are scaled from uint8 to [-1, 1] (``x / 127.5 - 1``) as the paper's loader
does; grey data (1 channel) is repeated to 3 channels for a 3-channel model, as the paper's
code reads grey frames. Training, scoring, the report and the served model all call these.

torch is imported where a tensor is made: the Ray tasks that only stack clips
(:func:`stack_clips`, numpy) do not pay for importing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mnad.config import ModelConfig

if TYPE_CHECKING:
    from torch import Tensor


class ClipInput(NamedTuple):
    """A batch of clips as the model takes them, both on [-1, 1]."""

    inputs: Tensor  # (B, C * input_frames, H, W)
    target: Tensor  # (B, C, H, W): the frame to predict (or to rebuild)


def stack_clips(frames: np.ndarray, starts: np.ndarray, clip_length: int) -> np.ndarray:
    """Clips starting at ``starts`` in ``frames`` (n, H, W, C): uint8 (k, T*C, H, W), the
    T frames of a clip stacked on the channel axis oldest first."""
    _, h, w, c = frames.shape
    index = starts[:, None] + np.arange(clip_length)  # (k, T)
    clips = frames[index]  # (k, T, H, W, C)
    return np.ascontiguousarray(clips.transpose(0, 1, 4, 2, 3)).reshape(-1, clip_length * c, h, w)


def to_model_range(pixels: Tensor) -> Tensor:
    """uint8 pixels to float32 on [-1, 1]."""
    return pixels.float().div_(127.5).sub_(1.0)


def widen(clips: Tensor, cfg: ModelConfig) -> Tensor:
    """(B, T*c, H, W) clips of c-channel data as (B, T*C, H, W) for the model's C channels:
    grey data repeated to 3 channels; clips that already fit are returned as they are."""
    b, tc, h, w = clips.shape
    c = tc // cfg.clip_length
    if c == cfg.channels:
        return clips
    if c != 1 or tc != cfg.clip_length:
        raise ValueError(
            f"clips of {tc} channels do not fit a {cfg.channels}-channel model of "
            f"{cfg.clip_length}-frame clips"
        )
    x = clips.reshape(b, cfg.clip_length, 1, h, w).expand(-1, -1, cfg.channels, -1, -1)
    return x.reshape(b, cfg.clip_length * cfg.channels, h, w)  # (B, T*C, H, W)


def split_clip(clips: Tensor, cfg: ModelConfig) -> ClipInput:
    """(B, T*C, H, W) clips on [-1, 1] into the model's input and its target."""
    expected = cfg.clip_length * cfg.channels
    if clips.ndim != 4 or clips.shape[1] != expected:
        raise ValueError(
            f"clips must be (n, {expected}, H, W): input frames then the target frame "
            f"stacked on the channel axis; got {tuple(clips.shape)}"
        )
    if cfg.task == "recon":
        return ClipInput(clips, clips)
    split = cfg.channels * cfg.input_frames
    return ClipInput(clips[:, :split], clips[:, split:])


def model_clips(clips: np.ndarray | Tensor, cfg: ModelConfig) -> ClipInput:
    """uint8 clips (B, T*c, H, W) of the data's c channels as the model's input and target."""
    import torch

    x = torch.as_tensor(clips)
    return split_clip(to_model_range(widen(x, cfg)), cfg)


__all__ = ["ClipInput", "model_clips", "to_model_range", "split_clip", "stack_clips", "widen"]
