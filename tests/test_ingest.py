"""Ingest on a real local Ray: synthetic videos, every kind of bad input, re-runs, Ped2."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipelines.decode import DecodeError, DecodeSpec, FrameReader, ffmpeg_cause
from pipelines.errors import UserError
from pipelines.ingest import (
    IngestConfig,
    IngestPlan,
    default_dataset_name,
    local_copy,
    run_ingest,
    write_shard,
)
from pipelines.labels import FrameLabels, parse_ucsd_m
from pipelines.layouts import VideoSource
from pipelines.schema import (
    FrameShape,
    frames_to_numpy,
    list_shards,
    read_manifest,
    shape_from_schema,
    validate_data,
)
from pipelines.synth import SynthConfig, synthesize


def _ingest(source: Path, out: Path, **kwargs) -> int:
    return run_ingest(IngestConfig(str(source), str(out), quiet=True, **kwargs))


def _manifest(out: Path) -> dict[str, dict]:
    """Manifest rows by '<split>/<video_id>'."""
    return {f"{r['split']}/{r['video_id']}": r for r in read_manifest(str(out)).to_pylist()}


@pytest.fixture(scope="module")
def synth_tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "street"
    synthesize(SynthConfig(out=str(out), size="tiny", quiet=True))
    return out


def test_config_is_validated() -> None:
    with pytest.raises(UserError, match="--size"):
        IngestConfig("src", "out", size=(0, 64))
    with pytest.raises(UserError, match="--channels"):
        IngestConfig("src", "out", channels=2)
    with pytest.raises(UserError, match="--dataset"):
        IngestConfig("src", "out", dataset="a b")
    assert default_dataset_name("/data/ucsd_ped2/") == "ped2"
    assert default_dataset_name("s3://bucket/UCSDped2") == "ped2"
    assert default_dataset_name("/x/My Archive") == "my_archive"


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (lambda p, m: p.write_bytes(b""), "empty file"),
        (lambda p, m: p.write_text("hello, not a video"), "not a readable video"),
        (
            lambda p, m: p.write_bytes(m.video(p.with_suffix(".ok.avi"), 40).read_bytes()[:9000]),
            "corrupt or truncated video",
        ),
        (lambda p, m: p.write_bytes(_header_garbled(m.video(p.with_suffix(".ok.avi"), 40))),
         "damaged container"),
    ],
    ids=["empty", "not-a-video", "truncated", "header-garbled"],
)
def test_decode_errors_name_the_file_and_cause(tmp_path: Path, media, make, cause) -> None:
    path = tmp_path / "bad.avi"
    make(path, media)
    with pytest.raises(DecodeError) as err, FrameReader(str(path), (), _spec()) as reader:
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


def _spec(**kwargs) -> DecodeSpec:
    return DecodeSpec(imageio_ffmpeg.get_ffmpeg_exe(), **kwargs)


def test_decode_resizes_and_converts_inside_ffmpeg(tmp_path: Path, media) -> None:
    frames = media.frames(tmp_path / "f", [f"{i}.png" for i in range(5)], size=(48, 64))
    with FrameReader(str(tmp_path / "f"), tuple(map(str, frames)), _spec()) as reader:
        data = b"".join(reader.chunks(3 * 48 * 64))  # 3 frames per chunk
        assert reader.shape == FrameShape(48, 64, 1) and reader.frames_read == 5
    assert len(data) == 5 * 48 * 64
    spec = _spec(size=(16, 24), channels=3)
    with FrameReader(str(tmp_path / "f"), tuple(map(str, frames)), spec) as reader:
        assert sum(len(c) for c in reader.chunks(1 << 20)) == 5 * 16 * 24 * 3


@pytest.mark.ray
def test_synthetic_source_ingests_with_labels(ray_local, synth_tiny: Path, tmp_path) -> None:
    out = tmp_path / "data"
    assert _ingest(synth_tiny, out, size=(32, 32), row_group_mib=0.01) == 0
    summary = validate_data(str(out))
    assert summary.shape == FrameShape(32, 32, 1) and summary.layout == "avenue"
    assert summary.dataset == "street"
    ranges = parse_ucsd_m((synth_tiny / "synth.m").read_text())
    shards = list_shards(str(out), "test")
    assert len(shards) == 3 and summary.splits["train"] == {
        "videos": 2, "frames": 96, "anomalous_frames": 0,
    }  # fmt: skip
    for shard, video_ranges in zip(shards, ranges, strict=True):
        table = pq.read_table(shard)
        assert pq.ParquetFile(shard).num_row_groups > 1  # bounded row groups
        assert table.column("frame_index").to_pylist() == list(range(48))
        labels = table.column("label").to_numpy()
        expected = np.zeros(48, np.int8)
        for start, end in video_ranges:
            expected[start - 1 : end] = 1
        np.testing.assert_array_equal(labels, expected)
        frames = frames_to_numpy(table.column("frame"), shape_from_schema(table.schema))
        assert frames.shape == (48, 32, 32, 1) and frames.std() > 5  # real pictures


@pytest.mark.ray
def test_bad_inputs_fail_alone(ray_local, media, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    names = [f"{i:03d}.jpg" for i in range(6)]
    media.frames(src / "training/frames/good", names)
    media.frames(src / "testing/frames/t1_ok", names)
    broken = media.frames(src / "testing/frames/t2_unreadable", names)
    broken[3].write_bytes(broken[3].read_bytes()[:200])
    mixed = media.frames(src / "testing/frames/t3_mixed", names)
    media.frames(tmp_path / "other", ["x.jpg"], size=(24, 32))[0].replace(mixed[4])
    media.frames(src / "testing/frames/t4_short_labels", names)
    (src / "gt.m").write_text(
        "".join(f"TestVideoFile{{end+1}}.gt_frame = [{r}];\n" for r in ("2:3", "1:1", "1:1", "1:9"))
    )
    out = tmp_path / "data"
    assert _ingest(src, out, row_group_mib=0.01) == 1
    rows = {k.split("/")[1]: r for k, r in _manifest(out).items()}
    assert {k: r["status"] for k, r in rows.items()} == {
        "good": "ok", "t1_ok": "ok", "t2_unreadable": "failed", "t3_mixed": "failed",
        "t4_short_labels": "failed",
    }  # fmt: skip
    assert rows["t2_unreadable"]["error"].startswith(f"{broken[3]}: unreadable frame")
    assert rows["t3_mixed"]["error"].startswith(f"{mixed[4]}: frame is 24x32 (HxW)")
    assert "gt.m: range [1:9] is outside frames 1..6" in rows["t4_short_labels"]["error"]
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert sorted(line for line in err_lines if line.startswith("mnad ingest: ")) == sorted(
        f"mnad ingest: {rows[k]['error']}" for k in ("t2_unreadable", "t3_mixed", "t4_short_labels")
    )
    # nothing of a failed video is left, under its name or a temporary one
    assert sorted(p.name for p in (out / "test").iterdir()) == ["t1_ok.parquet"]
    assert json.loads((out / "summary.json").read_text())["splits"]["test"]["videos"] == 1


@pytest.mark.ray
def test_bad_video_files_fail_alone(ray_local, media, tmp_path: Path) -> None:
    src = tmp_path / "archive"
    media.video(src / "good.mp4", 12)
    (src / "empty.avi").write_bytes(b"")
    (src / "text.mp4").write_text("not a video at all")
    data = media.video(tmp_path / "full.avi", 60).read_bytes()
    (src / "truncated.avi").write_bytes(data[: len(data) // 2])
    out = tmp_path / "data"
    assert _ingest(src, out, row_group_mib=0.01) == 1
    rows = {k.split("/")[1]: r for k, r in _manifest(out).items()}
    assert rows["good"]["status"] == "ok" and rows["good"]["frames"] == 12
    causes = {k: r["error"].split(": ", 1)[1] for k, r in rows.items() if r["error"]}
    assert causes["empty"] == "empty file"
    assert causes["text"].startswith("not a readable video")
    assert causes["truncated"].startswith("corrupt or truncated video: stopped after")
    assert sorted(p.name for p in (out / "test").iterdir()) == ["good.parquet"]
    assert (
        pq.read_table(out / "test/good.parquet").column("label").to_pylist() == [-1] * 12
    )  # no ground truth


@pytest.mark.ray
def test_rerun_skips_unchanged_and_adds_new(ray_local, synth_tiny: Path, tmp_path) -> None:
    src = tmp_path / "src"
    shutil.copytree(synth_tiny, src)
    out = tmp_path / "data"
    assert _ingest(src, out, size=(32, 32)) == 0
    first = _manifest(out)
    shard = out / "test/01.parquet"
    stamp = shard.stat().st_mtime_ns
    (out / "test/.02.parquet.tmp-deadbeef").write_bytes(b"left by an interrupted run")

    shutil.copy(src / "training_videos/01.avi", src / "training_videos/03.avi")
    assert _ingest(src, out, size=(32, 32)) == 0
    second = _manifest(out)
    assert second.pop("train/03")["status"] == "ok"
    assert {r["status"] for r in second.values()} == {"skipped"}
    assert {k: r["content_hash"] for k, r in second.items()} == {
        k: r["content_hash"] for k, r in first.items()
    }
    assert shard.stat().st_mtime_ns == stamp
    assert not any(p.name.startswith(".") for p in (out / "test").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["train"]["videos"] == 3 and summary["skipped"] == 5

    assert _ingest(src, out, size=(24, 24)) == 0  # other settings: nothing is reused
    assert {r["status"] for r in _manifest(out).values()} == {"ok"}


@pytest.mark.ray
def test_ped2_acceptance(ray_local, ped2: Path, tmp_path: Path) -> None:
    out = tmp_path / "ped2"
    assert _ingest(ped2, out, size=(64, 64)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "ped2"
    assert summary["splits"] == {
        "train": {"videos": 16, "frames": 2550, "anomalous_frames": 0},
        "test": {"videos": 12, "frames": 2010, "anomalous_frames": 1648},
    }
    per_video = parse_ucsd_m((ped2 / "UCSDped2.m").read_text())
    for shard, ranges in zip(list_shards(str(out), "test"), per_video, strict=True):
        labels = pq.read_table(shard, columns=["label"]).column("label").to_numpy()
        ((start, end),) = ranges
        expected = np.zeros(len(labels), np.int8)
        expected[start - 1 : end] = 1
        np.testing.assert_array_equal(labels, expected)


def _plan(source: Path, out: Path, **kwargs) -> IngestPlan:
    decode = DecodeSpec(imageio_ffmpeg.get_ffmpeg_exe(), size=(16, 16))
    return IngestPlan(str(source), str(out), "d", decode, row_group_bytes=4 * 256, **kwargs)


class _Interrupt(FrameLabels):
    """Labels that stop the run (as Ctrl-C would) when the third chunk is written."""

    def chunk(self, start: int, n: int) -> np.ndarray:
        if start >= 8:
            raise KeyboardInterrupt
        return super().chunk(start, n)


def test_interrupted_write_leaves_no_shard(tmp_path: Path, media) -> None:
    video = VideoSource("test", "v", str(media.video(tmp_path / "src/v.avi", 30)))
    (tmp_path / "out/test").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        write_shard(video, video, _Interrupt("", fill=0), _plan(tmp_path / "src", tmp_path / "out"))
    assert list((tmp_path / "out/test").iterdir()) == []
    frames, _, shape = write_shard(
        video, video, FrameLabels.constant(0), _plan(tmp_path / "src", tmp_path / "out")
    )
    assert frames == 30 and pq.ParquetFile(tmp_path / "out/test/v.parquet").num_row_groups == 8


def test_remote_sources_are_copied_and_hashed_like_local_ones(tmp_path: Path, media) -> None:
    names = ["0.jpg", "1.jpg", "2.jpg"]
    frames = tuple(str(p) for p in media.frames(tmp_path / "f", names))
    video = VideoSource("train", "f", str(tmp_path / "f"), frames)
    remote = pafs.SubTreeFileSystem("/", pafs.LocalFileSystem())  # not a LocalFileSystem
    with local_copy(video, pafs.LocalFileSystem()) as (same, local_hash):
        assert same == video
    with local_copy(video, remote) as (copy, remote_hash):
        assert copy.frames != video.frames and len(copy.frames) == 3
        assert [Path(p).read_bytes() for p in copy.frames] == [Path(p).read_bytes() for p in frames]
    assert remote_hash == local_hash and not Path(copy.path).exists()
    (tmp_path / "f/1.jpg").write_bytes((tmp_path / "f/2.jpg").read_bytes())
    with local_copy(video, pafs.LocalFileSystem()) as (_, changed):
        assert changed != local_hash
