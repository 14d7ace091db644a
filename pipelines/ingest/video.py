"""One video's work, in its Ray task: hash, local copy, decode, shard, manifest row.

:func:`ingest_row` is the Ray Data map function that the driver
(:mod:`pipelines.ingest.driver`) runs once per video. It hashes the input, skips it if an
earlier run ingested the same bytes at the same settings, else decodes it with ffmpeg
(:mod:`pipelines.ingest.decode`) and streams its frames into ``DATA/<split>/<video_id>.parquet``
in row groups of bounded size, through :func:`pipelines.storage.atomic_output`, so a reader
never sees half a shard. A video that fails returns a ``failed`` row naming the cause; it
never fails the job.

A video file longer than ``segment_seconds`` is not decoded here: its row carries the
segments (:data:`SEGMENTS`) that the driver hands to :func:`segment_row` tasks, and then to
one :func:`join_row` task that writes its shard (:mod:`pipelines.ingest.segments`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any, NamedTuple

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.data import shard_relpath
from pipelines.ingest import segments
from pipelines.ingest.decode import DecodeError, DecodeSettings, FrameReader, Window, probe
from pipelines.ingest.labels import FrameLabels, LabelError
from pipelines.ingest.layouts import VideoSource
from pipelines.schema import (
    INGESTED,
    LABEL_ANOMALOUS,
    LABEL_NORMAL,
    LABEL_UNKNOWN,
    SHARD_WRITE_OPTIONS,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    FrameShape,
    frame_batch,
    shard_schema,
)

_HASH_BLOCK = 1 << 20


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
    segment_seconds: float = 0.0  # video files longer than this go in segments; 0: never
    max_segments: int = 0  # segments per video at most (the cluster's decode slots x 2); 0: any


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


def write_frames(
    video: VideoSource,
    labels: FrameLabels,
    plan: IngestPlan,
    shape: FrameShape,
    chunks: Iterable[bytes | memoryview],
) -> tuple[int, int]:
    """Write the video's shard atomically from the pixels of its frames in order (a row
    group per chunk); its (frames, anomalous frames)."""
    frames = anomalous = 0
    uri = storage.join(plan.out, shard_relpath(video.split, video.video_id))
    with (
        storage.atomic_output(uri) as sink,
        pq.ParquetWriter(
            sink, shard_schema(shape), compression=plan.compression, **SHARD_WRITE_OPTIONS
        ) as writer,
    ):
        for pixels in chunks:
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
    return frames, anomalous


def write_shard(
    video: VideoSource, local: VideoSource, labels: FrameLabels, plan: IngestPlan
) -> Written:
    """Decode ``local`` and write its shard atomically."""
    with FrameReader(local.path, local.frames, plan.decode) as reader:
        shape = reader.shape
        frames, anomalous = write_frames(
            video, labels, plan, shape, reader.chunks(plan.row_group_bytes)
        )
        fps = plan.folder_fps if local.frames else reader.fps
        return Written(frames, anomalous, shape, fps, reader.start_s)


def _kept_clock(video: VideoSource, previous: dict[str, Any], plan: IngestPlan) -> dict:
    """The clock of a video skipped as unchanged: a frame folder's from this run's --fps, a
    video file's as the earlier run recorded it (null where its manifest predates it)."""
    if video.frames:
        return {"fps": plan.folder_fps, "start_s": 0.0}
    return {"fps": previous.get("fps"), "start_s": previous.get("start_s")}


def _failed(video: VideoSource, err: Exception, content_hash: str | None) -> dict[str, Any]:
    error = str(err) if isinstance(err, DecodeError) else f"{video.path}: {err}"
    return manifest_row(video, STATUS_FAILED, content_hash=content_hash, error=error)


def ingest_video(video: VideoSource, previous: dict | None, plan: IngestPlan) -> dict[str, Any]:
    """Ingest one video (or skip it if unchanged since ``previous``); its manifest row. A
    video file longer than ``plan.segment_seconds``: a row whose :data:`SEGMENTS` lists its
    segments, still to decode."""
    fs, _ = storage.resolve(plan.source)
    content_hash = None
    try:
        with local_copy(video, fs) as (local, content_hash):
            if previous is not None and previous["content_hash"] == content_hash:
                shard = storage.join(plan.out, shard_relpath(video.split, video.video_id))
                if storage.is_file(shard):
                    clock = _kept_clock(video, previous, plan)
                    return {**previous, **clock, "source": video.path, "status": STATUS_SKIPPED}
            if not local.frames and plan.segment_seconds > 0:
                cuts = segments.windows(
                    probe(local.path, plan.decode), plan.segment_seconds, plan.max_segments
                )
                if len(cuts) > 1:
                    row = manifest_row(video, STATUS_OK, content_hash=content_hash)
                    return {**row, SEGMENTS: json.dumps([asdict(w) for w in cuts])}
            labels = _labels_for(video, fs)
            written = write_shard(video, local, labels, plan)
    except (DecodeError, LabelError, OSError) as err:
        return _failed(video, err, content_hash)
    return manifest_row(
        video, STATUS_OK, content_hash=content_hash, frames=written.frames,
        anomalous=written.anomalous, shape=written.shape, fps=written.fps,
        start_s=written.start_s,
    )  # fmt: skip


def ingest_segment(
    video: VideoSource, index: int, window: Window, plan: IngestPlan
) -> segments.SegmentPart:
    """Decode one segment of a long video file into its part file (from a local copy if
    the source is remote; its ingest task hashed it)."""
    fs, _ = storage.resolve(plan.source)
    if isinstance(fs, pafs.LocalFileSystem):
        return segments.decode_segment(video.path, video, index, window, plan)
    with local_copy(video, fs) as (local, _):
        return segments.decode_segment(local.path, video, index, window, plan)


class SegmentFailed(Exception):
    """A segment of the video being joined failed; ``str()`` is its one-line error."""


def join_video(
    video: VideoSource, content_hash: str, parts: Iterable[segments.SegmentPart], plan: IngestPlan
) -> dict[str, Any]:
    """Write a segmented video's shard from its parts, taken in index order as they arrive
    (a part's segment may still be decoding when the join reaches it); its manifest row.
    The parts taken are removed, whatever the outcome; ``parts`` may raise
    :class:`SegmentFailed`, which fails the video."""
    fs, _ = storage.resolve(plan.source)
    taken: list[segments.SegmentPart] = []
    try:
        ordered = iter(segments.checked_parts(video.path, _kept(parts, taken)))
        leading = []  # up to the first part with frames, which gives the shard's frame size
        for part in ordered:
            leading.append(part)
            if part.frames:
                break
        shape = FrameShape(part.height, part.width, part.channels)
        labels = _labels_for(video, fs)
        chunks = segments.part_chunks(itertools.chain(leading, ordered), shape)
        frames, anomalous = write_frames(video, labels, plan, shape, chunks)
    except SegmentFailed as err:
        return manifest_row(video, STATUS_FAILED, content_hash=content_hash, error=str(err))
    except (DecodeError, LabelError, OSError) as err:
        return _failed(video, err, content_hash)
    finally:
        segments.remove_parts(taken)
    return manifest_row(
        video, STATUS_OK, content_hash=content_hash, frames=frames, anomalous=anomalous,
        shape=shape, fps=taken[0].fps, start_s=taken[0].start_s,
    )  # fmt: skip


def _kept(
    parts: Iterable[segments.SegmentPart], taken: list[segments.SegmentPart]
) -> Iterator[segments.SegmentPart]:
    """``parts``, each put in ``taken`` (to be removed) as it comes."""
    for part in parts:
        taken.append(part)
        yield part


NODE = "node"
"""The Ray node a task ran on, beside its manifest row (not in the manifest)."""
SEGMENTS = "segments"
"""Beside a manifest row: the video's segments still to decode (JSON, "" when none)."""
SEGMENT_NODES = "segment_nodes"
"""Beside a joined video's manifest row: the Ray nodes its segments ran on."""


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def ingest_row(row: dict[str, Any], *, plan: IngestPlan) -> dict[str, Any]:
    """Ray Data map function: one ``{"video", "previous"}`` item to its manifest row."""
    previous = json.loads(row["previous"])
    done = ingest_video(VideoSource.from_json(row["video"]), previous, plan)
    return {SEGMENTS: "", **done, NODE: _node()}


def segment_row(row: dict[str, Any], *, plan: IngestPlan) -> dict[str, Any]:
    """Ray task: one ``{"video", "index", "window"}`` item to its
    :class:`~pipelines.ingest.segments.SegmentPart` (JSON, or "" and the ``error``)."""
    video = VideoSource.from_json(row["video"])
    window = Window(**json.loads(row["window"]))
    try:
        done, error = ingest_segment(video, int(row["index"]), window, plan).to_json(), ""
    except (DecodeError, OSError) as err:
        done, error = "", str(err) if isinstance(err, DecodeError) else f"{video.path}: {err}"
    return {"part": done, "error": error, NODE: _node()}


def join_row(row: dict[str, Any], *, plan: IngestPlan) -> dict[str, Any]:
    """Ray task: one ``{"video", "content_hash", "segments"}`` item to the video's manifest
    row, ``segments`` being the ObjectRefs of its :func:`segment_row` tasks in index order.
    Each is waited for in turn, so the shard is written while later segments decode (the
    driver runs this task without a CPU slot: it waits most of the time). A segment that
    failed, or whose task was lost, fails the video; beside the row, :data:`SEGMENT_NODES`
    lists where they ran."""
    import ray

    video = VideoSource.from_json(row["video"])
    nodes: list[str] = []

    def parts() -> Iterator[segments.SegmentPart]:
        for ref in row["segments"]:
            try:
                done = ray.get(ref)
            except ray.exceptions.RayError as err:
                cause = f"{video.path}: segment task failed ({task_cause(err)})"
                raise SegmentFailed(cause) from None
            nodes.append(done[NODE])
            if done["error"]:
                raise SegmentFailed(done["error"])
            yield segments.SegmentPart.from_json(done["part"])

    try:
        joined = join_video(video, row["content_hash"], parts(), plan)
    finally:  # the parts of segments the join did not reach, after one failed
        segments.remove_parts(_finished(row["segments"]))
    return {**joined, NODE: _node(), SEGMENT_NODES: nodes}


def _finished(refs: list[Any]) -> list[segments.SegmentPart]:
    """The parts of the segment tasks ``refs`` that succeeded, once every one has ended."""
    import ray

    done = []
    for ref in refs:
        try:
            row = ray.get(ref)
        except ray.exceptions.RayError:
            continue
        if not row["error"]:
            done.append(segments.SegmentPart.from_json(row["part"]))
    return done


def task_cause(err: Exception) -> str:
    """The first line of what a Ray task's failure says (its class when it says nothing)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
