"""One video's work, in its Ray task: hash, local copy, decode, shard, manifest row.

:func:`ingest_row` is the Ray Data map function that the driver
(:mod:`pipelines.ingest.driver`) runs once per video. It hashes the input, skips it if an
earlier run ingested the same bytes at the same settings, else decodes it with ffmpeg
(:mod:`pipelines.ingest.decode`) and streams its frames into ``DATA/<split>/<video_id>.parquet``
in row groups of bounded size, through :func:`pipelines.storage.atomic_output`, so a reader
never sees half a shard. A video that fails returns a ``failed`` row naming the cause; it
never fails the job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, NamedTuple

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.data import shard_relpath
from pipelines.ingest.decode import DecodeError, DecodeSettings, FrameReader
from pipelines.ingest.labels import FrameLabels, LabelError
from pipelines.ingest.layouts import VideoSource
from pipelines.schema import (
    INGESTED,
    LABEL_ANOMALOUS,
    LABEL_NORMAL,
    LABEL_UNKNOWN,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    FrameShape,
    frame_batch,
    shard_schema,
)

_HASH_BLOCK = 1 << 20
# Pixels get neither dictionary encoding nor min/max statistics: both cost as much as the
# compression and serve no reader.
PARQUET_OPTIONS: dict[str, Any] = {
    "use_dictionary": ["dataset", "split", "video_id"],
    "write_statistics": ["dataset", "split", "video_id", "frame_index", "label"],
}


@dataclass(frozen=True)
class IngestPlan:
    """Everything a task needs besides its video; built once by the driver."""

    source: str  # URI or folder of the data set (for its file system)
    out: str  # DATA URI or folder
    dataset: str
    decode: DecodeSettings
    row_group_bytes: int
    compression: str = "zstd"
    folder_fps: float | None = None  # the frame rate of frame folders (--fps); None: unknown


class Written(NamedTuple):
    """What :func:`write_shard` wrote, and the source's clock: frame ``i`` shows at
    ``start_s + i / fps`` seconds."""

    frames: int
    anomalous: int  # frames labelled anomalous
    shape: FrameShape
    fps: float | None  # a video file's own rate, a frame folder's --fps; None: unknown
    start_s: float


def manifest_row(
    video: VideoSource,
    status: str,
    *,
    content_hash: str | None = None,
    frames: int = 0,
    anomalous: int = 0,
    shape: FrameShape | None = None,
    fps: float | None = None,
    start_s: float | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One row of MANIFEST_SCHEMA."""
    return {
        "source": video.path,
        "split": video.split,
        "video_id": video.video_id,
        "content_hash": content_hash,
        "frames": frames,
        "anomalous_frames": anomalous,
        "height": shape.height if shape else 0,
        "width": shape.width if shape else 0,
        "fps": fps,
        "start_s": start_s,
        "status": status,
        "error": error,
        "shard": shard_relpath(video.split, video.video_id) if status in INGESTED else None,
    }


@contextlib.contextmanager
def local_copy(video: VideoSource, fs: pafs.FileSystem) -> Iterator[tuple[VideoSource, str]]:
    """The video with paths that ffmpeg can open, and its content hash.

    The hash covers the file's bytes, or for a frame folder each frame file's name, size and
    bytes in order. A local source is read in place; a remote one is copied to a temporary
    folder while it is hashed.
    """
    digest = hashlib.sha256()
    files = video.frames or (video.path,)
    if isinstance(fs, pafs.LocalFileSystem):
        for path in files:
            _hash_file(digest, fs, path, video.frames)
        yield video, f"sha256:{digest.hexdigest()}"
        return
    with tempfile.TemporaryDirectory(prefix="mnad-ingest-") as tmp:
        local = []
        for i, path in enumerate(files):
            target = f"{tmp}/{i:08d}{PurePosixPath(path).suffix}"
            with open(target, "wb") as sink:
                _hash_file(digest, fs, path, video.frames, sink)
            local.append(target)
        copy = VideoSource(
            video.split,
            video.video_id,
            tmp if video.frames else local[0],
            tuple(local) if video.frames else (),
            video.labels,
        )
        yield copy, f"sha256:{digest.hexdigest()}"


def _hash_file(
    digest: Any, fs: pafs.FileSystem, path: str, named: tuple[str, ...], sink: Any = None
) -> None:
    with fs.open_input_stream(path) as stream:
        if named:  # a frame of a folder: its name and size count too
            size = fs.get_file_info(path).size
            digest.update(f"{PurePosixPath(path).name}\0{size}\0".encode())
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
            if sink is not None:
                sink.write(block)


def _labels_for(video: VideoSource, fs: pafs.FileSystem) -> FrameLabels:
    if video.split == "train":
        return FrameLabels.constant(LABEL_NORMAL)  # training footage is normal by definition
    if video.labels is None:
        return FrameLabels.constant(LABEL_UNKNOWN)
    return video.labels.load(fs)


def write_shard(
    video: VideoSource, local: VideoSource, labels: FrameLabels, plan: IngestPlan
) -> Written:
    """Decode ``local`` and write its shard atomically."""
    frames = anomalous = 0
    uri = storage.join(plan.out, shard_relpath(video.split, video.video_id))
    with FrameReader(local.path, local.frames, plan.decode) as reader:
        shape = reader.shape
        with (
            storage.atomic_output(uri) as sink,
            pq.ParquetWriter(
                sink, shard_schema(shape), compression=plan.compression, **PARQUET_OPTIONS
            ) as writer,
        ):
            for pixels in reader.chunks(plan.row_group_bytes):
                n = len(pixels) // shape.nbytes
                chunk_labels = labels.chunk(frames, n)  # (n,) int8
                batch = frame_batch(
                    dataset=plan.dataset,
                    split=video.split,
                    video_id=video.video_id,
                    start_index=frames,
                    labels=chunk_labels,
                    pixels=pixels,
                    shape=shape,
                )
                writer.write_batch(batch, row_group_size=n)
                frames += n
                anomalous += int((chunk_labels == LABEL_ANOMALOUS).sum())
            labels.check(frames)  # before the shard appears: labels that disagree fail it
        fps = plan.folder_fps if local.frames else reader.fps
        return Written(frames, anomalous, shape, fps, reader.start_s)


def _kept_clock(video: VideoSource, previous: dict[str, Any], plan: IngestPlan) -> dict:
    """The clock of a video skipped as unchanged: a frame folder's from this run's --fps, a
    video file's as the earlier run recorded it (null where its manifest predates it)."""
    if video.frames:
        return {"fps": plan.folder_fps, "start_s": 0.0}
    return {"fps": previous.get("fps"), "start_s": previous.get("start_s")}


def ingest_video(video: VideoSource, previous: dict | None, plan: IngestPlan) -> dict[str, Any]:
    """Ingest one video (or skip it if unchanged since ``previous``); its manifest row."""
    fs, _ = storage.resolve(plan.source)
    content_hash = None
    try:
        with local_copy(video, fs) as (local, content_hash):
            if previous is not None and previous["content_hash"] == content_hash:
                shard = storage.join(plan.out, shard_relpath(video.split, video.video_id))
                if storage.is_file(shard):
                    clock = _kept_clock(video, previous, plan)
                    return {**previous, **clock, "source": video.path, "status": STATUS_SKIPPED}
            labels = _labels_for(video, fs)
            written = write_shard(video, local, labels, plan)
    except (DecodeError, LabelError, OSError) as err:
        error = str(err) if isinstance(err, DecodeError) else f"{video.path}: {err}"
        return manifest_row(video, STATUS_FAILED, content_hash=content_hash, error=error)
    return manifest_row(
        video, STATUS_OK, content_hash=content_hash, frames=written.frames,
        anomalous=written.anomalous, shape=written.shape, fps=written.fps,
        start_s=written.start_s,
    )  # fmt: skip


NODE = "node"
"""The Ray node a task ran on, beside its manifest row (not in the manifest)."""


def ingest_row(row: dict[str, Any], *, plan: IngestPlan) -> dict[str, Any]:
    """Ray Data map function: one ``{"video", "previous"}`` item to its manifest row."""
    import ray

    previous = json.loads(row["previous"])
    done = ingest_video(VideoSource.from_json(row["video"]), previous, plan)
    return {**done, NODE: ray.get_runtime_context().get_node_id()}
