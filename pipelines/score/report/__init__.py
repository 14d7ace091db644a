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
  the model on the clip that ends there);
- :mod:`.page`: the self-contained HTML page;
- :mod:`.write`: the report folders (``write_events_report`` with events, ``write_report``
  per video) and a scoring job's report from its tables (``write_score_report``).
"""

from pipelines.score.report.archive import TOP_EVENTS, TOP_VIDEOS, table_roc
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
    video_scores,
    write_events_report,
    write_report,
    write_score_report,
)

__all__ = [
    "PER_VIDEO_NOTE",
    "TOP_EVENTS",
    "TOP_VIDEOS",
    "Calibrated",
    "FrameRenderer",
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
    "table_roc",
    "top_segments",
    "video_auc",
    "video_scores",
    "write_events_report",
    "write_report",
    "write_score_report",
]
