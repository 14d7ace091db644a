"""mnad.clips: the one clip layout and input scaling shared by training, scoring and serving."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnad.clips import model_clips, split_clip, stack_clips, to_model_range, widen
from mnad.config import ModelConfig

PRED_GREY = ModelConfig(height=8, width=8, channels=1, input_frames=4)
PRED_RGB = ModelConfig(height=8, width=8, channels=3, input_frames=4)
RECON_RGB = ModelConfig(task="recon", height=8, width=8, channels=3, input_frames=1)


def _frames(n: int, c: int) -> np.ndarray:
    """(n, 8, 8, c) uint8 frames whose every pixel holds 10 * frame index + channel."""
    values = 10 * np.arange(n)[:, None, None, None] + np.arange(c)
    return np.broadcast_to(values, (n, 8, 8, c)).astype(np.uint8)


def test_stack_clips_puts_frames_oldest_first_on_the_channel_axis() -> None:
    clips = stack_clips(_frames(7, 2), np.array([0, 2]), clip_length=5)  # (2, 10, 8, 8)
    assert clips.shape == (2, 10, 8, 8) and clips.dtype == np.uint8
    # clip 1 starts at frame 2: channels (frame 2, c0), (frame 2, c1), (frame 3, c0), ...
    assert clips[1, :, 0, 0].tolist() == [20, 21, 30, 31, 40, 41, 50, 51, 60, 61]


def test_to_model_range_maps_uint8_onto_minus_one_one() -> None:
    x = to_model_range(torch.tensor([0, 127, 255], dtype=torch.uint8))
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, torch.tensor([-1.0, 127 / 127.5 - 1, 1.0]))


def test_prediction_clips_split_into_four_inputs_and_the_next_frame() -> None:
    clips = stack_clips(_frames(5, 3), np.array([0]), clip_length=5)  # (1, 15, 8, 8)
    inputs, target = model_clips(clips, PRED_RGB)
    assert inputs.shape == (1, 12, 8, 8) and target.shape == (1, 3, 8, 8)
    assert target[0, :, 0, 0].tolist() == pytest.approx([40 / 127.5 - 1, 41 / 127.5 - 1,
                                                         42 / 127.5 - 1])  # fmt: skip
    assert inputs[0, 0, 0, 0].item() == pytest.approx(-1.0)  # frame 0, channel 0


def test_grey_data_is_repeated_to_three_channels_for_a_colour_model() -> None:
    grey = stack_clips(_frames(5, 1), np.array([0]), clip_length=5)  # (1, 5, 8, 8)
    wide = widen(torch.from_numpy(grey), PRED_RGB)  # (1, 15, 8, 8)
    assert wide.shape == (1, 15, 8, 8)
    assert wide[0, :, 0, 0].tolist() == [0, 0, 0, 10, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40]
    inputs, target = model_clips(grey, PRED_RGB)
    assert inputs.shape == (1, 12, 8, 8) and target.shape == (1, 3, 8, 8)
    # a grey model takes the grey clip as it is
    assert widen(torch.from_numpy(grey), PRED_GREY).data_ptr() == torch.from_numpy(grey).data_ptr()


def test_reconstruction_clips_are_their_own_target() -> None:
    clips = stack_clips(_frames(1, 3), np.array([0]), clip_length=1)
    inputs, target = model_clips(clips, RECON_RGB)
    assert inputs.shape == target.shape == (1, 3, 8, 8)
    torch.testing.assert_close(inputs, target)


def test_clips_of_another_layout_are_refused() -> None:
    with pytest.raises(ValueError, match=r"clips must be \(n, 15, H, W\)"):
        split_clip(torch.zeros(2, 12, 8, 8), PRED_RGB)
    with pytest.raises(ValueError, match="do not fit"):
        widen(torch.zeros(1, 10, 8, 8), PRED_RGB)  # 2-channel data
