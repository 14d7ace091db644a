"""The evaluation report of a scoring job: ROC curve, per-video score plots, top segments, HTML.

Pure functions over in-memory per-frame scores (``VideoScores``); no Ray, no MLflow. The
scoring stage builds one ``VideoScores`` per video, calls ``write_report`` and logs the folder
it wrote as MLflow artifacts. The folder is self-contained and uses relative links only::

    out_dir/index.html                 title, metrics, ROC, video table, top segments
    out_dir/roc.png                    ROC curve with its AUC (when a curve is given)
    out_dir/videos/<video>.png         abnormality (and PSNR) over frames, ground truth shaded
    out_dir/segments/<video>_<n>.png   the n-th top segment's peak: frame | prediction | error

Scores follow the paper's convention after Eq. (13): the abnormality ``1 - s`` in [0, 1],
higher = more anomalous, normalised per video. Top segments (``top_segments``) are maximal runs
of consecutive scored frames at or above a per-video threshold, by default a robust z-score of
3 (``default_threshold``), so every video of an unlabelled archive shows where to look first;
the report joins runs less than a second apart, so that one noisy event is one segment.

Figures are built with matplotlib's object-oriented API on an explicit Agg canvas, never
through ``pyplot``: nothing is registered globally and nothing needs closing. A small score
plot costs about 0.1 s of CPU, so the plots of 300 videos take about half a minute. Segment
pictures are composed in numpy and written as PNGs directly, far cheaper than a figure each.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import matplotlib
import matplotlib.image
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from mnad.errors import UserError
from mnad.metrics import UNKNOWN, auc, known_frames, roc_auc, roc_curve

__all__ = [
    "Render",
    "ReportFiles",
    "Segment",
    "VideoScores",
    "anomalous_ranges",
    "default_threshold",
    "plot_roc",
    "plot_video",
    "pooled_roc",
    "report_gap",
    "segment_picture",
    "top_segments",
    "video_auc",
    "write_report",
]

Render = Callable[[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``render(video_id, frame_index) -> (frame, prediction, error)``: the target frame and the
model's prediction, each (H, W), (H, W, 1) or (H, W, 3) RGB as uint8 or float in [0, 1], and
the per-pixel error (H, W) float (any non-negative scale; shown normalised to its maximum)."""

ROBUST_Z = 3.0
"""The default segment threshold in robust standard deviations above the median score."""
MAD_TO_STD = 1.4826
"""Scale from the median absolute deviation to the standard deviation of a normal law."""
MERGE_GAP_S = 1.0
"""The report joins segments less than this many seconds apart into one (``report_gap``)."""
MERGE_GAP_FRAMES = 25
"""The same gap in frames for a video of unknown fps (one second at 25 fps)."""

VIDEO_FIGSIZE = (8.0, 2.5)
ROC_FIGSIZE = (4.0, 4.0)
DPI = 80
PICTURE_MIN_HEIGHT = 128
"""Segment pictures smaller than this (pixels) are enlarged by an integer nearest-neighbour
factor, so the 96x96 frames of the CPU preset stay legible."""
PICTURE_GAP = 4
"""White pixels between the three panels of a segment picture."""
ERROR_CMAP = "inferno"

SCORE_COLOR = "#1f5fa8"
PSNR_COLOR = "#8c8c8c"
TRUTH_COLOR = "#d62728"
PEAK_COLOR = "#111111"

_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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


@dataclass(frozen=True)
class ReportFiles:
    """What ``write_report`` wrote; paths are absolute or relative as ``out_dir`` was given."""

    index: Path
    roc: Path | None
    video_plots: dict[str, Path]
    """video_id -> its score plot."""
    segment_images: list[Path]
    """The segment pictures, in the order of the videos and of their segments' ranks."""
    segments: list[Segment]
    """Every video's top segments, in the order of the videos, then by rank."""


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


# ---------------------------------------------------------------------------------------------
# Figures


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas: nothing global, nothing to close."""
    figure = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _mpl_text(text: str) -> str:
    """Text for a matplotlib label: ``$`` escaped so that a name never turns into mathtext."""
    return text.replace("$", r"\$")


def _ellipsis(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, path: Path, *, title: str = "ROC") -> float:
    """Draw a ROC curve with its AUC in the legend and the chance diagonal; return the AUC."""
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    area = auc(fpr, tpr)  # validates shapes and monotonicity
    figure = _new_figure(ROC_FIGSIZE)
    ax = figure.add_subplot()
    ax.plot(fpr, tpr, color=SCORE_COLOR, lw=1.8, label=f"ROC (AUC = {area:.3f})")
    ax.plot([0, 1], [0, 1], color=PSNR_COLOR, lw=1, ls="--", label="chance (AUC = 0.5)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(_mpl_text(_ellipsis(title, 40)), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    figure.subplots_adjust(left=0.16, right=0.96, bottom=0.13, top=0.92)
    figure.savefig(path)
    return area


def plot_video(
    video: VideoScores,
    path: Path,
    *,
    segments: Sequence[Segment] = (),
    threshold: float | None = None,
    auc_value: float | None = None,
) -> None:
    """Draw one video's abnormality over its frames, PSNR on an inverted right axis.

    Ground-truth anomalous ranges are shaded; top segments are numbered at their peaks and
    their threshold is dotted.
    """
    figure = _new_figure(VIDEO_FIGSIZE)
    ax = figure.add_subplot()
    handles = _shade_truth(ax, video)
    handles += _draw_psnr(ax, video)
    ax.plot(video.frame_index, video.score, color=SCORE_COLOR, lw=1.3, marker=_marker(video), ms=3)
    handles.insert(0, Line2D([], [], color=SCORE_COLOR, lw=1.3, label="abnormality"))
    handles += _mark_segments(ax, segments, threshold)
    _decorate(ax, video, auc_value)
    ax.legend(
        handles=handles,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=len(handles),
        fontsize=7,
        frameon=False,
        borderaxespad=0.1,
        handlelength=1.6,
        columnspacing=1.0,
    )
    figure.subplots_adjust(left=0.07, right=0.91, bottom=0.18, top=0.86)
    figure.savefig(path)


def _marker(video: VideoScores) -> str | None:
    """Dots for a video too short for a visible line."""
    return "o" if video.n_frames < 3 else None


def _shade_truth(ax: Axes, video: VideoScores) -> list[Artist]:
    """Shade the ground-truth anomalous ranges; return the legend entry, if any."""
    ranges = anomalous_ranges(video.frame_index, video.label)
    for first, last in ranges:
        ax.axvspan(first - 0.5, last + 0.5, color=TRUTH_COLOR, alpha=0.18, lw=0)
    return [Patch(color=TRUTH_COLOR, alpha=0.18, label="ground truth")] if ranges else []


def _draw_psnr(ax: Axes, video: VideoScores) -> list[Artist]:
    """PSNR on a right axis, inverted so that it moves with the abnormality, drawn beneath it."""
    psnr_ax = ax.twinx()
    ax.set_zorder(psnr_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    psnr_ax.tick_params(labelsize=7, colors=PSNR_COLOR)
    psnr_ax.set_ylabel("PSNR dB (inverted)", fontsize=7, color=PSNR_COLOR)
    finite = np.isfinite(video.psnr)  # a perfect prediction may have infinite PSNR
    if not finite.any():
        return []
    frames, psnr = video.frame_index[finite], video.psnr[finite]
    psnr_ax.plot(frames, psnr, color=PSNR_COLOR, lw=0.8, marker=_marker(video), ms=3)
    psnr_ax.invert_yaxis()
    return [Line2D([], [], color=PSNR_COLOR, lw=0.8, label="PSNR")]


def _mark_segments(ax: Axes, segments: Sequence[Segment], threshold: float | None) -> list[Artist]:
    """Number the segments at their peaks and dot their threshold."""
    for rank, segment in enumerate(segments, start=1):
        ax.annotate(
            str(rank),
            (segment.peak_frame, segment.peak_score),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            fontweight="bold",
        )
    if threshold is None or not math.isfinite(threshold) or not segments:
        return []
    ax.axhline(threshold, color=PEAK_COLOR, lw=0.7, ls=":")
    return [Line2D([], [], color=PEAK_COLOR, lw=0.7, ls=":", label="threshold")]


def _decorate(ax: Axes, video: VideoScores, auc_value: float | None) -> None:
    """Limits, ticks, labels and the title (the video's name and AUC)."""
    frames = video.frame_index
    low, high = float(video.score.min()), float(video.score.max())
    ax.set_ylim(min(0.0, low), max(1.0, high) * 1.12)
    ax.set_xlim(frames[0] - 0.5, frames[-1] + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    ax.set_ylabel("abnormality", fontsize=8)
    ax.set_xlabel(_frame_axis_label(video), fontsize=8)
    heading = _ellipsis(video.video_id, 36)
    if auc_value is not None:
        heading += f"   AUC {auc_value:.3f}"
    ax.set_title(_mpl_text(heading), loc="left", fontsize=9)


def _frame_axis_label(video: VideoScores) -> str:
    if video.fps is None:
        return "frame"
    return f"frame  ({video.fps:g} fps)"


# ---------------------------------------------------------------------------------------------
# Segment pictures


def _as_rgb8(image: np.ndarray, what: str, where: str) -> np.ndarray:
    """An (H, W), (H, W, 1) or (H, W, 3) uint8 or [0, 1] float image as (H, W, 3) uint8."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"{where}: {what} must be (H, W), (H, W, 1) or (H, W, 3), got {array.shape}"
        )
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{where}: {what} must be uint8 or float, got {array.dtype}")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"{where}: {what} float values must lie in [0, 1], found [{low:.3g}, {high:.3g}]; "
            "map the model's [-1, 1] with (x + 1) / 2"
        )
    return np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)


def _error_rgb8(error: np.ndarray, shape: tuple[int, int], where: str) -> tuple[np.ndarray, float]:
    """A per-pixel error map coloured from 0 to its own maximum: ((H, W, 3) uint8, maximum)."""
    array = np.asarray(error, dtype=np.float32)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.shape != shape:
        raise ValueError(f"{where}: error map has shape {array.shape}, expected {shape}")
    peak = float(array.max()) if array.size else 0.0
    scaled = array / peak if peak > 0 else np.zeros_like(array)
    return matplotlib.colormaps[ERROR_CMAP](scaled, bytes=True)[:, :, :3], peak


def segment_picture(
    frame: np.ndarray, prediction: np.ndarray, error: np.ndarray, *, where: str = "render"
) -> tuple[np.ndarray, float]:
    """Frame, prediction and error map side by side, as one (H', W', 3) uint8 image.

    Small frames are enlarged by an integer factor (nearest neighbour) to at least
    ``PICTURE_MIN_HEIGHT`` rows. The error map is coloured from 0 to its own maximum.

    Returns:
        ``(picture, error_max)``.
    """
    target = _as_rgb8(frame, "frame", where)  # (H, W, 3)
    predicted = _as_rgb8(prediction, "prediction", where)  # (H, W, 3)
    if predicted.shape != target.shape:
        raise ValueError(f"{where}: prediction {predicted.shape} and frame {target.shape} differ")
    height, width = target.shape[:2]
    coloured, error_max = _error_rgb8(error, (height, width), where)  # (H, W, 3)
    gap = np.full((height, PICTURE_GAP, 3), 255, dtype=np.uint8)
    picture = np.concatenate([target, gap, predicted, gap, coloured], axis=1)  # (H, 3W + 2g, 3)
    factor = max(1, math.ceil(PICTURE_MIN_HEIGHT / max(height, 1)))
    if factor > 1:
        picture = np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)
    return picture, error_max


# ---------------------------------------------------------------------------------------------
# Files


def _file_stems(video_ids: Sequence[str]) -> dict[str, str]:
    """A file-name stem per video id, unique even on case-insensitive file systems.

    A plain id (letters, digits, ``._-``, up to 100 characters) is used as is; any other id,
    or one that would clash with another ignoring case, gets a sanitised prefix and 8 hex
    digits of its SHA-1.
    """
    plain = {vid: vid for vid in video_ids if _SAFE_STEM.fullmatch(vid)}
    folded: dict[str, int] = {}
    for stem in plain.values():
        folded[stem.casefold()] = folded.get(stem.casefold(), 0) + 1
    stems = {}
    for vid in video_ids:
        if vid in plain and folded[vid.casefold()] == 1:
            stems[vid] = vid
        else:
            prefix = re.sub(r"[^A-Za-z0-9._-]+", "_", vid).strip("._-")[:60] or "video"
            stems[vid] = f"{prefix}-{hashlib.sha1(vid.encode()).hexdigest()[:8]}"
    return stems


def _href(relative: Path) -> str:
    """A relative URL for a path inside the report folder, escaped for an HTML attribute."""
    return html.escape(quote(relative.as_posix()), quote=True)


# ---------------------------------------------------------------------------------------------
# HTML


@dataclass(frozen=True)
class _Picture:
    path: Path
    """Relative to the report folder."""
    error_max: float


@dataclass(frozen=True)
class _VideoEntry:
    """Everything the page says about one video."""

    video: VideoScores
    anchor: str
    plot: Path
    """Relative to the report folder."""
    auc: float | None
    segments: list[Segment]
    pictures: list[_Picture | None]


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:20px 0 6px}
table{border-collapse:collapse;margin:6px 0}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f5f5f5}
img{max-width:100%;height:auto;border:1px solid #eee}
figure{margin:6px 0 14px}figcaption{font-size:12px;color:#555}
.muted{color:#777}.video{margin-bottom:18px}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | int) -> str:
    """A metric value for a table cell."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    number = float(value)
    if not math.isfinite(number):
        return "n/a"
    if abs(number) >= 1000:
        return f"{number:,.1f}"
    return f"{number:.4g}"


def _clock(seconds: float) -> str:
    """Seconds as ``m:ss.ss`` or ``h:mm:ss.ss``."""
    minutes, rest = divmod(round(seconds, 2), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}:{minutes:02d}:{rest:05.2f}"
    return f"{minutes}:{rest:05.2f}"


def _time_span(segment: Segment) -> str:
    if segment.start_s is None or segment.end_s is None:
        return "—"
    return f"{_clock(segment.start_s)} – {_clock(segment.end_s)}"


def _optional(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _anomalous_cell(video: VideoScores) -> str:
    """Anomalous frames where labels are known, with how many are known when not all are."""
    if not video.labelled or video.label is None:
        return "—"
    known = int((video.label != UNKNOWN).sum())
    anomalous = int((video.label == 1).sum())
    if known == video.n_frames:
        return f"{anomalous:,}"
    return f"{anomalous:,} (of {known:,} known)"


def _metrics_html(metrics: Mapping[str, float]) -> list[str]:
    rows = [f"<tr><td>{_esc(k)}</td><td>{_esc(_number(v))}</td></tr>" for k, v in metrics.items()]
    return ["<h2>Metrics</h2>", "<table><tr><th>metric</th><th>value</th></tr>", *rows, "</table>"]


def _videos_table_html(entries: Sequence[_VideoEntry]) -> list[str]:
    lines = [
        "<h2>Videos</h2>",
        "<table><tr><th>video</th><th>frames scored</th><th>anomalous frames</th><th>AUC</th>"
        "<th>peak score</th><th>top segments</th><th>plot</th></tr>",
    ]
    for entry in entries:
        video = entry.video
        lines.append(
            f'<tr><td><a href="#{entry.anchor}">{_esc(video.video_id)}</a></td>'
            f"<td>{video.n_frames:,}</td><td>{_anomalous_cell(video)}</td>"
            f"<td>{_optional(entry.auc)}</td><td>{float(video.score.max()):.3f}</td>"
            f"<td>{len(entry.segments)}</td>"
            f'<td><a href="{_href(entry.plot)}">png</a></td></tr>'
        )
    lines.append("</table>")
    return lines


def _segments_html(entry: _VideoEntry) -> list[str]:
    if not entry.segments:
        return ['<p class="muted">No segment stands out.</p>']
    lines = [
        "<table><tr><th>#</th><th>first frame</th><th>last frame</th><th>time</th>"
        "<th>peak frame</th><th>peak score</th></tr>"
    ]
    for rank, segment in enumerate(entry.segments, start=1):
        lines.append(
            f"<tr><td>{rank}</td><td>{segment.first_frame}</td><td>{segment.last_frame}</td>"
            f"<td>{_time_span(segment)}</td><td>{segment.peak_frame}</td>"
            f"<td>{segment.peak_score:.3f}</td></tr>"
        )
    lines.append("</table>")
    for rank, (segment, picture) in enumerate(zip(entry.segments, entry.pictures, strict=True), 1):
        if picture is None:
            continue
        href = _href(picture.path)
        caption = (
            f"#{rank}: frame {segment.peak_frame} (score {segment.peak_score:.3f}) — "
            f"frame | prediction | error (0 to {picture.error_max:.3g})"
        )
        lines.append(
            f'<figure><a href="{href}"><img src="{href}" loading="lazy" alt="{_esc(caption)}">'
            f"</a><figcaption>{_esc(caption)}</figcaption></figure>"
        )
    return lines


def _video_section_html(entry: _VideoEntry) -> list[str]:
    video = entry.video
    href = _href(entry.plot)
    return [
        f'<div class="video" id="{entry.anchor}">',
        f"<h3>{_esc(video.video_id)}</h3>",
        f'<a href="{href}"><img src="{href}" loading="lazy" alt="score plot of '
        f'{_esc(video.video_id)}"></a>',
        *_segments_html(entry),
        "</div>",
    ]


def _page_html(
    title: str,
    metrics: Mapping[str, float] | None,
    roc: Path | None,
    entries: Sequence[_VideoEntry],
) -> str:
    """The whole self-contained page: inline CSS, no scripts, relative links only."""
    n_labelled = sum(entry.video.labelled for entry in entries)
    n_frames = sum(entry.video.n_frames for entry in entries)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="muted">{len(entries):,} videos ({n_labelled:,} labelled), '
        f"{n_frames:,} frames scored.</p>",
    ]
    if metrics:
        parts += _metrics_html(metrics)
    if roc is not None:
        parts += ["<h2>ROC</h2>", f'<img src="{_href(roc)}" alt="ROC curve">']
    parts += _videos_table_html(entries)
    parts.append("<h2>Per video: score and top segments</h2>")
    for entry in entries:
        parts += _video_section_html(entry)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# The report


def _check_videos(videos: Sequence[VideoScores]) -> None:
    if not videos:
        raise UserError(
            "no videos to report: nothing was scored (empty input, or every video skipped)"
        )
    seen: set[str] = set()
    for video in videos:
        if video.video_id in seen:
            raise ValueError(f"video {video.video_id!r} appears twice in the report")
        seen.add(video.video_id)


def _render_pictures(
    video: VideoScores, segments: Sequence[Segment], stem: str, out_dir: Path, render: Render
) -> list[_Picture]:
    """Render and write one picture per segment; paths relative to ``out_dir``."""
    pictures = []
    for rank, segment in enumerate(segments, start=1):
        where = f"render({video.video_id!r}, {segment.peak_frame})"
        frame, prediction, error = render(video.video_id, segment.peak_frame)
        picture, error_max = segment_picture(frame, prediction, error, where=where)
        relative = Path("segments") / f"{stem}_{rank}.png"
        matplotlib.image.imsave(out_dir / relative, picture, pil_kwargs={"compress_level": 1})
        pictures.append(_Picture(relative, error_max))
    return pictures


def write_report(
    videos: Sequence[VideoScores],
    out_dir: str | Path,
    *,
    title: str,
    metrics: Mapping[str, float] | None = None,
    roc: tuple[np.ndarray, np.ndarray] | None = None,
    render: Render | None = None,
    top_k: int = 3,
    pictures: Literal["all", "unlabelled"] = "all",
) -> ReportFiles:
    """Write the evaluation report of a scoring job into ``out_dir``.

    Args:
        videos: the scored videos, in the order the page lists them; ids must be unique.
        out_dir: the report folder (created); files of an earlier report are overwritten.
        title: the page's title.
        metrics: name -> value, shown as a table (e.g. micro/macro AUC, EER, frames/s).
        roc: ``(fpr, tpr)`` of the pooled ROC (``pooled_roc``); draws ``roc.png``.
        render: ``render(video_id, frame_index) -> (frame, prediction, error)`` (see
            ``Render``); None writes no segment pictures.
        top_k: top segments per video (``top_segments`` with its default threshold, joining
            runs less than ``report_gap`` apart).
        pictures: render the segments of ``"all"`` videos or only of ``"unlabelled"`` ones.

    Returns:
        The files written and the segments found.
    """
    _check_videos(videos)
    if pictures not in ("all", "unlabelled"):
        raise ValueError(f"pictures must be 'all' or 'unlabelled', got {pictures!r}")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    if render is not None:
        (out / "segments").mkdir(exist_ok=True)

    roc_path = None
    if roc is not None:
        roc_path = out / "roc.png"
        plot_roc(roc[0], roc[1], roc_path, title=title)

    stems = _file_stems([v.video_id for v in videos])
    entries = []
    for video in videos:
        entries.append(_report_video(video, stems[video.video_id], out, render, top_k, pictures))

    index = out / "index.html"
    page = _page_html(title, metrics, None if roc_path is None else Path("roc.png"), entries)
    index.write_text(page, encoding="utf-8")
    return ReportFiles(
        index=index,
        roc=roc_path,
        video_plots={e.video.video_id: out / e.plot for e in entries},
        segment_images=[out / p.path for e in entries for p in e.pictures if p is not None],
        segments=[s for e in entries for s in e.segments],
    )


def _report_video(
    video: VideoScores,
    stem: str,
    out: Path,
    render: Render | None,
    top_k: int,
    pictures: Literal["all", "unlabelled"],
) -> _VideoEntry:
    """Plot one video, find its top segments and render their pictures."""
    threshold = default_threshold(video.score)
    segments = top_segments(video, k=top_k, threshold=threshold, max_gap=report_gap(video))
    auc_value = video_auc(video)
    plot = Path("videos") / f"{stem}.png"
    plot_video(video, out / plot, segments=segments, threshold=threshold, auc_value=auc_value)
    drawn: list[_Picture | None] = [None] * len(segments)
    if render is not None and (pictures == "all" or not video.labelled):
        drawn = list(_render_pictures(video, segments, stem, out, render))
    return _VideoEntry(video, f"v-{stem}", plot, auc_value, segments, drawn)
