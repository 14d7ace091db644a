"""The Parquet data contract between ingest, train and score, declared once.

A DATA folder (a local path or an ``s3://`` / ``gs://`` URI) holds::

    DATA/<split>/<video_id>.parquet   one shard per video, frames in order (SCHEMA)
    DATA/manifest.parquet             one row per input video, failed ones too (MANIFEST_SCHEMA)
    DATA/summary.json                 counts per split, frame size, dataset name, layout

A shard's rows are one video's frames in their natural order; ``frame`` holds the raw
uint8 pixels of one frame, row-major H*W*C. The frame size is in the file's key-value
metadata (``mnad.height``, ``mnad.width``, ``mnad.channels``) and in ``summary.json``.

Train and score read through :func:`validate_data`, :func:`list_shards` and
:func:`frames_to_numpy`; nothing else needs to know how the files are laid out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.errors import UserError

SCHEMA_VERSION = "1"
SPLITS = ("train", "test")

LABEL_ANOMALOUS = 1
LABEL_NORMAL = 0
LABEL_UNKNOWN = -1

SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),  # 0-based, natural order
        pa.field("label", pa.int8(), nullable=False),  # 1 anomalous, 0 normal, -1 unknown
        pa.field("frame", pa.binary(), nullable=False),  # uint8 pixels, row-major (H, W, C)
    ]
)

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # video file or frame folder
        pa.field("split", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("content_hash", pa.string()),  # null when the input could not be read
        pa.field("frames", pa.int64(), nullable=False),
        pa.field("anomalous_frames", pa.int64(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # ok | failed | skipped
        pa.field("error", pa.string()),  # one line naming the cause; null unless failed
        pa.field("shard", pa.string()),  # path relative to DATA; null unless ok or skipped
    ]
)

MANIFEST_FILE = "manifest.parquet"
SUMMARY_FILE = "summary.json"

_META_HEIGHT = b"mnad.height"
_META_WIDTH = b"mnad.width"
_META_CHANNELS = b"mnad.channels"
_META_VERSION = b"mnad.schema_version"


class FrameShape(NamedTuple):
    """The size of every frame in a shard: (height, width, channels)."""

    height: int
    width: int
    channels: int

    @property
    def nbytes(self) -> int:
        """Bytes of one frame's pixels."""
        return self.height * self.width * self.channels


def shard_schema(shape: FrameShape) -> pa.Schema:
    """SCHEMA with the frame size of one shard in its file-level metadata."""
    return SCHEMA.with_metadata(
        {
            _META_HEIGHT: str(shape.height).encode(),
            _META_WIDTH: str(shape.width).encode(),
            _META_CHANNELS: str(shape.channels).encode(),
            _META_VERSION: SCHEMA_VERSION.encode(),
        }
    )


def shape_from_schema(schema: pa.Schema) -> FrameShape:
    """The frame size stored in a shard's metadata (UserError if it is not a shard)."""
    meta = schema.metadata or {}
    try:
        return FrameShape(
            int(meta[_META_HEIGHT]), int(meta[_META_WIDTH]), int(meta[_META_CHANNELS])
        )
    except KeyError as err:
        raise UserError(f"not an mnad shard: no {err.args[0].decode()} metadata") from None


def frame_batch(
    *,
    dataset: str,
    split: str,
    video_id: str,
    start_index: int,
    labels: np.ndarray,
    pixels: bytes | memoryview,
    shape: FrameShape,
) -> pa.RecordBatch:
    """A record batch of consecutive frames of one video, from their packed pixels.

    ``pixels`` holds ``len(labels)`` frames back to back (n*H*W*C bytes); the frame column
    is built over that buffer without a copy.
    """
    n = len(labels)
    if len(pixels) != n * shape.nbytes:
        raise ValueError(f"{len(pixels)} bytes of pixels for {n} frames of {shape}")
    offsets = np.arange(0, (n + 1) * shape.nbytes, shape.nbytes, dtype=np.int32)  # (n+1,)
    frames = pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(pixels)]
    )
    return pa.RecordBatch.from_arrays(
        [
            pa.array([dataset] * n, pa.string()),
            pa.array([split] * n, pa.string()),
            pa.array([video_id] * n, pa.string()),
            pa.array(np.arange(start_index, start_index + n, dtype=np.int32)),
            pa.array(np.asarray(labels, dtype=np.int8)),
            frames,
        ],
        schema=SCHEMA,
    )


def frames_to_numpy(column: pa.Array | pa.ChunkedArray, shape: FrameShape) -> np.ndarray:
    """The frame column of a table or batch as a uint8 array (n, H, W, C), without copying
    row by row.

    Works on ``binary`` and ``large_binary`` columns (Ray Data may hand over either).
    Raises ValueError if a frame does not have ``shape.nbytes`` bytes.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    n = len(column)
    if n == 0:
        return np.empty((0, *shape), dtype=np.uint8)
    if column.null_count:
        raise ValueError(f"{column.null_count} null frames")
    offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[column.offset : column.offset + n + 1]
    if not np.all(np.diff(offsets) == shape.nbytes):
        raise ValueError(f"frames are not all {shape.nbytes} bytes ({shape})")
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(n, *shape)  # (n, H, W, C)


# --- file systems and the reader API used by train and score --------------------------------


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow file system and the path in it, for a local path or an s3:// / gs:// URI."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    """Join path parts with '/', the separator of every pyarrow file system."""
    return "/".join([base.rstrip("/"), *parts])


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
    path = join(root, SUMMARY_FILE)
    try:
        with fs.open_input_stream(path) as f:
            raw = json.loads(f.read())
    except FileNotFoundError:
        raise UserError(f"{data}: no {SUMMARY_FILE}; run `mnad ingest` first") from None
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
    """DATA/manifest.parquet as a table, or None if there is none yet."""
    fs, root = resolve(data)
    path = join(root, MANIFEST_FILE)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    table = pq.read_table(path, filesystem=fs)
    if not table.schema.equals(MANIFEST_SCHEMA):
        raise UserError(f"{path}: not an mnad manifest (schema {table.schema.names})")
    return table


def list_shards(data: str, split: str) -> list[str]:
    """The shards of one split, as paths (or URIs) readable by pyarrow, in video_id order.

    Only shards that the manifest lists as ingested count, so stray or temporary files in
    the folder are never read.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {SPLITS}")
    manifest = read_manifest(data)
    if manifest is None:
        raise UserError(f"{data}: no {MANIFEST_FILE}; run `mnad ingest` first")
    rows = sorted(
        (r["video_id"], r["shard"])
        for r in manifest.to_pylist()
        if r["split"] == split and r["status"] in (STATUS_OK, STATUS_SKIPPED)
    )
    return [join(data, shard) for _, shard in rows]


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
