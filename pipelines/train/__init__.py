"""The train stage: MNAD trained with Ray Train and DDP, tracked and registered in MLflow.

- :mod:`~pipelines.train.config` (driver): :class:`TrainConfig`, the options in;
- :mod:`~pipelines.train.driver` (driver): :func:`run_train`, checks, the fit, registration;
- :mod:`~pipelines.train.records` (driver): :class:`TrainResult`, the run record, the
  marker, :func:`run_identity`, :func:`completion` and :func:`discard`;
- :mod:`~pipelines.train.data` (driver; its reads run in Ray Data tasks): the clip datasets;
- :mod:`~pipelines.train.worker` and :mod:`~pipelines.train.collectives` (Ray Train
  workers): the training loop of one rank.
"""

from pipelines.stage import exports

_MODULES = {
    "config": ("TrainConfig", "load_preset"),
    "driver": ("run_train",),
    "records": ("TrainResult", "completion", "discard", "run_identity"),
    "worker": ("StepProbe", "StepRecord"),
}

__getattr__ = exports(__name__, _MODULES)
__all__ = sorted(name for names in _MODULES.values() for name in names)
