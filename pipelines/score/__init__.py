"""The score stage (`mnad score`): per-frame anomaly scores of a split or an archive.

A typed config in (:class:`ScoreConfig`), a typed result out (:class:`ScoreResult`), and
:func:`completion` / :func:`discard` over its outputs, the SCORES folder. Split by where the
code runs:

- :mod:`.config` (driver): the options;
- :mod:`.driver` (driver): :func:`run_score`: the model found and fetched once, the actors
  sized and run over Ray Data, the parts combined, the metrics, the report, the MLflow run;
- :mod:`.actor` (Ray Data actors): :class:`VideoScorer`, one video at a time, one part file
  each;
- :mod:`.result` (driver): the SCORES folder, :class:`ScoreResult` and its summary.json,
  :func:`completion`, :func:`discard`;
- :mod:`.report` (driver): the evaluation report (segments, plots, pictures, HTML page).
"""

from pipelines.score.actor import VideoOutcome, VideoScorer, VideoTask, video_inputs
from pipelines.score.config import MemoryMode, ScoreConfig
from pipelines.score.driver import combine_parts, frame_metrics, run_score
from pipelines.score.result import (
    FRAMES_FILE,
    PARTS_DIR,
    REPORT_DIR,
    SCORES_SUMMARY_FILE,
    ScoreResult,
    completion,
    discard,
    read_result,
)

__all__ = [
    "FRAMES_FILE",
    "PARTS_DIR",
    "REPORT_DIR",
    "SCORES_SUMMARY_FILE",
    "MemoryMode",
    "ScoreConfig",
    "ScoreResult",
    "VideoOutcome",
    "VideoScorer",
    "VideoTask",
    "combine_parts",
    "completion",
    "discard",
    "frame_metrics",
    "read_result",
    "run_score",
    "video_inputs",
]
