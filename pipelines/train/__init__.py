"""The train stage: MNAD trained with Ray Train and DDP, tracked and registered in MLflow.

- :mod:`~pipelines.train.config` (driver): :class:`TrainConfig`, the options in;
- :mod:`~pipelines.train.driver` (driver): :func:`run_train`, checks, the fit, registration;
- :mod:`~pipelines.train.records` (driver): :class:`TrainResult`, the run record, the
  marker, :func:`run_identity`, :func:`completion` and :func:`discard`;
- :mod:`~pipelines.train.data` (driver; its reads run in Ray Data tasks): the clip datasets;
- :mod:`~pipelines.train.worker` and :mod:`~pipelines.train.collectives` (Ray Train
  workers): the training loop of one rank.
"""

from pipelines.train.config import TrainConfig, load_preset
from pipelines.train.driver import run_train
from pipelines.train.records import TrainResult, completion, discard, run_identity
from pipelines.train.worker import StepProbe, StepRecord

__all__ = [
    "StepProbe",
    "StepRecord",
    "TrainConfig",
    "TrainResult",
    "completion",
    "discard",
    "load_preset",
    "run_identity",
    "run_train",
]
