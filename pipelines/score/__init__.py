"""The score stage (`mnad score`): per-frame anomaly scores of a split or an archive.

A typed config in (:class:`ScoreConfig`), a typed result out (:class:`ScoreResult`), and
:func:`completion` / :func:`discard` over its outputs, the SCORES folder. Split by where the
code runs:

- :mod:`.config` (driver): the options;
- :mod:`.driver` (driver): :func:`run_score`: the model found (its ref travels to the
  actors, which fetch it), the actors sized to the nodes and run over Ray Data, the frames
  dataset read one video at a time for the metrics and events, the report, the MLflow run;
- :mod:`.actor` (Ray Data actors): :class:`VideoScorer`, which fetches the model itself,
  one video at a time, one file of the frames dataset each;
- :mod:`.segments` (driver): long videos as segments scored in parallel
  (``--segment-seconds``, calibrated mode), joined back into each video's file;
- :mod:`.pictures` (a Ray task): the report's pictures, rendered off the driver;
- :mod:`.events` (driver): the score the job asked for, the archive's events, event-level
  figures;
- :mod:`.result` (driver): the SCORES folder, :class:`ScoreResult` and its summary.json,
  :func:`completion`, :func:`discard`, :func:`read_frames`;
- :mod:`.report` (driver): the evaluation report (segments, plots, pictures, HTML page).
"""

from pipelines.stage import exports

_MODULES = {
    "actor": ("VideoOutcome", "VideoScorer", "VideoTask", "video_inputs"),
    "config": ("NORMALISE", "MemoryMode", "Normalise", "ScoreConfig"),
    "driver": (
        "Scored", "combine_parts", "frame_metrics", "run_score", "score_tasks", "score_videos",
    ),
    "events": ("archive_events", "choose_scores", "event_metrics"),
    "result": (
        "EVENTS_FILE", "FRAMES_DIR", "PARTS_DIR", "REPORT_DIR", "SCORES_SUMMARY_FILE",
        "ScoreResult", "completion", "discard", "frames_dataset", "read_frames", "read_result",
    ),
}

__getattr__ = exports(__name__, _MODULES)
__all__ = sorted(name for names in _MODULES.values() for name in names)
