"""A long video file in segments: cut by its own timestamps, decoded by parallel Ray tasks,
joined in order into the video's one shard.

A video file longer than ``--segment-seconds`` (its duration as ffmpeg's log gives it, read
by its ingest task: :func:`windows`) is cut into segments of equal length on the source's
clock, each a :class:`~pipelines.ingest.decode.Window`: the first from the first frame, the
last to the last, so that a duration that the container gets wrong loses no frame. Each
segment is decoded by its own Ray task (:func:`decode_segment`) into a temporary part file
beside the shard; one task per video (:func:`pipelines.ingest.video.join_row`), started
with them, writes the parts' frames in order into the shard as each segment is done, with
their frame numbers in the whole video and their labels, and removes the parts: the join of
the first segments runs while the last ones decode. The shard is the one a decode of the
whole video in one pass writes, frame for frame: the cuts fall on the stream's integer timestamps
(:mod:`pipelines.ingest.decode`), and a segment whose seek did not land before its window
(:attr:`~pipelines.ingest.decode.FrameReader.saw_before`) or failed (an open GOP's leading
frames reference the GOP before) is decoded again with a wider margin, then from the first
frame.

Parts are ``DATA/<split>/.<video_id>.tmp-segment-<k>.parquet``: temporaries that the next
run removes if this one is interrupted, never listed in the manifest.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.ingest.decode import DecodeError, FrameReader, Probe, Window
from pipelines.ingest.layouts import VideoSource
from pipelines.schema import (
    LABEL_UNKNOWN,
    SHARD_WRITE_OPTIONS,
    FrameShape,
    frame_batch,
    frames_to_numpy,
    shape_from_schema,
    shard_schema,
)
from pipelines.storage import TMP_MARK

SEEK_MARGINS_S: tuple[float | None, ...] = (2.0, 30.0, None)
"""How far before its window a segment's decode seeks, tried in turn (None: no seek)."""


def windows(probe: Probe, segment_seconds: float, max_segments: int = 0) -> tuple[Window, ...]:
    """The segments of a video file: one if ``segment_seconds`` is 0 or its duration is
    unknown or not longer, else ``ceil(duration / segment_seconds)`` of equal length, or
    ``max_segments`` longer ones when that is fewer (0: no limit)."""
    duration = probe.duration_s
    if segment_seconds <= 0 or duration is None or duration <= segment_seconds:
        return (Window(),)
    count = math.ceil(duration / segment_seconds)
    if max_segments > 0:
        count = max(1, min(count, max_segments))
    if count == 1:
        return (Window(),)
    cuts = [round(probe.start_s + k * duration / count, 6) for k in range(1, count)]
    starts, stops = [None, *cuts], [*cuts, None]
    return tuple(
        Window(a, b, file_start_s=probe.start_s) for a, b in zip(starts, stops, strict=True)
    )


def part_uri(out: str, video: VideoSource, index: int) -> str:
    """Where segment ``index`` of ``video`` is written until its shard is."""
    return storage.join(out, video.split, f".{video.video_id}{TMP_MARK}segment-{index:05d}.parquet")


@dataclass(frozen=True)
class SegmentPart:
    """What one segment's task decoded: its frames (in a part file) and how it decoded them."""

    index: int
    part: str | None  # the part file; None when the segment holds no frame
    frames: int
    height: int
    width: int
    channels: int
    fps: float | None  # the source's clock, as the segment's ffmpeg read it
    start_s: float
    saw_before: bool  # a frame before the window was decoded (the seek landed before it)
    reached_stop: bool  # a frame at or after the window's end was decoded
    margin_s: float | None  # the seek margin that worked; None: decoded from the first frame

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SegmentPart:
        return cls(**json.loads(text))


def decode_segment(
    local: str,
    video: VideoSource,
    index: int,
    window: Window,
    plan,  # IngestPlan (pipelines.ingest.video imports this module)
) -> SegmentPart:
    """Decode one segment of ``local`` (the video file, on this node) into its part file,
    seeking less far back each time the seek fails to land before the window."""
    margins = SEEK_MARGINS_S if window.start_s is not None else (None,)
    for margin in margins:
        attempt = Window(window.start_s, window.stop_s, margin, window.file_start_s)
        try:
            done = _decode_window(local, video, index, attempt, plan)
        except DecodeError:
            if attempt.seek_s(0.0) is None:  # without a seek: the file's own fault
                raise
            continue  # an open GOP: frames after the seek point reference earlier ones
        if done.saw_before or margin is None:
            return done
    raise AssertionError("the last margin does not seek")  # pragma: no cover


def _decode_window(local: str, video: VideoSource, index: int, window: Window, plan) -> SegmentPart:
    uri = part_uri(plan.out, video, index)
    codec = "lz4" if plan.compression != "none" else "none"  # a temporary: fast to read back
    frames, shape = 0, FrameShape(0, 0, plan.decode.channels)
    with FrameReader(local, (), plan.decode, window) as reader, contextlib.ExitStack() as out:
        writer = None
        for pixels in reader.chunks(plan.row_group_bytes):
            if writer is None:  # a part file only for a segment with frames
                shape = reader.shape
                sink = out.enter_context(storage.atomic_output(uri))
                writer = out.enter_context(
                    pq.ParquetWriter(
                        sink, shard_schema(shape), compression=codec, **SHARD_WRITE_OPTIONS
                    )
                )
            n = len(pixels) // shape.nbytes
            batch = frame_batch(
                dataset=plan.dataset, split=video.split, video_id=video.video_id,
                start_index=frames, labels=np.full(n, LABEL_UNKNOWN, np.int8), pixels=pixels,
                shape=shape,
            )  # fmt: skip
            writer.write_batch(batch, row_group_size=n)
            frames += n
    return SegmentPart(
        index=index, part=uri if frames else None, frames=frames, height=shape.height,
        width=shape.width, channels=shape.channels, fps=reader.fps, start_s=reader.start_s,
        saw_before=reader.saw_before or window.start_s is None,
        reached_stop=reader.reached_stop, margin_s=window.margin_s,
    )  # fmt: skip


def checked_parts(path: str, parts: Iterable[SegmentPart]) -> Iterator[SegmentPart]:
    """``parts`` in index order, each checked, as it arrives, against the one before: every
    segment but the first that follows one with frames after it began before its window
    (else frames between them were lost), and all frames have one size. A DecodeError
    otherwise, also when no segment has a frame."""
    before: SegmentPart | None = None
    shape: tuple[int, int, int] | None = None
    for part in parts:
        if before is not None:
            if before.reached_stop and not part.saw_before:
                raise DecodeError(path, f"segment {part.index} did not start before its window")
            if not before.reached_stop and part.frames:
                raise DecodeError(
                    path, f"segment {before.index} ended early, segment {part.index} has frames"
                )
        if part.frames:
            size = (part.height, part.width, part.channels)
            if shape is not None and size != shape:
                raise DecodeError(path, f"segments of different frame sizes: {shape}, {size}")
            shape = size
        before = part
        yield part
    if shape is None:
        raise DecodeError(path, "no frame in any segment")


def part_chunks(parts: Iterable[SegmentPart], shape: FrameShape) -> Iterator[bytes]:
    """The pixels of every part's frames, a row group at a time, parts in the order given."""
    for segment in parts:
        if segment.part is None:
            continue
        fs, path = storage.resolve(segment.part)
        with fs.open_input_file(path) as f:
            reader = pq.ParquetFile(f)
            if shape_from_schema(reader.schema_arrow) != shape:
                raise DecodeError(segment.part, "part of another frame size")
            for group in range(reader.num_row_groups):
                column = reader.read_row_group(group, columns=["frame"]).column("frame")
                yield memoryview(frames_to_numpy(column, shape).reshape(-1))  # (n*H*W*C,)


def remove_parts(parts: list[SegmentPart]) -> None:
    """Delete the part files (once the shard holds their frames, or the video failed)."""
    for segment in parts:
        if segment.part is not None:
            storage.delete_file(segment.part)
