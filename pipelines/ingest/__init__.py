"""The ingest stage: videos and frame folders into Parquet shards, a manifest and a summary.

Where each part runs: :mod:`~pipelines.ingest.config` (the options),
:mod:`~pipelines.ingest.layouts` (finding the videos and their ground truth) and
:mod:`~pipelines.ingest.driver` (the Ray Data job, the manifest and summary, completion) on
the driver; :mod:`~pipelines.ingest.video` (one video: hash, copy, decode, shard) in a Ray
task, with :mod:`~pipelines.ingest.decode` (ffmpeg) and :mod:`~pipelines.ingest.labels`
(the ground-truth formats). :mod:`~pipelines.ingest.result` is the typed result and its
``summary.json``.
"""

from pipelines.ingest.config import IngestConfig, default_dataset_name, ingest_settings
from pipelines.ingest.driver import completion, run_ingest
from pipelines.ingest.result import Failure, IngestResult

__all__ = [
    "Failure",
    "IngestConfig",
    "IngestResult",
    "completion",
    "default_dataset_name",
    "ingest_settings",
    "run_ingest",
]
