"""The evaluation report of a scoring job: ROC curve, per-video score plots, top segments, HTML.

Runs on the driver, after the scoring actors; no Ray, no MLflow (the scoring stage logs the
folder it wrote as the run's artifacts). One module per concern:

- :mod:`.segments`: the per-video scores (``VideoScores``), thresholds, runs, top segments,
  AUCs and the pooled ROC: pure numpy;
- :mod:`.plots`: the ROC curve and each video's score plot (matplotlib);
- :mod:`.pictures`: a segment's peak as frame | prediction | error (``FrameRenderer`` runs
  the model on the clip that ends there);
- :mod:`.page`: the self-contained HTML page;
- :mod:`.write`: the report folder (``write_report``) and a scoring job's report from its
  scores table (``write_score_report``).
"""

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
    ReportFiles,
    video_scores,
    write_report,
    write_score_report,
)

__all__ = [
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
    "top_segments",
    "video_auc",
    "video_scores",
    "write_report",
    "write_score_report",
]
