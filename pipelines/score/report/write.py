"""Writing the evaluation report of a scoring job: one self-contained folder.

Runs on the driver, after the scores are combined. :func:`write_score_report` turns
SCORES/frames.parquet's table into one :class:`VideoScores` per video and calls
:func:`write_report`, which finds each video's top segments, draws the plots, renders the
segment pictures and writes the page. The folder uses relative links only::

    out_dir/index.html                 title, metrics, ROC, video table, top segments
    out_dir/roc.png                    ROC curve with its AUC (when a curve is given)
    out_dir/videos/<video>.png         abnormality (and PSNR) over frames, ground truth shaded
    out_dir/segments/<video>_<n>.png   the n-th top segment's peak: frame | prediction | error
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib.image
import numpy as np
import pyarrow as pa

from mnad.errors import UserError
from pipelines import storage
from pipelines.schema import LABEL_UNKNOWN
from pipelines.score.report.page import Picture, VideoEntry, file_stems, page_html
from pipelines.score.report.pictures import Render, segment_picture
from pipelines.score.report.plots import plot_roc, plot_video
from pipelines.score.report.segments import (
    Segment,
    VideoScores,
    default_threshold,
    pooled_roc,
    report_gap,
    top_segments,
    video_auc,
)


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
) -> list[Picture]:
    """Render and write one picture per segment; paths relative to ``out_dir``."""
    pictures = []
    for rank, segment in enumerate(segments, start=1):
        where = f"render({video.video_id!r}, {segment.peak_frame})"
        frame, prediction, error = render(video.video_id, segment.peak_frame)
        picture, error_max = segment_picture(frame, prediction, error, where=where)
        relative = Path("segments") / f"{stem}_{rank}.png"
        matplotlib.image.imsave(out_dir / relative, picture, pil_kwargs={"compress_level": 1})
        pictures.append(Picture(relative, error_max))
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

    stems = file_stems([v.video_id for v in videos])
    entries = []
    for video in videos:
        entries.append(_report_video(video, stems[video.video_id], out, render, top_k, pictures))

    index = out / "index.html"
    page = page_html(title, metrics, None if roc_path is None else Path("roc.png"), entries)
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
) -> VideoEntry:
    """Plot one video, find its top segments and render their pictures."""
    threshold = default_threshold(video.score)
    segments = top_segments(video, k=top_k, threshold=threshold, max_gap=report_gap(video))
    auc_value = video_auc(video)
    plot = Path("videos") / f"{stem}.png"
    plot_video(video, out / plot, segments=segments, threshold=threshold, auc_value=auc_value)
    drawn: list[Picture | None] = [None] * len(segments)
    if render is not None and (pictures == "all" or not video.labelled):
        drawn = list(_render_pictures(video, segments, stem, out, render))
    return VideoEntry(video, f"v-{stem}", plot, auc_value, segments, drawn)


def video_scores(frames: pa.Table) -> list[VideoScores]:
    """One ``VideoScores`` per video of a scores table (``SCORES_SCHEMA``) sorted by video
    and frame; a video whose labels are all unknown gets ``label=None``."""
    cols = {n: frames.column(n).to_numpy(zero_copy_only=False) for n in frames.schema.names}
    videos = []
    bounds = np.flatnonzero(cols["video_id"][1:] != cols["video_id"][:-1]) + 1
    for idx in np.split(np.arange(frames.num_rows), bounds):
        if idx.size == 0:
            continue
        label = cols["label"][idx]
        videos.append(
            VideoScores(
                video_id=str(cols["video_id"][idx[0]]),
                frame_index=cols["frame_index"][idx],
                score=cols["score"][idx],
                label=None if (label == LABEL_UNKNOWN).all() else label,
                psnr=cols["psnr"][idx],
                feature_distance=cols["feature_distance"][idx],
            )
        )
    return videos


def write_score_report(
    frames: pa.Table,
    dest: str,
    *,
    title: str,
    metrics: Mapping[str, float],
    render: Render | None,
) -> str | None:
    """The report of a scores table, written to the folder ``dest`` (a path or a URI).

    A report for a URI is written to a local temporary folder first and copied there.
    Returns the local folder (for the MLflow run's artifacts), or None when no frame was
    scored.
    """
    videos = video_scores(frames)
    if not videos:
        return None
    remote = storage.is_uri(dest)
    local = Path(tempfile.mkdtemp(prefix="mnad-report-")) if remote else Path(dest)
    write_report(videos, local, title=title, metrics=metrics, roc=pooled_roc(videos), render=render)
    if remote:
        storage.copy_tree(local, dest)
    return str(local)


__all__ = ["ReportFiles", "video_scores", "write_report", "write_score_report"]
