"""Long videos in segments: cut on their own timestamps, decoded apart, joined into one shard
byte for byte as a decode of the whole file in one pass."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from pipelines.data import read_manifest
from pipelines.errors import OptionError
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.ingest.decode import (
    DecodeError,
    DecodeSettings,
    FrameReader,
    Probe,
    Window,
    _LogReader,
    cut_pts,
    probe,
)
from pipelines.ingest.layouts import VideoSource
from pipelines.ingest.segments import windows
from pipelines.ingest.video import IngestPlan, ingest_segment, join_video
from pipelines.schema import frames_to_numpy, shape_from_schema

SETTINGS = DecodeSettings(size=(24, 32))

# Each codec as ffmpeg writes it: h264 with B-frames (pts out of decode order) and a GOP that
# does not line up with the cuts, VP9 in WebM, Motion-JPEG in AVI (every frame a keyframe),
# h264 at an NTSC rate starting at 1.5 s.
CODECS = {
    "h264.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-g", "17"],
    "vp9.webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "23"],
    "mjpeg.avi": ["-c:v", "mjpeg"],
    "ntsc.mkv": ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-output_ts_offset", "1.5"],
}
RATES = {"ntsc.mkv": "30000/1001"}


def _encode(path: Path, seconds: float, codec: list[str], rate: str = "10") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size=40x48:rate={rate}", "-t", str(seconds), "-pix_fmt", "yuv420p",
         *codec, str(path)],
        check=True,
    )  # fmt: skip
    return path


def _one_pass(path: Path) -> bytes:
    with FrameReader(str(path), (), SETTINGS) as reader:
        return b"".join(reader.chunks(1 << 20))


def test_windows_are_at_most_max_segments_of_equal_length() -> None:
    cut = windows(Probe(100.0, 0.0, 25.0), 10, max_segments=4)
    assert [(w.start_s, w.stop_s) for w in cut] == [(None, 25.0), (25.0, 50.0), (50.0, 75.0),
                                                    (75.0, None)]  # fmt: skip
    assert len(windows(Probe(100.0, 0.0, 25.0), 10, max_segments=0)) == 10
    assert windows(Probe(100.0, 0.0, 25.0), 10, max_segments=1) == (Window(),)


def test_windows_cut_a_long_video_into_equal_segments() -> None:
    assert windows(Probe(100.0, 0.0, 25.0), 0) == (Window(),)
    assert windows(Probe(100.0, 0.0, 25.0), 100) == (Window(),)
    assert windows(Probe(None, 0.0, 25.0), 10) == (Window(),)
    cut = windows(Probe(125.0, 1.5, 25.0), 60)
    assert [(w.start_s, w.stop_s) for w in cut] == [
        (None, 43.166667), (43.166667, 84.833333), (84.833333, None),
    ]  # fmt: skip
    assert Window(10.0, 20.0, 2.0).seek_s(1.5) == 6.5 and Window(1.0, 2.0).seek_s(0.0) is None


def test_cut_pts_rounds_microseconds_as_ffmpeg_does() -> None:
    # av_rescale_q of the cut's microseconds: 100000 * 10240 / 10**6 = 1024 exactly
    assert cut_pts(0.1, Fraction(1, 10240)) == 1024
    assert cut_pts(1 / 3, Fraction(1, 90000)) == 30000  # 333333 us = 29999.97 ticks
    assert cut_pts(0.000001, Fraction(1, 500000)) == 1  # half a tick: away from zero
    assert cut_pts(-0.000001, Fraction(1, 500000)) == -1
    assert cut_pts(0.000001, Fraction(1, 400000)) == 0  # 0.4 of a tick
    assert cut_pts(None, Fraction(1, 90000)) is None


@pytest.mark.parametrize("name", sorted(CODECS))
def test_windows_partition_the_frames_of_one_pass(tmp_path: Path, name: str) -> None:
    path = _encode(tmp_path / name, 7.3, CODECS[name], RATES.get(name, "10"))
    whole = _one_pass(path)
    cuts = windows(probe(str(path), SETTINGS), 1.0)
    assert len(cuts) >= 8  # a container's duration may count its start time too
    pieces, before = [], []
    for window in cuts:
        with FrameReader(str(path), (), SETTINGS, window) as reader:
            pieces.append(b"".join(reader.chunks(5 * 24 * 32)))  # chunks across the cut
            before.append(reader.saw_before)
    assert before == [False] + [True] * (len(cuts) - 1)  # each seek landed before its window
    assert b"".join(pieces) == whole
    assert sum(1 for p in pieces if p) >= 7  # (the last is empty where the duration is long)


def test_segments_join_into_the_shard_of_one_pass(tmp_path: Path) -> None:
    path = _encode(tmp_path / "src/long.mp4", 5.2, CODECS["h264.mp4"])
    video = VideoSource("test", "long", str(path))
    decode = DecodeSettings(imageio_ffmpeg.get_ffmpeg_exe(), size=(24, 32))
    plan = IngestPlan(str(tmp_path / "src"), str(tmp_path / "out"), "d", decode, 7 * 24 * 32)
    cuts = windows(probe(str(path), decode), 1.0)
    parts = [ingest_segment(video, i, w, plan) for i, w in enumerate(cuts)]
    assert len(parts) == 6 and all(p.part for p in parts)
    row = join_video(video, "sha256:x", parts, plan)
    assert row["status"] == "ok" and row["frames"] == 52 and row["fps"] == 10.0
    assert sorted(p.name for p in (tmp_path / "out/test").iterdir()) == [
        "long.parquet"
    ]  # the parts are gone
    table = pq.read_table(tmp_path / "out/test/long.parquet")
    assert table.column("frame_index").to_pylist() == list(range(52))
    pixels = frames_to_numpy(table.column("frame"), shape_from_schema(table.schema))
    assert pixels.tobytes() == _one_pass(path)


@pytest.mark.ray
@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm"])
def test_ingest_splits_a_long_video_and_matches_one_pass(
    ray_local, tmp_path: Path, name: str, capsys
) -> None:
    src = tmp_path / "src"
    path = _encode(src / name, 4.5, CODECS[name])
    _encode(src / "short.avi", 0.8, CODECS["mjpeg.avi"])
    config = IngestConfig(
        str(src), str(tmp_path / "out"), layout="videos", size=(24, 32), segment_seconds=1.0,
        row_group_mib=0.005,
    )  # fmt: skip
    result = run_ingest(config)
    assert result.exit_status == 0, result.failed
    # 5 segments of 1 s, or twice as many as the cluster runs at once when that is fewer
    cut = min(5, 2 * int(ray.cluster_resources()["CPU"]))
    printed = capsys.readouterr().out
    assert f"{path} is longer than 1 s: {cut} segments, decoded in parallel" in printed
    assert f"{cut} segments decoded and joined into 1 shard(s)" in printed
    rows = {r["video_id"]: r for r in read_manifest(str(tmp_path / "out")).to_pylist()}
    assert len(rows) == 2 and rows["short"]["frames"] == 8
    stem = name.split(".")[0]
    assert rows[stem]["frames"] == 45 and rows[stem]["status"] == "ok"
    table = pq.read_table(tmp_path / "out" / rows[stem]["shard"])
    assert table.column("frame_index").to_pylist() == list(range(45))
    assert set(table.column("label").to_pylist()) == {-1}
    pixels = frames_to_numpy(table.column("frame"), shape_from_schema(table.schema))
    np.testing.assert_array_equal(pixels.reshape(-1), np.frombuffer(_one_pass(path), np.uint8))
    names = sorted(p.name for p in (tmp_path / "out/test").iterdir())
    assert names == sorted([f"{stem}.parquet", "short.parquet"])  # no part file left


def test_segment_seconds_must_be_a_number_at_least_0() -> None:
    assert IngestConfig("src", "out").segment_seconds == 120.0
    assert IngestConfig("src", "out", segment_seconds=0).segment_seconds == 0
    with pytest.raises(OptionError, match="--segment-seconds must be a number >= 0"):
        IngestConfig("src", "out", segment_seconds=-1.0)


@pytest.mark.ray
def test_a_segment_that_fails_fails_its_video_alone(ray_local, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    path = _encode(src / "cut.avi", 6.0, CODECS["mjpeg.avi"])
    data = bytearray(path.read_bytes())
    middle = len(data) * 2 // 3
    data[middle : middle + 4000] = bytes(4000)  # frames of the fourth second or so zeroed
    path.write_bytes(bytes(data))
    _encode(src / "short.avi", 0.8, CODECS["mjpeg.avi"])
    config = IngestConfig(
        str(src), str(tmp_path / "out"), layout="videos", size=(24, 32), segment_seconds=1.0
    )
    result = run_ingest(config)
    assert result.exit_status == 1
    rows = {r["video_id"]: r for r in read_manifest(str(tmp_path / "out")).to_pylist()}
    assert rows["short"]["status"] == "ok" and rows["short"]["frames"] == 8
    assert rows["cut"]["status"] == "failed" and rows["cut"]["shard"] is None
    assert rows["cut"]["error"].startswith(str(path)), rows["cut"]["error"]
    err = capsys.readouterr().err
    assert f"mnad ingest: {path}: " in err and "Traceback" not in err
    names = sorted(p.name for p in (tmp_path / "out/test").iterdir())
    assert names == ["short.parquet"]  # no part file of the failed video left


def _window_log(window: Window, lines: list[str]) -> FrameReader:
    """A reader of ``window`` whose ffmpeg log was ``lines`` (what its decode checks)."""
    reader = FrameReader("v.mp4", (), SETTINGS, window)
    reader._log = _LogReader(None)
    for line in lines:
        reader._log._parse(line)
    return reader


def test_a_window_reads_its_edges_and_order_from_the_logged_frames() -> None:
    base = "[showinfo@edge @ 0x1] config in time_base: 1/12800, frame_rate: 25/1"
    edge = "[showinfo@edge @ 0x1] n:   {} pts: {} pts_time:0 duration: 512"
    lines = [base, edge.format(0, 230400), edge.format(1, 384000)]  # 18 s, then 30 s
    reader = _window_log(Window(20.0, 30.0), lines)
    reader._check_window()
    assert reader.saw_before and reader.reached_stop
    reader = _window_log(Window(18.0, 30.01), lines)  # 30 s is before the end: not reached
    reader._check_window()
    assert not reader.saw_before and not reader.reached_stop
    order = "[showinfo@order @ 0x2] n:   0 pts: 1024 pts_time:0.08 duration: 512"
    with pytest.raises(DecodeError, match="v.mp4: frame timestamps do not increase"):
        _window_log(Window(20.0, 30.0), [*lines, order])._check_window()
    nopts = "[showinfo@order @ 0x2] n:   0 pts: NOPTS pts_time:NOPTS duration: 512"
    with pytest.raises(DecodeError, match="v.mp4: ffmpeg logged no timestamp"):
        _window_log(Window(20.0, 30.0), [*lines, nopts])._check_window()
