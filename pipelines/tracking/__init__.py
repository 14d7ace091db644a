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
  ``link_model_version``; ``version_tags``, ``set_version_tags``, ``alias_version``,
  ``set_alias``.
- :mod:`~pipelines.tracking.pyfunc` (wherever MLflow loads the model): ``MNADPyfunc``.
- :mod:`~pipelines.tracking.ui` (driver): ``mnad ui``.
"""

from pipelines.stage import exports

_MODULES = {
    "pyfunc": ("CHECKPOINT_ARTIFACT", "PREDICT_COLUMNS", "MNADPyfunc", "model_signature"),
    "registry": (
        "LATEST", "MODEL_NAME_IN_RUN", "TAG_MODEL_ID", "TAG_MODEL_NAME", "TAG_MODEL_URI",
        "TAG_MODEL_VERSION", "ModelRef", "ModelVersionInfo", "fetch_model", "find_model",
        "link_model_version", "register_checkpoint", "alias_version", "set_alias",
        "set_version_tags", "version_tags",
    ),
    "runs": ("RunHandle", "flatten_params", "start_run"),
    "store": ("DEFAULT_STORE", "HTTP_TIMEOUT_S", "check_tracking", "resolve_tracking_uri"),
    "ui": ("UiConfig", "run_ui", "ui_command"),
}

__getattr__ = exports(__name__, _MODULES)
__all__ = sorted(name for names in _MODULES.values() for name in names)
