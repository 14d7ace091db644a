"""The ingest stage: videos and frame folders into Parquet shards, a manifest and a summary.

Where each part runs: :mod:`~pipelines.ingest.config` (the options),
:mod:`~pipelines.ingest.layouts` (finding the videos and their ground truth) and
:mod:`~pipelines.ingest.driver` (the Ray Data job, the manifest and summary, completion) on
the driver; :mod:`~pipelines.ingest.video` (one video: hash, copy, decode, shard) in a Ray
task, :mod:`~pipelines.ingest.segments` (a long video's segments: decoded by parallel tasks,
joined into its shard), with :mod:`~pipelines.ingest.decode` (ffmpeg) and
:mod:`~pipelines.ingest.labels` (the ground-truth formats).
:mod:`~pipelines.ingest.result` is the typed result and its ``summary.json``.
"""

from pipelines.stage import exports

_MODULES = {
    "config": ("IngestConfig", "default_dataset_name", "ingest_settings"),
    "driver": ("completion", "run_ingest"),
    "result": ("Failure", "IngestResult"),
}

__getattr__ = exports(__name__, _MODULES)
__all__ = sorted(name for names in _MODULES.values() for name in names)
