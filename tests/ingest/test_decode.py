"""Decoding with ffmpeg (pipelines.ingest.decode): every kind of bad file, resizing, grey."""

from __future__ import annotations

import random
from pathlib import Path

import imageio_ffmpeg
import pytest

from pipelines.ingest.decode import DecodeError, DecodeSettings, FrameReader, ffmpeg_cause
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
    assert len(data) == 5 * 48 * 64
    settings = _settings(size=(16, 24), channels=3)
    with FrameReader(str(tmp_path / "f"), tuple(map(str, frames)), settings) as reader:
        assert sum(len(c) for c in reader.chunks(1 << 20)) == 5 * 16 * 24 * 3
