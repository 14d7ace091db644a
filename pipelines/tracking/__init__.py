"""The one package that talks to MLflow: the store, runs, the model registry, the pyfunc
model and the UI, a module each.

Everything goes through an ``mlflow.MlflowClient`` bound to an explicit tracking URI, never
through MLflow's global "fluent" state, so that several runs in one process, in Ray
workers, or against several stores do not clash.

- :mod:`~pipelines.tracking.store` (driver): ``resolve_tracking_uri``, the one policy that
  picks the store; ``check_tracking``, which fails fast, in one line, on one that cannot be
  reached.
- :mod:`~pipelines.tracking.runs` (driver; the handle travels to Ray workers):
  ``start_run`` yields a picklable ``RunHandle``; params flattened; resume.
- :mod:`~pipelines.tracking.registry` (driver): ``register_checkpoint``;
  ``find_model`` (which version, no download) and ``fetch_model`` (the download);
  ``link_model_version``.
- :mod:`~pipelines.tracking.pyfunc` (wherever MLflow loads the model): ``MNADPyfunc``.
- :mod:`~pipelines.tracking.ui` (driver): ``mnad ui``.
"""

from pipelines.tracking.pyfunc import (
    CHECKPOINT_ARTIFACT,
    PREDICT_COLUMNS,
    MNADPyfunc,
    model_signature,
)
from pipelines.tracking.registry import (
    LATEST,
    MODEL_NAME_IN_RUN,
    TAG_MODEL_ID,
    TAG_MODEL_NAME,
    TAG_MODEL_URI,
    TAG_MODEL_VERSION,
    ModelRef,
    ModelVersionInfo,
    fetch_model,
    find_model,
    link_model_version,
    register_checkpoint,
)
from pipelines.tracking.runs import RunHandle, flatten_params, start_run
from pipelines.tracking.store import (
    DEFAULT_STORE,
    HTTP_TIMEOUT_S,
    check_tracking,
    resolve_tracking_uri,
)
from pipelines.tracking.ui import UiConfig, run_ui, ui_command

__all__ = [
    "CHECKPOINT_ARTIFACT",
    "DEFAULT_STORE",
    "HTTP_TIMEOUT_S",
    "LATEST",
    "MODEL_NAME_IN_RUN",
    "PREDICT_COLUMNS",
    "TAG_MODEL_ID",
    "TAG_MODEL_NAME",
    "TAG_MODEL_URI",
    "TAG_MODEL_VERSION",
    "MNADPyfunc",
    "ModelRef",
    "ModelVersionInfo",
    "RunHandle",
    "UiConfig",
    "check_tracking",
    "fetch_model",
    "find_model",
    "flatten_params",
    "link_model_version",
    "model_signature",
    "register_checkpoint",
    "resolve_tracking_uri",
    "run_ui",
    "start_run",
    "ui_command",
]
