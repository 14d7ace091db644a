"""Decoding with ffmpeg (pipelines.ingest.decode): every kind of bad file, resizing, grey,
the source's frame rate and start time."""

from __future__ import annotations

import random
from pathlib import Path

import imageio_ffmpeg
import pytest

from pipelines.ingest.decode import (
    DecodeError,
    DecodeSettings,
    FrameReader,
    ffmpeg_cause,
    stream_rate,
)
from pipelines.schema import FrameShape


def _settings(**kwargs) -> DecodeSettings:
    return DecodeSettings(imageio_ffmpeg.get_ffmpeg_exe(), **kwargs)


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (lambda p, m: p.write_bytes(b""), "empty file"),
        (lambda p, m: p.write_text("hello, not a video"), "not a readable video"),
        (
            lambda p, m: p.write_bytes(m.video(p.with_suffix(".ok.avi"), 40).read_bytes()[:9000]),
            "corrupt or truncated video",
        ),
        (
            lambda p, m: p.write_bytes(_header_garbled(m.video(p.with_suffix(".ok.avi"), 40))),
            "damaged container",
        ),
    ],
    ids=["empty", "not-a-video", "truncated", "header-garbled"],
)
def test_decode_errors_name_the_file_and_cause(tmp_path: Path, media, make, cause) -> None:
    path = tmp_path / "bad.avi"
    make(path, media)
    with pytest.raises(DecodeError) as err, FrameReader(str(path), (), _settings()) as reader:
        list(reader.chunks(1 << 16))
    assert str(err.value).startswith(f"{path}: {cause}") and "\n" not in str(err.value)


def _header_garbled(video: Path) -> bytes:
    """The AVI with every byte before its first frame's JPEG replaced by noise: ffmpeg then
    guesses MJPEG from the content and decodes some of the frames."""
    data = video.read_bytes()
    first = data.index(b"00dc") + 8  # the first frame chunk's id and size, then its JPEG
    return random.Random(0).randbytes(first) + data[first:]


def test_the_cause_skips_the_stream_description() -> None:
    lines = [
        "Input #0, avi, from '/data/corrupt_but_named.avi':",
        "  Stream #0:0: Video: mjpeg, yuvj444p, 64x48, 25 fps",
        "[mjpeg @ 0x55] error count: 64",
    ]
    assert ffmpeg_cause(lines) == "error count: 64"


def test_decode_resizes_and_converts_inside_ffmpeg(tmp_path: Path, media) -> None:
    frames = media.frames(tmp_path / "f", [f"{i}.png" for i in range(5)], size=(48, 64))
    with FrameReader(str(tmp_path / "f"), tuple(map(str, frames)), _settings()) as reader:
        data = b"".join(reader.chunks(3 * 48 * 64))  # 3 frames per chunk
        assert reader.shape == FrameShape(48, 64, 1) and reader.frames_read == 5
        assert (reader.fps, reader.start_s) == (None, 0.0)  # a folder has no clock of its own
    assert len(data) == 5 * 48 * 64
    settings = _settings(size=(16, 24), channels=3)
    with FrameReader(str(tmp_path / "f"), tuple(map(str, frames)), settings) as reader:
        assert sum(len(c) for c in reader.chunks(1 << 20)) == 5 * 16 * 24 * 3


@pytest.mark.parametrize(
    ("name", "rate", "start_s", "fps"),
    [
        ("v.avi", "12", 0.0, 12.0),
        ("v.mp4", "30000/1001", 0.0, 30000 / 1001),
        ("v.mp4", "12", 2.5, 12.0),
    ],
    ids=["avi-12fps", "mp4-29.97fps", "mp4-starts-at-2.5s"],
)
def test_decode_reads_the_source_clock(tmp_path: Path, media, name, rate, start_s, fps) -> None:
    path = media.video(tmp_path / name, 6, rate=rate, start_s=start_s)
    with FrameReader(str(path), (), _settings(size=(16, 16))) as reader:
        assert reader.fps == pytest.approx(fps, abs=1e-6)
        assert reader.start_s == pytest.approx(start_s, abs=1e-3)
        assert sum(len(c) for c in reader.chunks(1 << 20)) == 6 * 16 * 16


@pytest.mark.parametrize(
    ("line", "rate"),
    [
        ("Stream #0:0: Video: mjpeg, yuvj444p, 64x48, 25 fps, 25 tbr, 25 tbn", 25.0),
        ("Stream #0:0[0x1](und): Video: h264, 64x48, 23.98 fps, 23.98 tbr, 24k tbn", 24000 / 1001),
        ("Stream #0:1: Video: h264, yuv420p, 64x48, 12.5 fps, 25 tbr, 1k tbn", 12.5),
        ("Stream #0:0: Video: vp9, yuv420p, 64x48, 29.97 tbr, 1k tbn", 30000 / 1001),
        ("Stream #0:0: Video: h264, yuv420p, 64x48, 30k tbr, 90k tbn", 30000.0),
        ("Stream #0:0: Video: rawvideo, gray, 64x48, 90k tbn", None),
    ],
    ids=["fps", "ntsc-film", "fps-over-tbr", "tbr-only", "tbr-thousands", "none"],
)
def test_stream_rate_prefers_fps_then_tbr(line: str, rate: float | None) -> None:
    assert stream_rate(line) == (pytest.approx(rate, abs=1e-9) if rate else None)
