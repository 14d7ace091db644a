"""The synthetic data set: real videos, labels that match what is drawn, reproducible."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from pipelines.errors import UserError
from pipelines.ingest.decode import DecodeSettings, FrameReader
from pipelines.ingest.labels import parse_ucsd_m
from pipelines.ingest.layouts import discover
from pipelines.synth import Mover, SynthConfig, completion, flags_to_ranges, synthesize


def _decode(path: Path) -> np.ndarray:
    with FrameReader(str(path), (), DecodeSettings(imageio_ffmpeg.get_ffmpeg_exe())) as reader:
        data = b"".join(reader.chunks(1 << 20))
        return np.frombuffer(data, np.uint8).reshape(-1, *reader.shape)  # (n, H, W, 1)


def test_tiny_preset_writes_the_avenue_layout(tmp_path: Path) -> None:
    result = synthesize(SynthConfig(out=str(tmp_path), size="tiny", quiet=True))
    found = discover(str(tmp_path))
    assert found.layout == "avenue" and found.label_file.endswith("synth.m")
    assert [v.split for v in found.videos] == ["train"] * 2 + ["test"] * 3
    frames = _decode(tmp_path / "testing_videos/02.avi")  # kind "big": a dark vehicle
    assert frames.shape == (48, 64, 64, 1)
    ranges = parse_ucsd_m((tmp_path / "synth.m").read_text())
    assert sum(e - s + 1 for r in ranges for s, e in r) == result.anomalous_frames > 0
    ((start, end),) = ranges[1]
    dark = (frames[..., 0] < 60).reshape(48, -1).sum(axis=1)  # (n,) dark pixels per frame
    assert dark[start - 1 : end].min() > dark[: start - 1].max()  # the vehicle is in view


def test_completion_follows_the_options_that_decide_the_videos(tmp_path: Path) -> None:
    config = SynthConfig(out=str(tmp_path), size="tiny", quiet=True, frames=24)
    assert not completion(config).complete
    result = synthesize(config)
    done = completion(config)
    assert done.complete and done.result == result  # read back from the marker
    assert completion(SynthConfig(out=str(tmp_path), size="tiny", frames=24)).complete  # quiet
    assert not completion(SynthConfig(out=str(tmp_path), size="tiny", frames=24, seed=1)).complete


def test_same_seed_same_videos(tmp_path: Path) -> None:
    for name in ("a", "b"):
        synthesize(SynthConfig(out=str(tmp_path / name), size="tiny", quiet=True, frames=24))
    a = (tmp_path / "a/testing_videos/01.avi").read_bytes()
    assert a == (tmp_path / "b/testing_videos/01.avi").read_bytes()


def test_flags_to_ranges_and_visibility() -> None:
    assert flags_to_ranges(np.array([0, 1, 1, 0, 1])) == [(2, 3), (5, 5)]
    mover = Mover(x0=-4, y0=0, vx=2, vy=0, w=4, h=4, intensity=200, start=3)
    assert mover.box(2, 10, 10) is None and mover.box(3, 10, 10) is None
    assert mover.box(4, 10, 10) == (0, 4, 0, 2)


def test_config_is_validated() -> None:
    with pytest.raises(UserError, match="local folder"):
        SynthConfig(out="s3://bucket/x")
    with pytest.raises(UserError, match="--frames"):
        SynthConfig(out="x", frames=3)
