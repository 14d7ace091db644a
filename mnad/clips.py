"""The clip layout and the input scaling of MNAD (Sec. 3.1): one place for both.

A clip is ``T`` consecutive frames of one video stacked on the channel axis, oldest first:
``(T*C, H, W)``. For prediction ``T = input_frames + 1``: the first ``input_frames`` frames
are the input and the last one is the target. For reconstruction ``T = 1``: the frame is
both. Pixels are scaled from uint8 to [-1, 1] (``x / 127.5 - 1``) as the paper's loader
does; grey data (1 channel) is repeated to 3 channels for a 3-channel model, as the paper's
code reads grey frames. Training, scoring, the report and the served model all call these.

Frames read from DATA pass :func:`model_frames` first (the training reader, the scoring
reader and the report's pictures call it): frames of another size than the model's are
resized, colour frames for a grey model become grey, and colour frames for a model of BGR
input (``ModelConfig.channel_order``: a model trained by the paper's code, which reads
frames with OpenCV) have their channels reversed. Frames that already fit pass untouched.

torch is imported where a tensor is made: the Ray tasks that only stack clips
(:func:`stack_clips`, numpy) of frames that fit do not pay for importing it.
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


#: ITU-R BT.601 luma weights of R, G and B: what ffmpeg computes for ``gray`` from full-range
#: RGB, so a frame turned grey here matches one that ingest decoded as grey.
LUMA_BT601 = (0.299, 0.587, 0.114)


def model_frames(frames: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """uint8 frames (n, H, W, c) of DATA (c = 3: RGB, as ingest decodes; c = 1: grey) as the
    model takes them: uint8 (n, cfg.height, cfg.width, c'), where c' is 1 for a grey model or
    grey data (which :func:`widen` repeats later) and 3 otherwise, in ``cfg.channel_order``.

    Close to what ``mnad ingest --size --channels`` at the model's size gives (within a
    level or two on average; tests/mnad/test_frames.py measures it on ffmpeg-decoded
    video), so a model may be trained or scored on DATA ingested at any size:

    - colour to grey: BT.601 luma of the RGB values (ffmpeg's ``gray``), before resizing
      (the two commute up to rounding; resizing one channel is a third of the work);
    - resize: ``torch.nn.functional.interpolate``, bilinear with ``antialias=True``
      (``align_corners=False``): a triangle filter widened by the scale factor when shrinking,
      as ffmpeg's ``scale=flags=bilinear`` does; without antialiasing a 240x360 frame
      shrunk to 96x96 is point-sampled and differs from ffmpeg's by ~10 times more;
    - rounded back to uint8, as ffmpeg's output is.

    Frames that already fit come back as they are (the same array: no copy, no torch).
    """
    n, h, w, c = frames.shape
    if c not in (1, 3):
        raise ValueError(f"frames must have 1 or 3 channels, got {frames.shape}")
    to_grey = c == 3 and cfg.channels == 1
    reverse = c == 3 and cfg.channels == 3 and cfg.channel_order == "bgr"
    size = (cfg.height, cfg.width)
    if (h, w) == size and not to_grey:
        return np.ascontiguousarray(frames[..., ::-1]) if reverse else frames
    import torch
    import torch.nn.functional as F

    out_c = 1 if to_grey else c
    if n == 0:
        return np.empty((0, *size, out_c), dtype=np.uint8)
    x = torch.from_numpy(np.require(frames, requirements=("C", "W"))).float()  # (n, h, w, c)
    if to_grey:
        x = (x @ torch.tensor(LUMA_BT601)).unsqueeze(-1)  # (n, h, w, 1)
    x = x.permute(0, 3, 1, 2)  # (n, c', h, w)
    if (h, w) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    y = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (n, H, W, c')
    if reverse:
        y = y.flip(-1)
    return np.ascontiguousarray(y.numpy())


def frames_note(shape: tuple[int, int, int], cfg: ModelConfig, taker: str) -> str | None:
    """One line saying that frames of ``shape`` (height, width, channels) are resized or
    turned grey on their way to a model of ``cfg`` (``taker``: who takes them, e.g. "preset
    small", "the model"), and how to ingest for the fast path; None when they fit."""
    h, w, c = (int(v) for v in shape)
    doing = []
    if (h, w) != (cfg.height, cfg.width):
        doing.append("resizing")
    if c == 3 and cfg.channels == 1:
        doing.append("converting RGB to grey")
    if not doing:
        return None
    return (
        f"DATA frames {h}x{w}x{c}, {taker} takes {cfg.height}x{cfg.width}x{cfg.channels}: "
        f"{' and '.join(doing)} in the clip pipeline (ingest at --size {cfg.height} "
        f"{cfg.width} --channels {min(c, cfg.channels)} for the fast path)"
    )


def fitted_shape(shape: tuple[int, int, int], cfg: ModelConfig) -> tuple[int, int, int]:
    """(height, width, channels) of what :func:`model_frames` makes of frames of ``shape``."""
    c = int(shape[2])
    return cfg.height, cfg.width, 1 if cfg.channels == 1 else c


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


__all__ = [
    "LUMA_BT601",
    "ClipInput",
    "fitted_shape",
    "frames_note",
    "model_clips",
    "model_frames",
    "split_clip",
    "stack_clips",
    "to_model_range",
    "widen",
]
