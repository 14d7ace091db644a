"""From the combined per-frame scores to what a person looks at: the ``score`` the job was
asked for, the archive's events, and how well they match the labels (driver).

- :func:`choose_scores`: ``score`` becomes the calibrated or the per-video column,
  smoothed within each video with :func:`mnad.calibration.smooth` (trailing: no frame's
  score reads a later frame);
- :func:`archive_events`: runs of frames over the calibration's threshold in every video
  (:func:`mnad.calibration.events`), joined across gaps of up to ``merge_gap`` seconds,
  timed in the source video's clock, ranked by peak over the whole archive: the rows of
  ``events.parquet`` (``EVENTS_SCHEMA``);
- :func:`event_metrics`: with labels, the share of anomalous intervals an event overlaps
  and the events that overlap no anomalous frame.

- :func:`chosen_score`: the same choice on one video's arrays, as the scoring actors write
  it into each video's file of ``SCORES/frames/`` (its choice recorded as ``SCORE_CHOICE``).

A table is sorted by video and frame; videos are located by their boundaries, never by a
mask over the whole table per video. The driver calls these on one video at a time, so
that nothing it holds grows with the archive but the events.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mnad import calibration as cal
from pipelines.schema import EVENTS_SCHEMA, LABEL_ANOMALOUS

CALIBRATED = "calibrated"
PER_VIDEO = "per-video"
COLUMNS = {CALIBRATED: "score_calibrated", PER_VIDEO: "score_per_video"}
"""Each normalisation's column in SCORES_SCHEMA."""
GAP_FRAMES_UNKNOWN_FPS = 25
"""Frames per second assumed for the merge gap of a video whose frame rate is unknown."""

SCORE_CHOICE = b"mnad.score"
"""Frame-file metadata: the normalisation and smoothing of its ``score`` (``choice_key``)."""

Clock = Mapping[str, tuple[float | None, float]]
"""video_id -> (frames per second or None, the source's start time in seconds)."""


class Video(NamedTuple):
    video_id: str
    rows: slice  # its rows in the sorted table


def videos(frames: pa.Table) -> Iterator[Video]:
    """Each video of a table sorted by video, with its rows."""
    ids = frames.column("video_id").to_numpy(zero_copy_only=False)
    if ids.size == 0:
        return
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], ids.size]
    for start, end in zip(starts, ends, strict=True):
        yield Video(str(ids[start]), slice(int(start), int(end)))


def choose_scores(frames: pa.Table, normalise: str, window: int) -> pa.Table:
    """``frames`` with ``score`` set to the ``normalise`` column, smoothed over ``window``
    frames within each video."""
    column = frames.column(COLUMNS[normalise])
    if column.null_count:
        raise ValueError(f"{COLUMNS[normalise]} has no values: the model has no calibration")
    raw = column.to_numpy()
    score = np.concatenate(
        [cal.smooth(raw[v.rows], window) for v in videos(frames)] or [np.zeros(0)]
    )
    at = frames.schema.get_field_index("score")
    return frames.set_column(at, frames.schema.field("score"), pa.array(score, pa.float64()))


def choice_key(normalise: str, window: int) -> bytes:
    """What ``SCORE_CHOICE`` records: ``b"calibrated/5"``."""
    return f"{normalise}/{window}".encode()


def chosen_score(
    per_video: np.ndarray, calibrated: np.ndarray | None, normalise: str, window: int
) -> np.ndarray:
    """One video's ``score``: its ``normalise`` scores (``calibrated`` is None without a
    calibration), smoothed over ``window`` frames (trailing)."""
    raw = per_video if normalise == PER_VIDEO else calibrated
    if raw is None:
        raise ValueError(f"{COLUMNS[normalise]} has no values: the model has no calibration")
    return cal.smooth(np.asarray(raw, np.float64), window)


def rank_events(tables: list[pa.Table]) -> pa.Table:
    """Events found video by video (``EVENTS_SCHEMA``, any ``rank``) ranked over them all:
    highest peak first, ties by video and first frame."""
    if not tables:
        return EVENTS_SCHEMA.empty_table()
    table = pa.concat_tables(tables).sort_by(
        [("peak_score", "descending"), ("video_id", "ascending"), ("first_frame", "ascending")]
    )
    at = table.schema.get_field_index("rank")
    ranks = pa.array(np.arange(1, table.num_rows + 1), table.schema.field("rank").type)
    return table.set_column(at, table.schema.field("rank"), ranks)


def event_counts(frames: pa.Table, events: pa.Table) -> tuple[int, int]:
    """(anomalies, of them overlapped by an event) in ``frames`` (:func:`event_metrics`)."""
    index = frames.column("frame_index").to_numpy()
    label = frames.column("label").to_numpy()
    by_video: dict[str, list[tuple[int, int]]] = {}
    for row in events.select(["video_id", "first_frame", "last_frame"]).to_pylist():
        by_video.setdefault(row["video_id"], []).append((row["first_frame"], row["last_frame"]))
    anomalies = found = 0
    for video in videos(frames):
        spans = by_video.get(video.video_id, [])
        for first, last in _runs(index[video.rows], label[video.rows] == LABEL_ANOMALOUS):
            anomalies += 1
            found += any(a <= last and first <= b for a, b in spans)
    return anomalies, found


def event_figures(anomalies: int, found: int, events: pa.Table) -> dict[str, float]:
    """:func:`event_metrics` from the counts of :func:`event_counts` and the events."""
    if not anomalies:
        return {}
    normal = events.filter(pc.equal(events.column("anomalous_frames"), 0))
    return {
        "anomalies": float(anomalies),
        "anomalies_found": found / anomalies,
        "events_on_normal": float(normal.num_rows),
    }


def archive_events(
    frames: pa.Table, threshold: float, merge_gap_s: float, clock: Clock
) -> pa.Table:
    """The events of every video (``score`` over ``threshold``), ranked by peak score."""
    index = frames.column("frame_index").to_numpy()
    score = frames.column("score").to_numpy()
    label = frames.column("label").to_numpy()
    rows: list[dict] = []
    for video in videos(frames):
        fps, start = clock.get(video.video_id, (None, 0.0))
        gap = round(merge_gap_s * (fps or GAP_FRAMES_UNKNOWN_FPS))
        frame_index, labels = index[video.rows], label[video.rows]
        for event in cal.events(frame_index, score[video.rows], threshold, gap):
            inside = (frame_index >= event.first_frame) & (frame_index <= event.last_frame)
            rows.append(
                {
                    "video_id": video.video_id,
                    **event._asdict(),
                    "start_s": None if fps is None else start + event.first_frame / fps,
                    "end_s": None if fps is None else start + (event.last_frame + 1) / fps,
                    "peak_s": None if fps is None else start + event.peak_frame / fps,
                    "anomalous_frames": int((labels[inside] == LABEL_ANOMALOUS).sum()),
                }
            )
    rows.sort(key=lambda r: (-r["peak_score"], r["video_id"], r["first_frame"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)


def event_metrics(frames: pa.Table, events: pa.Table) -> dict[str, float]:
    """Event-level figures against the labels (none without anomalous frames):
    ``anomalies`` (maximal runs of anomalous frames), ``anomalies_found`` (the share that an
    event overlaps) and ``events_on_normal`` (events that overlap no anomalous frame)."""
    return event_figures(*event_counts(frames, events), events)


def _runs(index: np.ndarray, flag: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) frame numbers of each maximal run of consecutive flagged rows."""
    edges = np.diff(np.r_[0, flag.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(int(index[a]), int(index[b])) for a, b in zip(starts, ends, strict=True)]


__all__ = [
    "CALIBRATED",
    "COLUMNS",
    "PER_VIDEO",
    "SCORE_CHOICE",
    "archive_events",
    "choice_key",
    "choose_scores",
    "chosen_score",
    "event_counts",
    "event_figures",
    "event_metrics",
    "rank_events",
    "videos",
]
