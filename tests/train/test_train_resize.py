"""Training on DATA ingested at another size (and in colour) than the preset's: the readers
make the frames what the model takes (:func:`mnad.clips.model_frames`), and `mnad train`
says so in one line and trains."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mnad.clips import model_frames, stack_clips
from pipelines.data import read_frames
from pipelines.train import run_train
from pipelines.train.data import list_videos, read_chunk, video_frames
from tests.colour_fixtures import colour_frames, write_frames_data

VIDEOS = {f"v{i}": colour_frames(12, 24, 24, seed=i) for i in range(3)}


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> Path:
    """RGB frames at 24x24: the tiny preset takes 16x16 grey."""
    return write_frames_data(tmp_path_factory.mktemp("colour"), {"train": VIDEOS})


def test_both_readers_give_the_presets_frames(colour_data, tiny):
    cfg = tiny.model
    video = list_videos(str(colour_data), "train")[0]
    frames = model_frames(read_frames(video.path, 0, video.frames), cfg)
    assert frames.shape == (12, 16, 16, 1)
    streamed = read_chunk(
        {"video_index": np.array([0]), "path": np.array([video.path]), "first": np.array([2]),
         "count": np.array([5])},
        clip_length=cfg.clip_length, seed=None, fit=cfg,
    )  # fmt: skip
    np.testing.assert_array_equal(
        streamed["clip"], stack_clips(frames, np.arange(2, 7), cfg.clip_length)
    )
    assert streamed["clip"].shape == (5, cfg.clip_length, 16, 16)
    np.testing.assert_array_equal(video_frames(video.path, video.frames, cfg), frames)


@pytest.mark.ray
@pytest.mark.parametrize("mode", ["auto", "stream"])
def test_training_on_data_of_another_size_says_so_and_trains(
    ray_local, colour_data, tiny_preset, tmp_path, make_config, capsys, mode
):
    config = make_config(
        colour_data, tiny_preset, tmp_path, workers=1, epochs=1, quiet=False, input_mode=mode
    )
    result = run_train(config)
    printed = capsys.readouterr().out.splitlines()
    line = (
        "mnad train: DATA frames 24x24x3, preset tiny takes 16x16x1: resizing and converting "
        "RGB to grey in the clip pipeline (ingest at --size 16 16 --channels 1 for the fast "
        "path)"
    )
    assert printed.count(line) == 1, printed
    held = "training videos' frames held in the object store, clips of all videos shuffled"
    streamed = "training videos' clips streamed from the shards in chunks (--input-mode stream)"
    said = [x for x in printed if held in x or streamed in x]
    assert len(said) == 1 and (held if mode == "auto" else streamed) in said[0], printed
    assert [r["epoch"] for r in result.epochs] == [1]
    assert math.isfinite(result.epochs[0]["loss"])
