"""Reading a DATA folder (the ingest stage's output): its summary, manifest and shards.

Train and score read DATA only through this module: :func:`validate_data` checks a folder
before any work, :func:`list_shards` names the shards of a split, :func:`video_clock` gives
each video's frame rate and start time, :func:`read_frames` reads a run of one video's frames
and :func:`video_clips` streams a video's clips in frame order.
The files themselves are declared in :mod:`pipelines.schema`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mnad.clips import fitted_shape, model_frames, stack_clips
from mnad.config import ModelConfig
from pipelines.errors import UserError
from pipelines.schema import (
    DATA_SUMMARY_FILE,
    INGESTED,
    MANIFEST_FILE,
    MANIFEST_LATER_COLUMNS,
    MANIFEST_SCHEMA,
    SCHEMA,
    SPLITS,
    FrameShape,
    frames_to_numpy,
    shape_from_schema,
)
from pipelines.storage import is_file, join, resolve


def shard_relpath(split: str, video_id: str) -> str:
    """Where a video's shard lives, relative to DATA."""
    return f"{split}/{video_id}.parquet"


@dataclass(frozen=True)
class DataSummary:
    """What train and score need to know about a DATA folder (from its summary.json)."""

    dataset: str
    layout: str
    shape: FrameShape | None  # None when the videos were ingested at different sizes
    splits: dict[str, dict[str, int]]  # split -> {"videos", "frames", "anomalous_frames"}
    failed: int


def read_summary(data: str) -> DataSummary:
    """Read DATA/summary.json (UserError if it is missing or not an mnad summary)."""
    fs, root = resolve(data)
    path = join(root, DATA_SUMMARY_FILE)
    try:
        with fs.open_input_stream(path) as f:
            raw = json.loads(f.read())
    except FileNotFoundError:
        raise UserError(f"{data}: no {DATA_SUMMARY_FILE}; run `mnad ingest` first") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not JSON ({err})") from None
    try:
        size = raw["height"], raw["width"], raw["channels"]
        return DataSummary(
            dataset=raw["dataset"],
            layout=raw["layout"],
            shape=FrameShape(*size) if None not in size else None,
            splits={s: {k: int(v) for k, v in raw["splits"][s].items()} for s in raw["splits"]},
            failed=len(raw["failed"]),
        )
    except (KeyError, TypeError) as err:
        raise UserError(f"{path}: not an mnad summary (missing {err})") from None


def read_manifest(data: str) -> pa.Table | None:
    """DATA/manifest.parquet as a table of MANIFEST_SCHEMA, or None if there is none yet.

    A manifest written before the columns of ``MANIFEST_LATER_COLUMNS`` existed reads with
    nulls in them."""
    if not is_file(join(data, MANIFEST_FILE)):
        return None
    fs, root = resolve(data)
    path = join(root, MANIFEST_FILE)
    table = pq.read_table(path, filesystem=fs)
    names = table.schema.names
    for name in MANIFEST_LATER_COLUMNS:
        if name not in table.schema.names:
            field = MANIFEST_SCHEMA.field(name)
            table = table.append_column(field, pa.nulls(len(table), field.type))
    if set(table.schema.names) == set(MANIFEST_SCHEMA.names):
        table = table.select(MANIFEST_SCHEMA.names)
    if not table.schema.equals(MANIFEST_SCHEMA):
        raise UserError(f"{path}: not an mnad manifest (schema {names})")
    return table


def ingested_rows(data: str, split: str | None = None) -> list[dict]:
    """The manifest rows of the videos whose shards DATA holds (of one split, or all), in
    (split, video_id) order. UserError if DATA has no manifest."""
    manifest = read_manifest(data)
    if manifest is None:
        raise UserError(f"{data}: no {MANIFEST_FILE}; run `mnad ingest` first")
    rows = [
        r
        for r in manifest.to_pylist()
        if r["status"] in INGESTED and (split is None or r["split"] == split)
    ]
    return sorted(rows, key=lambda r: (r["split"], r["video_id"]))


def video_clock(data: str, split: str = "test") -> dict[str, tuple[float | None, float]]:
    """``video_id -> (fps, start_s)`` for the ingested videos of one split (ids are unique
    within a split only): frame ``i`` of a video shows at ``start_s + i / fps`` seconds of
    its source. fps is None where it is unknown (a frame folder ingested without --fps, a
    manifest from before frame rates were recorded); an unknown start_s is 0.0."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {SPLITS}")
    return {
        r["video_id"]: (r["fps"], r["start_s"] if r["start_s"] is not None else 0.0)
        for r in ingested_rows(data, split)
    }


def list_shards(data: str, split: str) -> list[str]:
    """The shards of one split, as paths (or URIs) readable by pyarrow, in video_id order.

    Only shards that the manifest lists as ingested count, so stray or temporary files in
    the folder are never read.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {SPLITS}")
    return [join(data, r["shard"]) for r in ingested_rows(data, split)]


def validate_data(data: str, splits: tuple[str, ...] = SPLITS) -> DataSummary:
    """Check that DATA is an ingested folder of this schema with one frame size and at
    least one video in each of ``splits``; return its summary. UserError otherwise."""
    summary = read_summary(data)
    if summary.shape is None:
        raise UserError(
            f"{data}: its videos were ingested at different frame sizes; "
            "re-run `mnad ingest` with --size H W"
        )
    for split in splits:
        shards = list_shards(data, split)
        if not shards:
            raise UserError(f"{data}: no ingested videos in split {split!r}")
        fs, path = resolve(shards[0])
        schema = pq.read_schema(path, filesystem=fs)
        if not schema.remove_metadata().equals(SCHEMA):
            raise UserError(f"{shards[0]}: columns {schema.names} are not the mnad schema")
        if shape_from_schema(schema) != summary.shape:
            raise UserError(
                f"{shards[0]}: frames are {shape_from_schema(schema)}, "
                f"summary says {summary.shape}; re-run `mnad ingest`"
            )
    return summary


def read_frames(path: str, start: int, stop: int) -> np.ndarray:
    """Frames ``start .. stop - 1`` of one shard: uint8 (n, H, W, C).

    Only the row groups that hold them are read (the filter prunes by their statistics).
    """
    fs, file = resolve(path)
    table = pq.read_table(
        file,
        filesystem=fs,
        columns=["frame_index", "frame"],
        filters=[("frame_index", ">=", start), ("frame_index", "<", stop)],
    )
    index = table.column("frame_index").to_numpy()
    if not np.array_equal(index, np.arange(start, stop)):
        raise ValueError(f"{path}: frames {start}..{stop - 1} are missing or out of order")
    return frames_to_numpy(table.column("frame"), shape_from_schema(table.schema))  # (n, H, W, C)


class ClipBatch(NamedTuple):
    """Consecutive clips of one video, in frame order."""

    frame_index: np.ndarray  # (k,) int32: each clip's last frame
    label: np.ndarray  # (k,) int8: the label of that frame
    clips: np.ndarray  # (k, T*C, H, W) uint8


def video_clips(
    path: str,
    clip_length: int,
    chunk_frames: int = 256,
    *,
    fit: ModelConfig | None = None,
    first: int = 0,
    stop: int | None = None,
) -> Iterator[ClipBatch]:
    """Every clip of one video in frame order, reading at most ``chunk_frames`` new frames
    at a time and keeping the last T - 1 frames across chunks. A video shorter than T
    yields nothing. With ``fit``, frames are made what that model takes as they are read
    (:func:`mnad.clips.model_frames`: size, grey, channel order).

    With ``first`` and ``stop``, only the clips whose last frame is in [first, stop) (a
    segment of the video): frames first - (T - 1) .. stop - 1 are read, the row groups
    wholly before or after them skipped (a frame's row is its frame number)."""
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, not {chunk_frames}")
    begin = max(0, first - clip_length + 1)  # the first frame read
    fs, file = resolve(path)
    with fs.open_input_file(file) as f:
        reader = pq.ParquetFile(f)
        shape = shape_from_schema(reader.schema_arrow)
        kept = shape if fit is None else fitted_shape(shape, fit)
        carry = np.empty((0, *kept), dtype=np.uint8)  # (<= T-1, H, W, C) frames kept
        groups, seen = _row_groups(reader.metadata, begin, stop)
        if not groups:
            return
        columns = ["frame_index", "label", "frame"]
        batches = reader.iter_batches(chunk_frames, row_groups=groups, columns=columns)
        for batch in batches:
            index = batch.column("frame_index").to_numpy()  # (n,)
            if not np.array_equal(index, np.arange(seen, seen + len(index))):
                raise ValueError(f"{path}: frames out of order at {seen}")
            lo = max(0, begin - seen)  # rows before the segment's first frame read
            hi = len(index) if stop is None else min(len(index), stop - seen)
            seen += len(index)
            if hi <= lo:
                continue  # wholly before ``begin`` (a batch after ``stop`` is never read)
            batch, index = batch.slice(lo, hi - lo), index[lo:hi]
            new = frames_to_numpy(batch.column("frame"), shape)  # (n, H, W, C)
            if fit is not None:
                new = model_frames(new, fit)
            frames = np.concatenate([carry, new])
            count = min(len(frames) - clip_length + 1, len(index))  # clips ending in this batch
            if count > 0:
                labels = batch.column("label").to_numpy(zero_copy_only=False)  # (n,)
                at = len(frames) - clip_length + 1 - count
                yield ClipBatch(
                    frame_index=index[len(index) - count :].astype(np.int32),
                    label=labels[len(labels) - count :],
                    clips=stack_clips(frames, np.arange(at, at + count), clip_length),
                )
            carry = frames[max(0, len(frames) - clip_length + 1) :]
            if stop is not None and seen >= stop:
                break


def _row_groups(meta: pq.FileMetaData, begin: int, stop: int | None) -> tuple[list[int], int]:
    """The row groups that hold rows ``begin .. stop - 1`` (all rows from ``begin`` when
    ``stop`` is None), and the first row of the first one."""
    groups: list[int] = []
    start = offset = 0
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        if offset + rows > begin and (stop is None or offset < stop):
            if not groups:
                start = offset
            groups.append(group)
        offset += rows
    return groups, start
