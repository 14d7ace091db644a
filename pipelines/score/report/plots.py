"""The report's figures: the pooled ROC curve and each video's score plot (matplotlib).

Runs on the driver. Figures are built with matplotlib's object-oriented API on an explicit
Agg canvas, never through ``pyplot``: nothing is registered globally and nothing needs
closing. A small score plot costs about 0.1 s of CPU, so the plots of 300 videos take about
half a minute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from mnad.metrics import auc
from pipelines.score.report.segments import Segment, VideoScores, anomalous_ranges

VIDEO_FIGSIZE = (8.0, 2.5)
ROC_FIGSIZE = (4.0, 4.0)
DPI = 80

SCORE_COLOR = "#1f5fa8"
PSNR_COLOR = "#8c8c8c"
TRUTH_COLOR = "#d62728"
PEAK_COLOR = "#111111"
EVENT_COLOR = "#f2a900"
EVENT_MARKS = 5
"""A video's score plot numbers its first this many events (by archive rank) at their peaks."""


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
    events: Sequence[tuple[int, Segment]] = (),
    ylabel: str = "abnormality",
) -> None:
    """Draw one video's abnormality over its frames, PSNR on an inverted right axis.

    Ground-truth anomalous ranges are shaded; top segments are numbered at their peaks and
    their threshold is dotted. ``events`` are ``(archive rank, event)`` pairs in rank order:
    each is shaded, the first ``EVENT_MARKS`` are marked ``#rank`` at their peaks, and the
    threshold is dotted.
    """
    figure = _new_figure(VIDEO_FIGSIZE)
    ax = figure.add_subplot()
    handles = _shade_truth(ax, video)
    handles += _shade_events(ax, events)
    handles += _draw_psnr(ax, video)
    ax.plot(video.frame_index, video.score, color=SCORE_COLOR, lw=1.3, marker=_marker(video), ms=3)
    handles.insert(0, Line2D([], [], color=SCORE_COLOR, lw=1.3, label="abnormality"))
    handles += _mark_segments(ax, segments, threshold, bool(events))
    _decorate(ax, video, auc_value, ylabel)
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


def _shade_events(ax: Axes, events: Sequence[tuple[int, Segment]]) -> list[Artist]:
    """Shade the events (one collection however many) and mark the first at their peaks."""
    if not events:
        return []
    spans = [(e.first_frame - 0.5, e.n_frames) for _, e in events]
    shade = {"color": EVENT_COLOR, "alpha": 0.28, "lw": 0}
    ax.broken_barh(spans, (0, 1), transform=ax.get_xaxis_transform(), **shade)
    for rank, event in events[:EVENT_MARKS]:
        _label_peak(ax, f"#{rank}", event.peak_frame, event.peak_score)
    return [Patch(color=EVENT_COLOR, alpha=0.28, label="events")]


def _label_peak(ax: Axes, text: str, frame: float, score: float) -> None:
    """A small bold label just above a peak."""
    ax.annotate(
        text, (frame, score), xytext=(0, 2), textcoords="offset points",
        ha="center", va="bottom", fontsize=7, fontweight="bold",
    )  # fmt: skip


def _mark_segments(
    ax: Axes, segments: Sequence[Segment], threshold: float | None, events: bool = False
) -> list[Artist]:
    """Number the segments at their peaks and dot their threshold (also with ``events``)."""
    for rank, segment in enumerate(segments, start=1):
        _label_peak(ax, str(rank), segment.peak_frame, segment.peak_score)
    if threshold is None or not math.isfinite(threshold) or not (segments or events):
        return []
    ax.axhline(threshold, color=PEAK_COLOR, lw=0.7, ls=":")
    return [Line2D([], [], color=PEAK_COLOR, lw=0.7, ls=":", label="threshold")]


def _decorate(ax: Axes, video: VideoScores, auc_value: float | None, ylabel: str) -> None:
    """Limits, ticks, labels and the title (the video's name and AUC)."""
    frames = video.frame_index
    low, high = float(video.score.min()), float(video.score.max())
    ax.set_ylim(min(0.0, low), max(1.0, high) * 1.12)
    ax.set_xlim(frames[0] - 0.5, frames[-1] + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_xlabel(_frame_axis_label(video), fontsize=8)
    heading = _ellipsis(video.video_id, 36)
    if auc_value is not None:
        heading += f"   AUC {auc_value:.3f}"
    ax.set_title(_mpl_text(heading), loc="left", fontsize=9)


def _frame_axis_label(video: VideoScores) -> str:
    if video.fps is None:
        return "frame"
    return f"frame  ({video.fps:g} fps)"


__all__ = ["plot_roc", "plot_video"]
