"""Writing the evaluation report of a scoring job: one self-contained folder.

Runs on the driver, after the scores are written. :func:`write_score_report` writes one of
two reports from the scores (a table, or the ``ArchiveScores`` of the job's frames dataset,
read one video at a time):

- with the archive's events (a calibrated model), :func:`write_events_report`: a summary of
  the threshold and the alarm rates, the top ``TOP_EVENTS`` events with a picture of each
  peak, and the score plots of the ``TOP_VIDEOS`` videos with the highest events; its size
  does not grow with the archive, and only the plotted videos become ``VideoScores``;
- without (scores normalised per video), :func:`write_report` over one :class:`VideoScores`
  per video: each video's top segments, plots and segment pictures.

The folder uses relative links only::

    out_dir/index.html                 title, metrics, ROC, videos, events or top segments
    out_dir/roc.png                    ROC curve with its AUC (when the videos are labelled)
    out_dir/videos/<video>.png         abnormality (and PSNR) over frames, ground truth shaded
    out_dir/segments/<video>_<n>.png   the n-th top segment's peak: frame | prediction | error
    out_dir/events/<rank>.png          the peak of the archive's event of that rank
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
from pipelines.score.events import CALIBRATED, COLUMNS
from pipelines.score.report.archive import (
    TOP_EVENTS,
    TOP_VIDEOS,
    ArchiveScores,
    EventVideo,
    RankedEvent,
    event_videos,
    events_of,
    ranked_events,
    table_scores,
)
from pipelines.score.report.page import (
    Calibrated,
    EventEntry,
    EventVideoEntry,
    Picture,
    VideoEntry,
    events_page_html,
    file_stems,
    page_html,
    summary_rows,
)
from pipelines.score.report.pictures import Render, segment_picture
from pipelines.score.report.plots import plot_roc, plot_video
from pipelines.score.report.segments import (
    Segment,
    VideoScores,
    default_threshold,
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
    note: str | None = None,
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
        note: a paragraph the page shows first (what the scores mean), or None.

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
    roc_link = None if roc_path is None else Path("roc.png")
    page = page_html(title, metrics, roc_link, entries, note=note)
    index.write_text(page, encoding="utf-8")
    return ReportFiles(
        index=index,
        roc=roc_path,
        video_plots={e.video.video_id: out / e.plot for e in entries},
        segment_images=[out / p.path for e in entries for p in e.pictures if p is not None],
        segments=[s for e in entries for s in e.segments],
    )


def segment_frames(
    videos: Sequence[VideoScores],
    *,
    top_k: int = 3,
    pictures: Literal["all", "unlabelled"] = "all",
) -> list[tuple[str, int]]:
    """(video_id, frame) of each picture :func:`write_report` renders for ``videos``: the
    peaks of their top segments, found as it finds them."""
    wanted = []
    for video in videos:
        if pictures == "all" or not video.labelled:
            threshold = default_threshold(video.score)
            found = top_segments(video, k=top_k, threshold=threshold, max_gap=report_gap(video))
            wanted += [(video.video_id, s.peak_frame) for s in found]
    return wanted


def event_frames(events: pa.Table) -> list[tuple[str, int]]:
    """(video_id, frame) of each picture :func:`write_events_report` renders: the peaks of
    the top ``TOP_EVENTS`` events."""
    return [(e.segment.video_id, e.segment.peak_frame) for e in ranked_events(events, TOP_EVENTS)]


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


def video_scores(frames: pa.Table, column: str = "score") -> list[VideoScores]:
    """One ``VideoScores`` per video of a scores table (``SCORES_SCHEMA``) sorted by video
    and frame, scored by ``column``; a video whose labels are all unknown gets
    ``label=None``."""
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
                score=cols[column][idx],
                label=None if (label == LABEL_UNKNOWN).all() else label,
                psnr=cols["psnr"][idx],
                feature_distance=cols["feature_distance"][idx],
            )
        )
    return videos


PER_VIDEO_NOTE = (
    "Scores are normalised per video (Eq. 13): every video reaches 1.0, so a high score says "
    "where a video stands out from the rest of itself, not that it is anomalous, and videos "
    "cannot be compared. `mnad calibrate` gives the model a threshold, and its scoring jobs "
    "the archive's events."
)
"""The note that leads the report of a job whose model has no calibration."""


def write_score_report(
    frames: pa.Table | ArchiveScores,
    dest: str,
    *,
    title: str,
    metrics: Mapping[str, float],
    render: Render | None,
    events: pa.Table | None = None,
    threshold: float | None = None,
    false_alarm_rate: float | None = None,
    normalise: str = "per-video",
) -> str | None:
    """The report of a scores table, written to the folder ``dest`` (a path or a URI).

    With ``events`` (``EVENTS_SCHEMA``, a calibrated model's events at ``threshold``, for
    the target ``false_alarm_rate``): :func:`write_events_report`; without, the per-video
    report of :func:`write_report` with a note on what per-video scores mean.
    ``normalise`` is the normalisation of the table's ``score``: ``calibrated`` or
    ``per-video``.

    A report for a URI is written to a local temporary folder first and copied there.
    Returns the local folder (for the MLflow run's artifacts), or None when no frame was
    scored.
    """
    source = table_scores(frames) if isinstance(frames, pa.Table) else frames
    if source.archive.frames == 0:
        return None
    remote = storage.is_uri(dest)
    local = Path(tempfile.mkdtemp(prefix="mnad-report-")) if remote else Path(dest)
    roc = source.roc
    if events is None:
        videos = [video_scores(source.video(v))[0] for v in source.archive.ids]
        write_report(
            videos, local, title=title, metrics=metrics, roc=roc, render=render, note=PER_VIDEO_NOTE
        )
    else:
        level = metrics.get("threshold") if threshold is None else threshold
        if level is None:
            raise ValueError("a report of events needs their threshold")
        scale = Calibrated(normalise, float(level), false_alarm_rate)
        write_events_report(
            source, events, local, title=title, scale=scale, metrics=metrics, roc=roc, render=render
        )
    if remote:
        storage.copy_tree(local, dest)
    return str(local)


def write_events_report(
    frames: pa.Table | ArchiveScores,
    events: pa.Table,
    out_dir: str | Path,
    *,
    title: str,
    scale: Calibrated,
    metrics: Mapping[str, float] | None = None,
    roc: tuple[np.ndarray, np.ndarray] | None = None,
    render: Render | None = None,
) -> ReportFiles:
    """Write the report of a calibrated job into ``out_dir``: the summary, the archive's
    top ``TOP_EVENTS`` events (a picture of each peak with ``render``), the score plots of
    the ``TOP_VIDEOS`` videos with the highest events, the ROC and the metrics.

    Args:
        frames: the scores table (``SCORES_SCHEMA``), sorted by video and frame, or the
            ``ArchiveScores`` of an archive (only the plotted videos are read).
        events: its events (``EVENTS_SCHEMA``), ranked over the archive.
        scale: the normalisation of ``score``, the threshold and the target rate.
        roc: ``(fpr, tpr)`` of the pooled ROC (``table_roc``); draws ``roc.png``.

    Returns:
        The files written; ``segments`` and ``segment_images`` are the listed events and
        their pictures, in rank order.
    """
    source = table_scores(frames) if isinstance(frames, pa.Table) else frames
    found = source.archive
    if found.frames == 0:
        raise UserError("no videos to report: nothing was scored")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    roc_path = None
    if roc is not None:
        roc_path = out / "roc.png"
        plot_roc(roc[0], roc[1], roc_path, title=title)

    listed = event_videos(events)
    plotted = _plot_event_videos(source, events, listed[:TOP_VIDEOS], scale, out)
    anchors = {e.listed.video_id: e.anchor for e in plotted}
    top = ranked_events(events, TOP_EVENTS)
    drawn = _event_pictures(top, out, render)
    entries = [
        EventEntry(e, p, anchors.get(e.segment.video_id), e.segment.video_id in found.labelled)
        for e, p in zip(top, drawn, strict=True)
    ]
    summary = summary_rows(scale, metrics or {}, found, events.num_rows, len(listed))
    page = events_page_html(
        title,
        found,
        summary,
        entries,
        events.num_rows - len(top),
        plotted,
        len(listed),
        None if roc_path is None else Path("roc.png"),
        metrics,
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return ReportFiles(
        index=index,
        roc=roc_path,
        video_plots={e.listed.video_id: out / e.plot for e in plotted},
        segment_images=[out / p.path for p in drawn if p is not None],
        segments=[e.segment for e in top],
    )


def _plot_event_videos(
    source: ArchiveScores,
    events: pa.Table,
    listed: Sequence[EventVideo],
    scale: Calibrated,
    out: Path,
) -> list[EventVideoEntry]:
    """Plot each listed video (only these become ``VideoScores``): the score the events were
    found on, the threshold, the events shaded and the first ranks marked."""
    column = "score" if scale.normalise == CALIBRATED else COLUMNS[CALIBRATED]
    ids = [v.video_id for v in listed]
    stems = file_stems(ids)
    their_events = events_of(events, ids)
    entries = []
    for video_listed in listed:
        (video,) = video_scores(source.video(video_listed.video_id), column)
        plot = Path("videos") / f"{stems[video.video_id]}.png"
        marks = [(e.rank, e.segment) for e in their_events[video.video_id]]
        auc_value = video_auc(video)
        plot_video(
            video,
            out / plot,
            threshold=scale.threshold,
            auc_value=auc_value,
            events=marks,
            ylabel="calibrated score",
        )
        anchor = f"v-{stems[video.video_id]}"
        entries.append(EventVideoEntry(video, video_listed, anchor, plot, auc_value))
    return entries


def _event_pictures(
    events: Sequence[RankedEvent], out: Path, render: Render | None
) -> list[Picture | None]:
    """Render and write the peak of each event as ``events/<rank>.png`` (None without
    ``render``)."""
    if render is None:
        return [None] * len(events)
    (out / "events").mkdir(exist_ok=True)
    pictures: list[Picture | None] = []
    for event in events:
        segment = event.segment
        where = f"render({segment.video_id!r}, {segment.peak_frame})"
        frame, prediction, error = render(segment.video_id, segment.peak_frame)
        picture, error_max = segment_picture(frame, prediction, error, where=where)
        relative = Path("events") / f"{event.rank}.png"
        matplotlib.image.imsave(out / relative, picture, pil_kwargs={"compress_level": 1})
        pictures.append(Picture(relative, error_max))
    return pictures


__all__ = [
    "PER_VIDEO_NOTE",
    "ReportFiles",
    "event_frames",
    "segment_frames",
    "video_scores",
    "write_events_report",
    "write_report",
    "write_score_report",
]
