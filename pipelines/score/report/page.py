"""The report's HTML page: one self-contained ``index.html`` (inline CSS, no scripts).

Runs on the driver; text only, from what the other report modules computed and wrote (the
videos' segments, AUCs, plot and picture paths). Every link is relative, so the folder can be
copied anywhere (an object store, an MLflow run's artifacts) and still opens.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from mnad.metrics import UNKNOWN
from pipelines.score.events import CALIBRATED, PER_VIDEO
from pipelines.score.report.archive import Archive, EventVideo, RankedEvent
from pipelines.score.report.segments import Segment, VideoScores

_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def file_stems(video_ids: Sequence[str]) -> dict[str, str]:
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


@dataclass(frozen=True)
class Picture:
    path: Path
    """Relative to the report folder."""
    error_max: float


@dataclass(frozen=True)
class VideoEntry:
    """Everything the page says about one video."""

    video: VideoScores
    anchor: str
    plot: Path
    """Relative to the report folder."""
    auc: float | None
    segments: list[Segment]
    pictures: list[Picture | None]


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
.note{background:#fff8e1;border-left:4px solid #f2a900;padding:6px 10px}
table.summary td:last-child{text-align:left}
td.pic{text-align:left}td.pic img{width:300px}
"""


def _head(title: str, videos: int, labelled: int, frames: int) -> list[str]:
    """The page's start: the document head, the title and what was scored."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="muted">{videos:,} videos ({labelled:,} labelled), {frames:,} frames '
        "scored.</p>",
    ]


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
    """Seconds as ``mm:ss.s``, or ``h:mm:ss.s`` from an hour on."""
    tenths = round(abs(seconds) * 10)
    sign = "-" if seconds < 0 and tenths else ""
    minutes, tenths = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    rest = f"{tenths // 10:02d}.{tenths % 10}"
    if hours:
        return f"{sign}{hours}:{minutes:02d}:{rest}"
    return f"{sign}{minutes:02d}:{rest}"


def time_span(segment: Segment) -> str:
    """A segment's time in its video's clock, ``mm:ss.s – mm:ss.s``; a dash without one."""
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


def _videos_table_html(entries: Sequence[VideoEntry]) -> list[str]:
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


def _segments_html(entry: VideoEntry) -> list[str]:
    if not entry.segments:
        return ['<p class="muted">No segment stands out.</p>']
    lines = [
        "<table><tr><th>#</th><th>first frame</th><th>last frame</th><th>time</th>"
        "<th>peak frame</th><th>peak score</th></tr>"
    ]
    for rank, segment in enumerate(entry.segments, start=1):
        lines.append(
            f"<tr><td>{rank}</td><td>{segment.first_frame}</td><td>{segment.last_frame}</td>"
            f"<td>{time_span(segment)}</td><td>{segment.peak_frame}</td>"
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


def _video_section_html(entry: VideoEntry) -> list[str]:
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


def page_html(
    title: str,
    metrics: Mapping[str, float] | None,
    roc: Path | None,
    entries: Sequence[VideoEntry],
    note: str | None = None,
) -> str:
    """The whole self-contained page: inline CSS, no scripts, relative links only.

    ``note``: a paragraph shown first (what the scores mean), or None.
    """
    n_labelled = sum(entry.video.labelled for entry in entries)
    n_frames = sum(entry.video.n_frames for entry in entries)
    parts = _head(title, len(entries), n_labelled, n_frames)
    if note:
        parts.append(f'<p class="note">{_esc(note)}</p>')
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
# The page of a calibrated job: summary, top events, videos with events


@dataclass(frozen=True)
class EventEntry:
    """One row of the top-events table."""

    event: RankedEvent
    picture: Picture | None
    anchor: str | None
    """Its video's section on the page; None when the video is not plotted."""
    labelled: bool
    """Whether its video has known labels (else whether it overlaps an anomaly is unknown)."""


@dataclass(frozen=True)
class EventVideoEntry:
    """One plotted video with events."""

    video: VideoScores
    listed: EventVideo
    anchor: str
    plot: Path
    """Relative to the report folder."""
    auc: float | None


@dataclass(frozen=True)
class Calibrated:
    """How the scores of a calibrated job were thresholded."""

    normalise: str
    """``calibrated`` or ``per-video`` (the job's ``score``; events are on the calibrated scale)."""
    threshold: float
    """On the calibrated scale."""
    false_alarm_rate: float | None
    """The target share of normal frames over the threshold; None when not known."""

    def __post_init__(self) -> None:
        if self.normalise not in (CALIBRATED, PER_VIDEO):
            raise ValueError(
                f"normalise must be {CALIBRATED!r} or {PER_VIDEO!r}, got {self.normalise!r}"
            )
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, got {self.threshold!r}")


def _percent(rate: float) -> str:
    return f"{100 * rate:.3g}%"


def _count(value: float) -> str:
    return f"{round(value):,}"


def summary_rows(
    scale: Calibrated,
    metrics: Mapping[str, float],
    archive: Archive,
    n_events: int,
    with_events: int,
) -> list[tuple[str, str]]:
    """The summary block of a calibrated job: (what, value) rows, labelled figures last."""
    if scale.normalise == CALIBRATED:
        scores = (
            "calibrated: robust z units on normal footage (0 = a typical normal frame, "
            "1 = one robust standard deviation towards anomalous)"
        )
    else:
        scores = (
            "normalised per video (Eq. 13, every video reaches 1.0); the threshold, the "
            "events and the plots below are on the calibrated scale"
        )
    rows = [("scores", scores), ("threshold", f"{scale.threshold:.4g} (calibrated scale)")]
    if scale.false_alarm_rate is not None:
        rows.append(
            ("target false-alarm rate", f"{_percent(scale.false_alarm_rate)} of normal frames")
        )
    if "calibration_alarm_rate" in metrics:
        rows.append(
            ("alarm rate on the calibration videos", _percent(metrics["calibration_alarm_rate"]))
        )
    if "calibration_held_out_alarm_rate" in metrics:
        rows.append(
            (
                "… held out (each video at the threshold of the others)",
                _percent(metrics["calibration_held_out_alarm_rate"]),
            )
        )
    if "alarm_rate" in metrics:
        rows.append(("alarm rate on these videos", _percent(metrics["alarm_rate"])))
    rows.append(("events", f"{n_events:,} in {with_events:,} of {archive.videos:,} videos"))
    per_hour = metrics.get("events_per_hour")
    rows.append(
        (
            "events per hour of scored footage",
            "frame rate unknown" if per_hour is None else f"{per_hour:.3g}",
        )
    )
    for key, what in _LABELLED:
        if key in metrics:
            rows.append((what, _number(metrics[key])))
    if "anomalies_found" in metrics:
        anomalies = metrics.get("anomalies")
        of = "" if anomalies is None else f" of {_count(anomalies)} anomalous intervals"
        rows.append(("anomalies an event overlaps", f"{_percent(metrics['anomalies_found'])}{of}"))
    if "events_on_normal" in metrics:
        rows.append(
            (
                "events on normal footage (no anomalous frame)",
                f"{_count(metrics['events_on_normal'])} of {n_events:,}",
            )
        )
    return rows


_LABELLED = (
    ("micro_auc", "frame AUC, pooled (the job's score)"),
    ("macro_auc", "frame AUC, mean over videos"),
    ("calibrated_micro_auc", "frame AUC, calibrated score"),
    ("per_video_micro_auc", "frame AUC, per-video score"),
)
"""The AUCs the summary shows when the videos are labelled: metric key, what it is."""


def _summary_html(rows: Sequence[tuple[str, str]]) -> list[str]:
    cells = [f"<tr><td>{_esc(what)}</td><td>{_esc(value)}</td></tr>" for what, value in rows]
    return ["<h2>Summary</h2>", '<table class="summary">', *cells, "</table>"]


def _overlap_cell(entry: EventEntry) -> str:
    if not entry.labelled:
        return "—"
    frames = entry.event.anomalous_frames
    return f"yes ({frames:,} frames)" if frames else "no"


def _events_html(events: Sequence[EventEntry], more: int, labels: bool) -> list[str]:
    lines = ["<h2>Top events</h2>"]
    if not events:
        return [*lines, '<p class="muted">No frame scored over the threshold: no events.</p>']
    overlap_head = "<th>anomalous</th>" if labels else ""
    lines.append(
        "<table><tr><th>rank</th><th>video</th><th>frames</th><th>time</th>"
        f"<th>peak score</th>{overlap_head}<th>peak: frame | prediction | error</th></tr>"
    )
    for entry in events:
        event, segment = entry.event, entry.event.segment
        video = _esc(segment.video_id)
        if entry.anchor is not None:
            video = f'<a href="#{entry.anchor}">{video}</a>'
        picture = '<span class="muted">—</span>'
        if entry.picture is not None:
            href = _href(entry.picture.path)
            alt = f"event {event.rank}: frame {segment.peak_frame} | prediction | error"
            picture = (
                f'<a href="{href}"><img src="{href}" loading="lazy" alt="{_esc(alt)}"></a><br>'
                f'<span class="muted">frame {segment.peak_frame}, error 0 to '
                f"{entry.picture.error_max:.3g}</span>"
            )
        overlap = f"<td>{_overlap_cell(entry)}</td>" if labels else ""
        lines.append(
            f"<tr><td>{event.rank}</td><td>{video}</td>"
            f"<td>{segment.first_frame}–{segment.last_frame}</td><td>{time_span(segment)}</td>"
            f"<td>{segment.peak_score:.3f}</td>{overlap}"
            f'<td class="pic">{picture}</td></tr>'
        )
    lines.append("</table>")
    if more:
        lines.append(f'<p class="muted">… and {more:,} more in events.parquet.</p>')
    return lines


def _event_videos_html(
    videos: Sequence[EventVideoEntry], with_events: int, total: int
) -> list[str]:
    without = total - with_events
    shown = "" if len(videos) == with_events else f" The {len(videos):,} with the highest peaks:"
    lines = [
        "<h2>Videos with events</h2>",
        f"<p>{with_events:,} of {total:,} videos had events; {without:,} had none.{shown}</p>",
    ]
    for entry in videos:
        listed, href = entry.listed, _href(entry.plot)
        auc = "" if entry.auc is None else f", AUC {entry.auc:.3f}"
        lines += [
            f'<div class="video" id="{entry.anchor}">',
            f"<h3>{_esc(listed.video_id)}</h3>",
            f'<p class="muted">{listed.events:,} event{"s" if listed.events != 1 else ""}, '
            f"highest peak {listed.peak_score:.3f} "
            f"(rank {listed.first_rank:,}){auc}</p>",
            f'<a href="{href}"><img src="{href}" loading="lazy" alt="score plot of '
            f'{_esc(listed.video_id)}"></a>',
            "</div>",
        ]
    return lines


def events_page_html(
    title: str,
    archive: Archive,
    summary: Sequence[tuple[str, str]],
    events: Sequence[EventEntry],
    more: int,
    videos: Sequence[EventVideoEntry],
    with_events: int,
    roc: Path | None,
    metrics: Mapping[str, float] | None,
) -> str:
    """The page of a calibrated job: the summary, the top events (``more`` left off), the
    plotted videos with events (of ``with_events``), the ROC and every metric."""
    parts = _head(title, archive.videos, len(archive.labelled), archive.frames)
    parts += _summary_html(summary)
    parts += _events_html(events, more, labels=bool(archive.labelled))
    parts += _event_videos_html(videos, with_events, archive.videos)
    if roc is not None:
        parts += ["<h2>ROC</h2>", f'<img src="{_href(roc)}" alt="ROC curve">']
    if metrics:
        parts += _metrics_html(metrics)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


__all__ = [
    "Calibrated",
    "EventEntry",
    "EventVideoEntry",
    "Picture",
    "VideoEntry",
    "events_page_html",
    "file_stems",
    "page_html",
    "summary_rows",
    "time_span",
]
