"""The scoring side of the report: per-video scores, thresholds, runs, segments, pooled ROC.

Runs on the driver, after the scoring actors are done; pure numpy over in-memory per-frame
scores (``VideoScores``): no files, no plots, no Ray, no MLflow.

Scores follow the paper's convention after Eq. (13): the abnormality ``1 - s`` in [0, 1],
higher = more anomalous, normalised per video. Top segments (``top_segments``) are maximal runs
of consecutive scored frames at or above a per-video threshold, by default a robust z-score of
3 (``default_threshold``), so every video of an unlabelled archive shows where to look first;
the report joins runs less than a second apart (``report_gap``), so that one noisy event is
one segment. ``video_auc`` and ``pooled_roc`` are the frame AUC of one video and the ROC of
all known frames pooled (the paper's micro AUC, Sec. 4.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mnad.metrics import UNKNOWN, known_frames, roc_auc, roc_curve

ROBUST_Z = 3.0
"""The default segment threshold in robust standard deviations above the median score."""
MAD_TO_STD = 1.4826
"""Scale from the median absolute deviation to the standard deviation of a normal law."""
MERGE_GAP_S = 1.0
"""The report joins segments less than this many seconds apart into one (``report_gap``)."""
MERGE_GAP_FRAMES = 25
"""The same gap in frames for a video of unknown fps (one second at 25 fps)."""


@dataclass
class VideoScores:
    """The per-frame scores of one video, as the scoring stage wrote them.

    Arrays are converted on construction (``frame_index`` int64, ``label`` int8, the rest
    float64) and their lengths checked; a ``ValueError`` names the video.
    """

    video_id: str
    """The video's name, unique within a report."""
    frame_index: np.ndarray
    """(N,) the 0-based frame numbers scored, strictly ascending; the first t-1 frames of a
    video have no prediction score, and gaps are allowed."""
    score: np.ndarray
    """(N,) abnormality, higher = more anomalous (in [0, 1] after per-video normalisation)."""
    label: np.ndarray | None
    """(N,) 1 anomalous, 0 normal, -1 unknown; None (or all -1) for an unlabelled video."""
    psnr: np.ndarray
    """(N,) PSNR of the prediction in dB (Eq. 11)."""
    feature_distance: np.ndarray
    """(N,) distance of the frame's queries to their nearest memory items (Eq. 12)."""
    fps: float | None = None
    """Frames per second of the source, for times; None gives positions in frames only."""

    def __post_init__(self) -> None:
        if not isinstance(self.video_id, str) or not self.video_id:
            raise ValueError(f"video_id must be a non-empty string, got {self.video_id!r}")
        where = f"video {self.video_id!r}"
        self.frame_index = _frame_numbers(self.frame_index, where)
        n = self.frame_index.size
        self.score = _float_column(self.score, "score", n, where)
        if not np.isfinite(self.score).all():
            raise ValueError(f"{where}: score holds NaN or infinite values")
        self.psnr = _float_column(self.psnr, "psnr", n, where)
        self.feature_distance = _float_column(self.feature_distance, "feature_distance", n, where)
        if self.label is not None:
            self.label = _labels(self.label, n, where)
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"{where}: fps must be a positive number or None, got {self.fps!r}")

    @property
    def n_frames(self) -> int:
        """How many frames were scored."""
        return int(self.frame_index.size)

    @property
    def labelled(self) -> bool:
        """Whether any scored frame has a known label."""
        return self.label is not None and bool((self.label != UNKNOWN).any())


@dataclass(frozen=True)
class Segment:
    """A span of scored frames at or above a threshold (see ``top_segments``); inclusive."""

    video_id: str
    first_frame: int
    last_frame: int
    peak_frame: int
    """The frame of the highest score in the run (the first one on ties)."""
    peak_score: float
    start_s: float | None
    """Time of the first frame, ``first_frame / fps``; None without fps."""
    end_s: float | None
    """Time of the end of the last frame, ``(last_frame + 1) / fps``; None without fps."""

    @property
    def n_frames(self) -> int:
        """How many frames the segment spans."""
        return self.last_frame - self.first_frame + 1


# ---------------------------------------------------------------------------------------------
# Validation


def _frame_numbers(values: np.ndarray, where: str) -> np.ndarray:
    """Check frame numbers: 1-D, at least one, integer, >= 0 and strictly ascending."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{where}: frame_index must be 1-D and non-empty, got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where}: frame_index must hold integers, got {array.dtype}")
    array = array.astype(np.int64)
    if array[0] < 0 or (np.diff(array) <= 0).any():
        raise ValueError(f"{where}: frame_index must be >= 0 and strictly ascending")
    return array


def _column(values: np.ndarray, name: str, n: int, where: str) -> np.ndarray:
    """Check that one per-frame column holds one value per scored frame."""
    array = np.asarray(values)
    if array.shape != (n,):
        raise ValueError(f"{where}: {name} has shape {array.shape}, expected ({n},) as frame_index")
    return array


def _float_column(values: np.ndarray, name: str, n: int, where: str) -> np.ndarray:
    """One per-frame float column as float64."""
    return _column(values, name, n, where).astype(np.float64)


def _labels(values: np.ndarray, n: int, where: str) -> np.ndarray:
    """Check per-frame labels: length n, values in {-1, 0, 1}."""
    array = _column(values, "label", n, where)
    if not np.isin(array, (UNKNOWN, 0, 1)).all():
        raise ValueError(f"{where}: labels must be -1, 0 or 1")
    return array.astype(np.int8)


# ---------------------------------------------------------------------------------------------
# Ranges and segments


def _runs(frame_index: np.ndarray, mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True over consecutive frame numbers, as (start, stop) array indices.

    A gap in ``frame_index`` (a difference other than 1) ends a run. ``stop`` is exclusive.
    """
    if mask.size == 0:
        return []
    joined = np.diff(frame_index) == 1  # (N - 1,) frame i + 1 directly follows frame i
    continues_before = np.r_[False, mask[:-1] & joined]  # (N,)
    continues_after = np.r_[mask[1:] & joined, False]  # (N,)
    starts = np.flatnonzero(mask & ~continues_before)
    stops = np.flatnonzero(mask & ~continues_after) + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def anomalous_ranges(frame_index: np.ndarray, label: np.ndarray | None) -> list[tuple[int, int]]:
    """The ground-truth anomalous ranges: maximal runs of ``label == 1``.

    Args:
        frame_index: (N,) frame numbers, strictly ascending; a gap breaks a run.
        label: (N,) labels in {-1, 0, 1}, or None (no ranges).

    Returns:
        Inclusive ``(first, last)`` frame numbers, in frame order.
    """
    frames = np.asarray(frame_index)
    if label is None:
        return []
    labels = np.asarray(label)
    if frames.ndim != 1 or frames.shape != labels.shape:
        raise ValueError(f"frame_index {frames.shape} and label {labels.shape} must be 1-D alike")
    if (np.diff(frames) <= 0).any():
        raise ValueError("frame_index must be strictly ascending")
    return [(int(frames[a]), int(frames[b - 1])) for a, b in _runs(frames, labels == 1)]


def default_threshold(score: np.ndarray) -> float:
    """The default per-video segment threshold: a robust z-score of ``ROBUST_Z`` (3).

    ``median + 3 * sigma`` with ``sigma = 1.4826 * MAD`` (the median absolute deviation, which
    an anomaly covering less than half the video barely moves); when more than half the frames
    share one score (MAD = 0) the plain standard deviation stands in. The threshold is capped
    at the maximum score, so a video whose score varies always has at least its peak as a
    segment: every video of an archive shows where to look first, and its peak score says how
    much it stands out. A constant score (one scored frame included) has no segment: ``inf``.

    Args:
        score: (N,) abnormality of one video.

    Returns:
        The threshold; frames with ``score >= threshold`` belong to segments.
    """
    score = np.asarray(score, dtype=np.float64)
    highest = float(score.max())
    if highest == float(score.min()):
        return math.inf
    median = float(np.median(score))
    sigma = MAD_TO_STD * float(np.median(np.abs(score - median)))
    if sigma == 0:
        sigma = float(score.std())
    return min(median + ROBUST_Z * sigma, highest)


def _segment(video: VideoScores, start: int, stop: int) -> Segment:
    """The segment of array indices [start, stop) of a video."""
    peak = start + int(np.argmax(video.score[start:stop]))
    first, last = int(video.frame_index[start]), int(video.frame_index[stop - 1])
    fps = video.fps
    return Segment(
        video_id=video.video_id,
        first_frame=first,
        last_frame=last,
        peak_frame=int(video.frame_index[peak]),
        peak_score=float(video.score[peak]),
        start_s=None if fps is None else first / fps,
        end_s=None if fps is None else (last + 1) / fps,
    )


def _merge_runs(
    frame_index: np.ndarray, runs: Sequence[tuple[int, int]], max_gap: int
) -> list[tuple[int, int]]:
    """Join runs (array-index ``[start, stop)``) separated by at most ``max_gap`` frames."""
    merged: list[tuple[int, int]] = []
    for start, stop in runs:
        if merged and frame_index[start] - frame_index[merged[-1][1] - 1] - 1 <= max_gap:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return merged


def top_segments(
    video: VideoScores,
    k: int = 3,
    threshold: float | None = None,
    min_length: int = 1,
    *,
    max_gap: int = 0,
) -> list[Segment]:
    """The top anomalous segments of one video, ranked by peak score.

    Segments are the maximal runs of consecutive scored frames with ``score >= threshold``
    (a gap in the scored frames ends a run), so they never overlap. ``max_gap`` > 0 joins runs
    separated by at most that many frames, so that a noisy score that dips under the
    threshold for a moment inside one event gives one segment rather than several.

    Args:
        video: one video's scores.
        k: at most this many segments (0 gives none).
        threshold: the score a frame needs; None picks ``default_threshold(video.score)``.
        min_length: drop segments spanning fewer frames than this.
        max_gap: join runs separated by at most this many frames (0: plain maximal runs).

    Returns:
        Up to k segments, highest peak first (earlier segment first on ties).
    """
    if k < 0 or min_length < 1 or max_gap < 0:
        raise ValueError(
            f"need k >= 0, min_length >= 1 and max_gap >= 0, got k={k}, "
            f"min_length={min_length}, max_gap={max_gap}"
        )
    level = default_threshold(video.score) if threshold is None else float(threshold)
    runs = _runs(video.frame_index, video.score >= level)
    if max_gap:
        runs = _merge_runs(video.frame_index, runs, max_gap)
    segments = [_segment(video, start, stop) for start, stop in runs]
    segments = [s for s in segments if s.n_frames >= min_length]
    segments.sort(key=lambda s: (-s.peak_score, s.first_frame))
    return segments[:k]


def report_gap(video: VideoScores) -> int:
    """The ``max_gap`` the report joins segments across: ``MERGE_GAP_S`` seconds of frames
    at the video's fps, or ``MERGE_GAP_FRAMES`` frames when the fps is unknown."""
    if video.fps is None:
        return MERGE_GAP_FRAMES
    return max(0, round(MERGE_GAP_S * video.fps))


# ---------------------------------------------------------------------------------------------
# Metrics over the report's videos


def video_auc(video: VideoScores) -> float | None:
    """The frame AUC of one video over its known frames; None unless both classes occur."""
    if video.label is None:
        return None
    scores, labels = known_frames(video.score, video.label)
    if not 0 < int(labels.sum()) < labels.size:
        return None
    return roc_auc(scores, labels)


def pooled_roc(videos: Sequence[VideoScores]) -> tuple[np.ndarray, np.ndarray] | None:
    """The ROC (fpr, tpr) of all known frames pooled (the paper's micro AUC, Sec. 4.1).

    A convenience for callers of ``write_report``; None when the pooled frames hold fewer than
    two classes (an unlabelled archive).
    """
    pairs = [known_frames(v.score, v.label) for v in videos if v.label is not None]
    if not pairs:
        return None
    scores = np.concatenate([s for s, _ in pairs])
    labels = np.concatenate([y for _, y in pairs])
    if not 0 < int(labels.sum()) < labels.size:
        return None
    fpr, tpr, _ = roc_curve(scores, labels)
    return fpr, tpr


__all__ = [
    "MERGE_GAP_FRAMES",
    "MERGE_GAP_S",
    "Segment",
    "VideoScores",
    "anomalous_ranges",
    "default_threshold",
    "pooled_roc",
    "report_gap",
    "top_segments",
    "video_auc",
]
