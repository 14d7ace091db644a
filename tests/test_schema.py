"""The Parquet contract: schema, frame packing and unpacking, and the reader API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.data import list_shards, read_manifest, validate_data, video_clock
from pipelines.errors import UserError
from pipelines.schema import (
    MANIFEST_SCHEMA,
    SCHEMA,
    FrameShape,
    frame_batch,
    frames_to_numpy,
    shape_from_schema,
    shard_schema,
)


def _batch(n: int, shape: FrameShape, start: int = 0) -> tuple[pa.RecordBatch, np.ndarray]:
    rng = np.random.default_rng(n)
    pixels = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)  # (n, H, W, C)
    labels = (np.arange(n) % 3 == 0).astype(np.int8)
    batch = frame_batch(
        dataset="d", split="test", video_id="v", start_index=start, labels=labels,
        pixels=pixels.tobytes(), shape=shape,
    )  # fmt: skip
    return batch, pixels


def test_schema_columns_and_types() -> None:
    assert SCHEMA.names == ["dataset", "split", "video_id", "frame_index", "label", "frame"]
    assert SCHEMA.field("frame_index").type == pa.int32()
    assert SCHEMA.field("label").type == pa.int8()
    assert SCHEMA.field("frame").type == pa.binary()
    assert "error" in MANIFEST_SCHEMA.names and "content_hash" in MANIFEST_SCHEMA.names


@pytest.mark.parametrize("shape", [FrameShape(4, 6, 1), FrameShape(5, 3, 3)])
def test_frames_round_trip_through_parquet(tmp_path: Path, shape: FrameShape) -> None:
    batch, pixels = _batch(7, shape, start=10)
    path = tmp_path / "v.parquet"
    with pq.ParquetWriter(path, shard_schema(shape)) as writer:
        writer.write_batch(batch.slice(0, 4), row_group_size=4)
        writer.write_batch(batch.slice(4), row_group_size=3)
    table = pq.read_table(path)
    assert pq.ParquetFile(path).num_row_groups == 2
    assert shape_from_schema(table.schema) == shape
    assert table.column("frame_index").to_pylist() == list(range(10, 17))
    np.testing.assert_array_equal(frames_to_numpy(table.column("frame"), shape), pixels)


def test_frames_to_numpy_handles_slices_chunks_and_large_binary() -> None:
    shape = FrameShape(3, 2, 1)
    batch, pixels = _batch(6, shape)
    column = batch.column("frame")
    np.testing.assert_array_equal(frames_to_numpy(column.slice(2, 3), shape), pixels[2:5])
    chunked = pa.chunked_array([column.slice(0, 2), column.slice(2)])
    np.testing.assert_array_equal(frames_to_numpy(chunked, shape), pixels)
    large = column.cast(pa.large_binary()).slice(1)
    np.testing.assert_array_equal(frames_to_numpy(large, shape), pixels[1:])
    assert frames_to_numpy(column.slice(0, 0), shape).shape == (0, 3, 2, 1)


def test_frames_to_numpy_rejects_frames_of_another_size() -> None:
    batch, _ = _batch(3, FrameShape(2, 2, 1))
    with pytest.raises(ValueError, match="not all 8 bytes"):
        frames_to_numpy(batch.column("frame"), FrameShape(2, 4, 1))


def test_frame_batch_checks_pixel_count() -> None:
    with pytest.raises(ValueError, match="bytes of pixels"):
        frame_batch(
            dataset="d", split="train", video_id="v", start_index=0,
            labels=np.zeros(2, np.int8), pixels=b"\0" * 7, shape=FrameShape(2, 2, 1),
        )  # fmt: skip


def _write_data(root: Path, shape: FrameShape, statuses: dict[str, str]) -> None:
    """A DATA folder by hand: one test shard per 'ok' video, a manifest, a summary."""
    (root / "test").mkdir(parents=True)
    rows = []
    for video_id, status in statuses.items():
        ok = status == "ok"
        if ok:
            batch, _ = _batch(3, shape)
            pq.write_table(
                pa.Table.from_batches([batch]).replace_schema_metadata(
                    shard_schema(shape).metadata
                ),
                root / "test" / f"{video_id}.parquet",
            )
        rows.append({
            "source": f"/src/{video_id}", "split": "test", "video_id": video_id,
            "content_hash": "sha256:0", "frames": 3 if ok else 0, "anomalous_frames": 1,
            "height": shape.height, "width": shape.width, "status": status,
            "fps": 12.5 if ok else None, "start_s": 0.04 if ok else None,
            "error": None if ok else "x: broken",
            "shard": f"test/{video_id}.parquet" if ok else None,
        })  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), root / "manifest.parquet")
    summary = {
        "dataset": "d", "layout": "videos", "height": shape.height, "width": shape.width,
        "channels": shape.channels, "failed": [],
        "splits": {"train": {"videos": 0, "frames": 0, "anomalous_frames": 0},
                   "test": {"videos": 1, "frames": 3, "anomalous_frames": 1}},
    }  # fmt: skip
    (root / "summary.json").write_text(json.dumps(summary))


def test_reader_lists_only_ingested_shards_in_order(tmp_path: Path) -> None:
    shape = FrameShape(2, 3, 1)
    _write_data(tmp_path, shape, {"b10": "ok", "a": "failed", "b2": "ok"})
    (tmp_path / "test" / ".b3.parquet.tmp-123").write_bytes(b"half")
    shards = list_shards(str(tmp_path), "test")
    assert [Path(s).name for s in shards] == ["b10.parquet", "b2.parquet"]
    summary = validate_data(str(tmp_path), splits=("test",))
    assert summary.shape == shape and summary.dataset == "d"


def test_validate_data_explains_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no summary.json"):
        validate_data(str(tmp_path))
    _write_data(tmp_path / "d", FrameShape(2, 3, 1), {"v": "ok"})
    with pytest.raises(UserError, match="no ingested videos in split 'train'"):
        validate_data(str(tmp_path / "d"))
    with pytest.raises(UserError, match="unknown split"):
        list_shards(str(tmp_path / "d"), "val")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "d" / "manifest.parquet")
    with pytest.raises(UserError, match="not an mnad manifest"):
        list_shards(str(tmp_path / "d"), "test")


def test_video_clock_names_each_ingested_videos_fps_and_start(tmp_path: Path) -> None:
    _write_data(tmp_path, FrameShape(2, 3, 1), {"b10": "ok", "a": "failed", "b2": "ok"})
    assert video_clock(str(tmp_path)) == {"b10": (12.5, 0.04), "b2": (12.5, 0.04)}
    assert video_clock(str(tmp_path), "train") == {}
    with pytest.raises(UserError, match="unknown split"):
        video_clock(str(tmp_path), "val")


def test_a_manifest_from_before_the_clock_columns_reads_with_nulls(tmp_path: Path) -> None:
    _write_data(tmp_path, FrameShape(2, 3, 1), {"v": "ok", "w": "failed"})
    old = pq.read_table(tmp_path / "manifest.parquet").drop_columns(["fps", "start_s"])
    pq.write_table(old, tmp_path / "manifest.parquet")
    manifest = read_manifest(str(tmp_path))
    assert manifest.schema.equals(MANIFEST_SCHEMA)
    assert manifest.drop_columns(["fps", "start_s"]).equals(old)
    assert (
        manifest.column("fps").to_pylist() == manifest.column("start_s").to_pylist() == [None] * 2
    )
    assert video_clock(str(tmp_path)) == {"v": (None, 0.0)}
