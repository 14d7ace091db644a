"""Frames as the model takes them (:func:`mnad.clips.model_frames`): resized and turned grey
in the clip pipeline close to what ffmpeg gives when ingest does it, on real ffmpeg-encoded
video; reversed for a model of BGR input; untouched when they fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnad.clips import fitted_shape, frames_note, model_frames
from mnad.config import ModelConfig
from pipelines.ingest.decode import DecodeSettings, FrameReader
from pipelines.synth import background, pedestrians, write_video

#: How close a frame resized (or turned grey) here is to one ffmpeg decoded at that size:
#: the mean absolute difference in levels of 255, and its 99th percentile. Measured on these
#: videos: 0.05-0.23 and 1-3; resizing without antialiasing (shrinking by point sampling)
#: gives 1.0-6.7 and 9-59 where it shrinks, and fails every shrinking case here.
MEAN_LEVELS = 0.5
P99_LEVELS = 5.0


def _cfg(height: int, width: int, channels: int, order: str = "rgb") -> ModelConfig:
    return ModelConfig(height=height, width=width, channels=channels, channel_order=order)


def _decode(path: Path, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """All frames of a video as ingest decodes them: uint8 (n, H, W, C)."""
    with FrameReader(str(path), (), DecodeSettings(size=size, channels=channels)) as reader:
        data = b"".join(reader.chunks(1 << 24))
        shape = reader.shape
    return np.frombuffer(data, np.uint8).reshape(-1, *shape)


def _assert_close_to_ffmpeg(mine: np.ndarray, ffmpeg: np.ndarray) -> None:
    assert mine.shape == ffmpeg.shape and mine.dtype == np.uint8
    diff = np.abs(mine.astype(np.int16) - ffmpeg.astype(np.int16))
    assert diff.mean() <= MEAN_LEVELS, diff.mean()
    assert np.percentile(diff, 99) <= P99_LEVELS, np.percentile(diff, 99)


@pytest.fixture(scope="module")
def colour_video(media, tmp_path_factory) -> Path:
    """A colour test pattern (MJPEG), 120x160."""
    return media.video(tmp_path_factory.mktemp("frames") / "colour.avi", 6, size=(120, 160))


@pytest.fixture(scope="module")
def synth_video(tmp_path_factory) -> Path:
    """A street scene of `mnad synth` (grey MJPEG), 120x180."""
    path = tmp_path_factory.mktemp("frames") / "street.avi"
    rng = np.random.default_rng(0)
    write_video(str(path), pedestrians(rng, 120, 180), background(rng, 120, 180), rng, 6)
    return path


@pytest.mark.parametrize("size", [(48, 64), (96, 96), (200, 240)], ids=str)
@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
def test_resized_colour_frames_are_close_to_ffmpegs(colour_video, size, channels):
    source = _decode(colour_video, None, 3)  # RGB at the source's size, as ingest keeps it
    mine = model_frames(source, _cfg(*size, channels))
    _assert_close_to_ffmpeg(mine, _decode(colour_video, size, channels))


@pytest.mark.parametrize("size", [(48, 72), (96, 96)], ids=str)
def test_resized_street_frames_are_close_to_ffmpegs(synth_video, size):
    for channels in (1, 3):  # the source ingested grey, and ingested as RGB turned grey
        source = _decode(synth_video, None, channels)
        mine = model_frames(source, _cfg(*size, 1))
        _assert_close_to_ffmpeg(mine, _decode(synth_video, size, 1))


def test_grey_is_ffmpegs_luma_at_the_same_size(colour_video):
    source = _decode(colour_video, None, 3)
    mine = model_frames(source, _cfg(120, 160, 1))
    _assert_close_to_ffmpeg(mine, _decode(colour_video, None, 1))


def test_frames_that_fit_pass_untouched_and_bgr_reverses():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 16, 24, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (3, 16, 24, 1), dtype=np.uint8)
    assert model_frames(rgb, _cfg(16, 24, 3)) is rgb
    assert model_frames(grey, _cfg(16, 24, 1)) is grey
    assert model_frames(grey, _cfg(16, 24, 3)) is grey  # repeated to 3 channels later (widen)
    assert model_frames(grey, _cfg(16, 24, 3, "bgr")) is grey  # equal channels: any order
    np.testing.assert_array_equal(model_frames(rgb, _cfg(16, 24, 3, "bgr")), rgb[..., ::-1])
    resized_bgr = model_frames(rgb, _cfg(8, 8, 3, "bgr"))
    np.testing.assert_array_equal(resized_bgr, model_frames(rgb, _cfg(8, 8, 3))[..., ::-1])
    assert model_frames(rgb[:0], _cfg(8, 8, 1)).shape == (0, 8, 8, 1)


def test_grey_of_pure_colours_is_bt601_luma():
    pixels = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
    frames = np.broadcast_to(pixels[:, None, None, :], (4, 8, 8, 3))  # one colour a frame
    grey = model_frames(np.ascontiguousarray(frames), _cfg(8, 8, 1))
    assert grey.shape == (4, 8, 8, 1)
    assert grey[:, 0, 0, 0].tolist() == [76, 150, 29, 18]  # 0.299 R + 0.587 G + 0.114 B
    assert (grey == grey[:, :1, :1]).all()


def test_the_note_says_what_is_done_and_how_to_ingest_for_the_fast_path():
    small = _cfg(96, 96, 1)
    assert frames_note((96, 96, 1), small, "preset small") is None
    assert frames_note((96, 96, 1), _cfg(96, 96, 3), "the model") is None
    assert frames_note((240, 360, 3), small, "preset small") == (
        "DATA frames 240x360x3, preset small takes 96x96x1: resizing and converting RGB to "
        "grey in the clip pipeline (ingest at --size 96 96 --channels 1 for the fast path)"
    )
    assert frames_note((240, 360, 1), small, "preset small") == (
        "DATA frames 240x360x1, preset small takes 96x96x1: resizing in the clip pipeline "
        "(ingest at --size 96 96 --channels 1 for the fast path)"
    )
    assert "converting RGB to grey in" in frames_note((96, 96, 3), small, "the model")
    assert "--channels 1 for" in frames_note((64, 64, 1), _cfg(96, 96, 3), "the model")
    assert fitted_shape((240, 360, 3), small) == (96, 96, 1)
    assert fitted_shape((240, 360, 1), _cfg(96, 96, 3)) == (96, 96, 1)
    assert fitted_shape((240, 360, 3), _cfg(96, 96, 3)) == (96, 96, 3)
