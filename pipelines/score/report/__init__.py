"""The evaluation report of a scoring job: summary, top events or segments, plots, ROC, HTML.

Runs on the driver, after the scoring actors; no Ray, no MLflow (the scoring stage logs the
folder it wrote as the run's artifacts). One module per concern:

- :mod:`.segments`: the per-video scores (``VideoScores``), thresholds, runs, top segments,
  AUCs and the pooled ROC: pure numpy;
- :mod:`.archive`: what a calibrated job's report shows of the archive (its top events, the
  videos with events, the pooled ROC) read from the scores and events tables, within
  ``TOP_EVENTS`` and ``TOP_VIDEOS``;
- :mod:`.plots`: the ROC curve and each video's score plot (matplotlib);
- :mod:`.pictures`: a segment's peak as frame | prediction | error (``FrameRenderer`` runs
  the model on the clip that ends there; a scoring job runs it on the cluster, through
  :mod:`pipelines.score.pictures`, for the frames ``event_frames`` or ``segment_frames``
  name);
- :mod:`.page`: the self-contained HTML page;
- :mod:`.write`: the report folders (``write_events_report`` with events, ``write_report``
  per video) and a scoring job's report from its tables (``write_score_report``).
"""

from pipelines.score.report.archive import (
    TOP_EVENTS,
    TOP_VIDEOS,
    Archive,
    ArchiveScores,
    known_roc,
    table_roc,
    table_scores,
)
from pipelines.score.report.page import Calibrated
from pipelines.score.report.pictures import FrameRenderer, Render, segment_picture
from pipelines.score.report.plots import plot_roc, plot_video
from pipelines.score.report.segments import (
    Segment,
    VideoScores,
    anomalous_ranges,
    default_threshold,
    pooled_roc,
    report_gap,
    top_segments,
    video_auc,
)
from pipelines.score.report.write import (
    PER_VIDEO_NOTE,
    ReportFiles,
    event_frames,
    segment_frames,
    video_scores,
    write_events_report,
    write_report,
    write_score_report,
)

__all__ = [
    "PER_VIDEO_NOTE",
    "TOP_EVENTS",
    "TOP_VIDEOS",
    "Archive",
    "ArchiveScores",
    "Calibrated",
    "FrameRenderer",
    "Render",
    "ReportFiles",
    "Segment",
    "VideoScores",
    "anomalous_ranges",
    "default_threshold",
    "event_frames",
    "known_roc",
    "plot_roc",
    "plot_video",
    "pooled_roc",
    "report_gap",
    "segment_frames",
    "segment_picture",
    "table_roc",
    "table_scores",
    "top_segments",
    "video_auc",
    "video_scores",
    "write_events_report",
    "write_report",
    "write_score_report",
]
