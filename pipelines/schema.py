"""The Parquet data contract between ingest, train and score, declared once.

The files of a DATA folder (read through :mod:`pipelines.data`) and of a SCORES folder::

    DATA/<split>/<video_id>.parquet   one shard per video, frames in order (SCHEMA)
    DATA/manifest.parquet             one row per input video, failed ones too (MANIFEST_SCHEMA)
    DATA/summary.json                 counts per split, frame size, dataset name, layout
    SCORES/.../*.parquet              one row per scored frame (SCORES_SCHEMA)

A shard's rows are one video's frames in their natural order; ``frame`` holds the raw
uint8 pixels of one frame, row-major H*W*C. The frame size is in the file's key-value
metadata (``mnad.height``, ``mnad.width``, ``mnad.channels``) and in ``summary.json``.

Nothing but ingest (which writes them) and :mod:`pipelines.data` (which reads them) needs
to know how the files are laid out.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

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
INGESTED = (STATUS_OK, STATUS_SKIPPED)
"""Manifest statuses of a video whose shard is in DATA (ingested now or by an earlier run)."""

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
        # The source's clock: frame i shows at start_s + i / fps seconds of the source.
        # fps: the video file's own rate, a frame folder's --fps; null when unknown.
        pa.field("fps", pa.float64()),
        pa.field("start_s", pa.float64()),  # seconds; null when failed or unknown
        pa.field("status", pa.string(), nullable=False),  # ok | failed | skipped
        pa.field("error", pa.string()),  # one line naming the cause; null unless failed
        pa.field("shard", pa.string()),  # path relative to DATA; null unless ok or skipped
    ]
)
MANIFEST_LATER_COLUMNS = ("fps", "start_s")
"""Manifest columns added after the first manifests were written: one without them reads
with nulls there (:func:`pipelines.data.read_manifest`)."""

#: Columns of a scoring job's scores: one row per scored frame.
SCORES_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("psnr", pa.float64(), nullable=False),
        pa.field("feature_distance", pa.float64(), nullable=False),
        pa.field("point_score", pa.float64(), nullable=False),
        pa.field("memory_updated", pa.bool_(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),  # abnormality: higher = more anomalous
        pa.field("label", pa.int8(), nullable=False),  # 1 anomalous, 0 normal, -1 unknown
        pa.field("score_per_video", pa.float64(), nullable=False),  # Eq. (13), per-video min-max
        pa.field("score_calibrated", pa.float64()),  # on the calibration's scale; null: none
    ]
)
"""``score`` is what the job was asked for: ``score_calibrated`` or ``score_per_video``
(``normalise``), smoothed over time when asked (``smooth``)."""

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("rank", pa.int32(), nullable=False),  # 1: the archive's highest peak
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("first_frame", pa.int32(), nullable=False),
        pa.field("last_frame", pa.int32(), nullable=False),
        pa.field("peak_frame", pa.int32(), nullable=False),
        pa.field("peak_score", pa.float64(), nullable=False),
        pa.field("frames", pa.int32(), nullable=False),  # frames over the threshold
        pa.field("start_s", pa.float64()),  # in the source video's clock; null: no frame rate
        pa.field("end_s", pa.float64()),  # the end of the last frame
        pa.field("peak_s", pa.float64()),
        pa.field("anomalous_frames", pa.int32(), nullable=False),  # labelled 1 in the event
    ]
)
"""SCORES/events.parquet: runs of frames over the threshold, ranked archive-wide."""

MANIFEST_FILE = "manifest.parquet"
DATA_SUMMARY_FILE = "summary.json"

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


SHARD_WRITE_OPTIONS: dict[str, Any] = {
    "use_dictionary": ["dataset", "split", "video_id"],
    "write_statistics": ["dataset", "split", "video_id", "frame_index", "label"],
}
"""``pq.ParquetWriter`` options of a shard (and of a segment's part): pixels get neither
dictionary encoding nor min/max statistics, which cost as much as the compression and serve
no reader."""


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
