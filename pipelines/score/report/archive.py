"""What the report of a calibrated job shows of an archive: its top events, the videos that
have events, and the pooled ROC, read straight from the scores and events tables.

Runs on the driver; pyarrow and numpy, no files. The report's size is bounded however large
the archive: at most ``TOP_EVENTS`` events get a picture and ``TOP_VIDEOS`` videos a score
plot, and only the rows of those videos are ever turned into a ``VideoScores``; the rest of
the archive is counted, never held per video.

The report reads an archive as :class:`ArchiveScores`: its counts, its pooled ROC and a
way to read one video's rows. :func:`table_scores` makes one of a table in memory; the
scoring job makes one while it reads its frames dataset video by video, so the report of an
archive never holds more than the videos it plots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mnad.metrics import known_frames, roc_curve
from pipelines.schema import LABEL_ANOMALOUS, LABEL_NORMAL, LABEL_UNKNOWN
from pipelines.score.events import videos
from pipelines.score.report.segments import Segment

TOP_EVENTS = 20
"""The report lists (and pictures) at most this many of the archive's events, highest first."""
TOP_VIDEOS = 50
"""The report plots at most this many videos with events, by their highest event's peak."""


@dataclass(frozen=True)
class RankedEvent:
    """One row of events.parquet (``EVENTS_SCHEMA``)."""

    rank: int
    """1: the archive's highest peak."""
    segment: Segment
    """Its frames and its times in the source video's clock (None without a frame rate)."""
    frames: int
    """Frames over the threshold in the event."""
    anomalous_frames: int
    """Frames of the event labelled anomalous."""


@dataclass(frozen=True)
class EventVideo:
    """A video with events, as the report lists them."""

    video_id: str
    events: int
    peak_score: float
    """Its highest event's peak."""
    first_rank: int
    """Its highest event's archive rank."""


@dataclass(frozen=True)
class Archive:
    """What the report says of the whole archive without holding it per video."""

    videos: int
    labelled: frozenset[str]
    """The videos with at least one known label."""
    frames: int
    ids: tuple[str, ...] = ()
    """Every video, in order."""


def archive(frames: pa.Table) -> Archive:
    """Count the videos, labelled videos and frames of a scores table sorted by video."""
    ids = tuple(v.video_id for v in videos(frames))
    known = pc.not_equal(frames.column("label"), LABEL_UNKNOWN)
    labelled = pc.unique(pc.filter(frames.column("video_id"), known)).to_pylist()
    return Archive(len(ids), frozenset(labelled), frames.num_rows, ids)


@dataclass(frozen=True)
class ArchiveScores:
    """What a report reads of a scored archive: its counts, the pooled ROC of ``score`` and
    one video's rows on demand."""

    archive: Archive
    roc: tuple[np.ndarray, np.ndarray] | None
    video: Callable[[str], pa.Table]
    """video_id -> its rows (``SCORES_SCHEMA``), sorted by frame."""


def table_scores(frames: pa.Table) -> ArchiveScores:
    """:class:`ArchiveScores` of a scores table in memory, sorted by video and frame."""
    rows = {v.video_id: v.rows for v in videos(frames)}

    def video(video_id: str) -> pa.Table:
        at = rows[video_id]
        return frames.slice(at.start, at.stop - at.start)

    return ArchiveScores(archive(frames), table_roc(frames), video)


def known_roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The ROC (fpr, tpr) of known frames' ``scores`` and ``labels`` (0 or 1); None unless
    both classes occur."""
    if not (labels == LABEL_ANOMALOUS).any() or not (labels == LABEL_NORMAL).any():
        return None
    fpr, tpr, _ = roc_curve(scores, labels)
    return fpr, tpr


def _segment(row: dict) -> Segment:
    return Segment(
        video_id=row["video_id"],
        first_frame=int(row["first_frame"]),
        last_frame=int(row["last_frame"]),
        peak_frame=int(row["peak_frame"]),
        peak_score=float(row["peak_score"]),
        start_s=row["start_s"],
        end_s=row["end_s"],
    )


def ranked_events(events: pa.Table, limit: int | None = None) -> list[RankedEvent]:
    """The events in rank order, the first ``limit`` of them (None: all)."""
    ordered = events.sort_by("rank")
    if limit is not None:
        ordered = ordered.slice(0, limit)
    return [
        RankedEvent(int(r["rank"]), _segment(r), int(r["frames"]), int(r["anomalous_frames"]))
        for r in ordered.to_pylist()
    ]


def event_videos(events: pa.Table) -> list[EventVideo]:
    """Every video with events, highest event peak first (ties: the better archive rank)."""
    grouped = events.group_by("video_id").aggregate(
        [("rank", "count"), ("rank", "min"), ("peak_score", "max")]
    )
    grouped = grouped.sort_by([("rank_min", "ascending")])
    return [
        EventVideo(r["video_id"], int(r["rank_count"]), float(r["peak_score_max"]), r["rank_min"])
        for r in grouped.to_pylist()
    ]


def events_of(events: pa.Table, video_ids: list[str]) -> dict[str, list[RankedEvent]]:
    """The events of some videos, each video's in rank order."""
    chosen = events.filter(pc.is_in(events.column("video_id"), pa.array(video_ids, pa.string())))
    out: dict[str, list[RankedEvent]] = {v: [] for v in video_ids}
    for event in ranked_events(chosen):
        out[event.segment.video_id].append(event)
    return out


def table_roc(frames: pa.Table, column: str = "score") -> tuple[np.ndarray, np.ndarray] | None:
    """The ROC (fpr, tpr) of all known frames of a scores table pooled (the micro AUC's
    curve), from its columns; None unless both classes occur."""
    label = frames.column("label").to_numpy()
    return known_roc(*known_frames(frames.column(column).to_numpy(), label))


__all__ = [
    "TOP_EVENTS",
    "TOP_VIDEOS",
    "Archive",
    "ArchiveScores",
    "EventVideo",
    "RankedEvent",
    "archive",
    "event_videos",
    "events_of",
    "known_roc",
    "ranked_events",
    "table_roc",
    "table_scores",
]
