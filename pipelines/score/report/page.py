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


__all__ = ["Picture", "VideoEntry", "file_stems", "page_html"]
