"""Ingest on a real local Ray: synthetic videos, every kind of bad input, re-runs, Ped2, the
source's frame rate, and what completion says of the DATA folder a run left."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from pipelines.data import list_shards, read_manifest, validate_data, video_clock
from pipelines.ingest import IngestConfig, IngestResult, completion, run_ingest
from pipelines.ingest.labels import parse_ucsd_m
from pipelines.schema import FrameShape, frames_to_numpy, shape_from_schema
from pipelines.synth import SynthConfig, synthesize


def _ingest(source: Path, out: Path, **kwargs) -> IngestResult:
    return run_ingest(IngestConfig(str(source), str(out), quiet=True, **kwargs))


def _manifest(out: Path) -> dict[str, dict]:
    """Manifest rows by '<split>/<video_id>'."""
    return {f"{r['split']}/{r['video_id']}": r for r in read_manifest(str(out)).to_pylist()}


@pytest.fixture(scope="module")
def synth_tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "street"
    synthesize(SynthConfig(out=str(out), size="tiny", quiet=True))
    return out


@pytest.mark.ray
def test_synthetic_source_ingests_with_labels(ray_local, synth_tiny: Path, tmp_path) -> None:
    out = tmp_path / "data"
    result = _ingest(synth_tiny, out, size=(32, 32), row_group_mib=0.01)
    assert result.exit_status == 0 and result.failed == ()
    summary = validate_data(str(out))
    assert result.splits == summary.splits and (result.height, result.width) == (32, 32)
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
    result = _ingest(src, out, row_group_mib=0.01)
    assert result.exit_status == 1
    rows = {k.split("/")[1]: r for k, r in _manifest(out).items()}
    assert result.failed == tuple(
        rows[k]["error"] for k in ("t2_unreadable", "t3_mixed", "t4_short_labels")
    )
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
    done = completion(IngestConfig(str(src), str(out), row_group_mib=0.01))
    assert (done.complete, done.reason, done.partial) == (
        False, "3 video(s) failed last time", True,
    )  # fmt: skip


@pytest.mark.ray
def test_bad_video_files_fail_alone(ray_local, media, tmp_path: Path) -> None:
    src = tmp_path / "archive"
    media.video(src / "good.mp4", 12)
    (src / "empty.avi").write_bytes(b"")
    (src / "text.mp4").write_text("not a video at all")
    data = media.video(tmp_path / "full.avi", 60).read_bytes()
    (src / "truncated.avi").write_bytes(data[: len(data) // 2])
    out = tmp_path / "data"
    argv = ["ingest", str(src), "--out", str(out), "--row-group-mib", "0.01", "--quiet"]
    assert main(argv) == 1  # `mnad ingest` exits 1 when a video failed
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
    assert _ingest(src, out, size=(32, 32)).exit_status == 0
    first = _manifest(out)
    shard = out / "test/01.parquet"
    stamp = shard.stat().st_mtime_ns
    (out / "test/.02.parquet.tmp-deadbeef").write_bytes(b"left by an interrupted run")
    (out / ".manifest.parquet.tmp-deadbeef").write_bytes(b"left by an interrupted run")

    shutil.copy(src / "training_videos/01.avi", src / "training_videos/03.avi")
    again = _ingest(src, out, size=(32, 32))
    assert (again.exit_status, again.ingested, again.skipped) == (0, 1, 5)
    second = _manifest(out)
    assert second.pop("train/03")["status"] == "ok"
    assert {r["status"] for r in second.values()} == {"skipped"}
    assert {k: r["content_hash"] for k, r in second.items()} == {
        k: r["content_hash"] for k, r in first.items()
    }
    assert shard.stat().st_mtime_ns == stamp
    assert not any(p.name.startswith(".") for p in (out / "test").iterdir())
    assert not any(p.name.startswith(".") for p in out.iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["train"]["videos"] == 3 and summary["skipped"] == 5

    assert _ingest(src, out, size=(24, 24)).exit_status == 0  # other settings: nothing is reused
    assert {r["status"] for r in _manifest(out).values()} == {"ok"}


@pytest.mark.ray
def test_manifest_records_each_sources_clock(ray_local, media, tmp_path: Path) -> None:
    """Video files keep their own frame rate; frame folders have the --fps given, or none;
    a manifest from before the clock columns is read and its videos skipped."""
    src, out = tmp_path / "st", tmp_path / "data"
    media.video(src / "training/videos/a12.avi", 6, rate="12")
    media.video(src / "training/videos/b_ntsc.mp4", 5, rate="30000/1001", start_s=2.5)
    media.frames(src / "testing/frames/f", ["0.jpg", "1.jpg", "2.jpg"])
    assert _ingest(src, out).exit_status == 0
    assert video_clock(str(out), "train") == {
        "a12": (12.0, 0.0), "b_ntsc": (pytest.approx(30000 / 1001, abs=1e-3), 2.5),
    }  # fmt: skip
    assert video_clock(str(out)) == {"f": (None, 0.0)}

    config = IngestConfig(str(src), str(out), fps=10, quiet=True)
    assert (completion(config).reason, completion(config).partial) == (
        "1 frame folder(s) ingested at another --fps", True,
    )  # fmt: skip
    assert main(["ingest", str(src), "--out", str(out), "--fps", "10", "--quiet"]) == 0
    assert {r["status"] for r in _manifest(out).values()} == {"skipped"}  # no shard changed
    assert video_clock(str(out)) == {"f": (10.0, 0.0)}
    assert video_clock(str(out), "train")["a12"] == (12.0, 0.0)
    assert completion(config).complete

    old = pq.read_table(out / "manifest.parquet").drop_columns(["fps", "start_s"])
    pq.write_table(old, out / "manifest.parquet")  # as written before ingest kept the clock
    assert _ingest(src, out, fps=10).skipped == 3
    rows = _manifest(out)
    assert {k: (r["status"], r["fps"], r["start_s"]) for k, r in rows.items()} == {
        "train/a12": ("skipped", None, None), "train/b_ntsc": ("skipped", None, None),
        "test/f": ("skipped", 10.0, 0.0),
    }  # fmt: skip


@pytest.mark.ray
def test_ped2_acceptance(ray_local, ped2: Path, tmp_path: Path) -> None:
    out = tmp_path / "ped2"
    assert _ingest(ped2, out, size=(64, 64)).exit_status == 0
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


@pytest.mark.ray
def test_completion_follows_the_source_and_the_settings(ray_local, media, tmp_path) -> None:
    src, out = tmp_path / "archive", tmp_path / "data"
    media.video(src / "a.avi", 6)
    media.video(src / "b.avi", 5)
    config = IngestConfig(str(src), str(out), size=(16, 16), quiet=True)
    assert completion(config).reason == "no summary.json yet"
    result = run_ingest(config)
    done = completion(config)
    assert done.complete and done.result == result
    assert done.reason == f"{out} holds every video of {src}"
    assert IngestResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    assert result.splits["test"] == {"videos": 2, "frames": 11, "anomalous_frames": 0}

    other = IngestConfig(str(src), str(out), size=(24, 24), quiet=True)
    assert completion(other).reason == "the source or the settings changed"
    assert not completion(other).partial
    media.video(src / "c.avi", 4)
    late = completion(config)
    assert (late.complete, late.reason, late.partial, late.result) == (
        False, "1 of 3 videos not ingested yet", True, None,
    )  # fmt: skip
    (out / "manifest.parquet").unlink()
    assert completion(config).reason == "no manifest yet"
