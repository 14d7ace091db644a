"""The one module that talks to MLflow: runs, params, metrics, artifacts, the model registry.

Everything goes through an ``mlflow.MlflowClient`` bound to an explicit tracking URI, never
through MLflow's global "fluent" state (``mlflow.set_tracking_uri``, the active run), so that
several runs in one process, in Ray workers, or against several stores do not clash.

- Store: ``resolve_tracking_uri`` picks the store (explicit URI, then ``MLFLOW_TRACKING_URI``,
  then a sqlite file under the working folder); ``check_tracking`` fails fast, in one line,
  on one that cannot be reached, before any work starts.
- Runs: ``start_run`` is a context manager yielding a picklable ``RunHandle``; the run ends
  FINISHED, or FAILED when an exception escapes.
- Models: ``register_checkpoint`` logs a checkpoint directory as an MLflow 3 logged model
  (pyfunc flavour, ``MNADPyfunc``) output by the run, registers it and sets aliases;
  ``resolve_model`` turns a ``models:/``, ``runs:/`` URI or a local folder back into a
  checkpoint directory; ``link_model_version`` records a scoring run's model as its input
  (MLflow 3's native run -> logged-model lineage) plus searchable tags.
- ``run_ui`` opens the MLflow UI on the same store (``mnad ui``).

With a sqlite store, artifacts live beside the database (``<db folder>/artifacts/<experiment>``)
rather than in MLflow's default ``./mlruns`` of whatever the current folder happens to be.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.entities import LoggedModelInput, LoggedModelOutput, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from mnad.checkpoint import CONFIG_FILE, MODEL_FILE, load_checkpoint, load_model
from mnad.config import ModelConfig, Preset
from mnad.streaming import StreamingScorer
from pipelines.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_STORE = "mnad-runs/mlflow.db"
"""The sqlite store, relative to the working folder, used when no tracking URI is given."""

CHECKPOINT_ARTIFACT = "checkpoint"
"""Key of the checkpoint directory among the pyfunc model's artifacts."""

MODEL_NAME_IN_RUN = "model"
"""Name of the logged model that ``register_checkpoint`` creates for a run."""

PREDICT_COLUMNS = ("psnr", "feature_distance", "point_score")
"""Columns of ``MNADPyfunc.predict``'s output, one row per clip."""

LATEST = "latest"
"""The alias MLflow keeps itself: ``models:/<name>@latest`` is always the newest version."""

TAG_MODEL_URI = "mnad.model_uri"
TAG_MODEL_VERSION = "mnad.model_version"
TAG_MODEL_NAME = "mnad.model_name"
TAG_MODEL_ID = "mnad.model_id"

HTTP_TIMEOUT_S = 5.0
"""How long ``check_tracking`` waits for an HTTP tracking server to answer."""

_PREDICT_CHUNK = 64  # clips per forward pass in MNADPyfunc.predict


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


def resolve_tracking_uri(uri: str | None, workdir: str | os.PathLike[str] = ".") -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else the default store.

    The default is ``sqlite:///<absolute workdir>/mnad-runs/mlflow.db``; its folder is created.
    """
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    db = Path(workdir).expanduser().resolve() / DEFAULT_STORE
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def check_tracking(uri: str, timeout_s: float = HTTP_TIMEOUT_S) -> None:
    """Raise a one-line ``UserError`` when the store at ``uri`` cannot be used.

    - ``http(s)://``: the server must answer an MLflow API request within ``timeout_s``
      seconds (no retries: MLflow's own client would retry for minutes).
    - ``sqlite:///``: the database's folder must be creatable, and the store must open.
    - a plain folder or ``file:`` URI: refused, as MLflow 3 does, with the sqlite equivalent.
    - anything else (a database server, Databricks): opened with a one-request search.
    """
    scheme = uri.split(":", 1)[0].lower() if "://" in uri else ""
    if uri.startswith("databricks"):
        scheme = "databricks"  # `databricks` and `databricks://profile`
    if scheme in ("http", "https"):
        _check_http(uri, timeout_s)
        return
    if scheme in ("", "file"):
        folder = uri[len("file://") :] if scheme == "file" else uri
        raise UserError(
            f"tracking store {uri}: MLflow 3 no longer accepts a plain folder store; use a "
            f"sqlite file, e.g. --tracking-uri sqlite:///{Path(folder).resolve()}/mlflow.db"
        )
    if scheme == "sqlite":
        _ensure_sqlite_folder(uri)
    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure to open is the store's fault
        raise UserError(f"tracking store {uri} cannot be opened: {_first_line(err)}") from None


def _check_http(uri: str, timeout_s: float) -> None:
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # it answers; credentials are MLflow's business (MLFLOW_TRACKING_TOKEN ...)
        raise UserError(
            f"tracking server {uri} answered HTTP {err.code} to an MLflow API request: "
            "is it an MLflow tracking server?"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(
            f"tracking server {uri} cannot be reached within {timeout_s:g} s: {reason}"
        ) from None


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for an in-memory database."""
    rest = uri[len("sqlite://") :].split("?", 1)[0]
    if rest in ("", "/", "/:memory:"):
        return None
    return Path(rest[1:] if rest.startswith("/") else rest).expanduser()


def _ensure_sqlite_folder(uri: str) -> None:
    db = _sqlite_path(uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"tracking store {uri}: cannot create the folder {db.parent}: {err.strerror or err}"
        ) from None
    if not os.access(db.parent, os.W_OK):
        raise UserError(f"tracking store {uri}: the folder {db.parent} is not writable")


def _experiment_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Beside the database for a sqlite store; the store's own default otherwise."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    db = _sqlite_path(tracking_uri)
    if db is None:
        return None
    slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in experiment) or "default"
    return (db.resolve().parent / "artifacts" / slug).as_uri()


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunHandle:
    """An MLflow run, as the stages use it. Picklable: send it to a Ray worker as is."""

    run_id: str
    experiment_id: str
    tracking_uri: str

    @cached_property
    def client(self) -> mlflow.MlflowClient:
        """A client bound to this run's store (made on first use, in each process)."""
        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("client", None)  # a client holds database engines: not for pickling
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log each metric's value at ``step`` (e.g. the epoch), in as few requests as allowed."""
        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, int(step)) for key, value in metrics.items()]
        for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy one local file into the run's artifacts (under ``artifact_path``)."""
        self.client.log_artifact(self.run_id, os.fspath(path), artifact_path)

    def log_artifacts(
        self, directory: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Copy a local folder's contents into the run's artifacts (under ``artifact_path``)."""
        self.client.log_artifacts(self.run_id, os.fspath(directory), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run; values are stringified and cut to MLflow's limit."""
        entries = [RunTag(k, _clip(str(v), MAX_TAG_VAL_LENGTH, k)) for k, v in tags.items()]
        for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=chunk)


@contextmanager
def start_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> Iterator[RunHandle]:
    """Start a run (or resume ``run_id``), log ``params`` flattened, and end it on exit.

    The experiment is created when missing. Params are flattened (``{"model": {"alpha": 0.6}}``
    -> ``model.alpha``), stringified and logged in batches. A resumed run keeps the params it
    has; a param whose value changed is recorded in the tag ``mnad.resume_changed_params``
    (MLflow params cannot change). The run ends FINISHED, or FAILED when an exception escapes
    (KILLED for Ctrl-C); the exception propagates.
    """
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = _experiment_id(client, tracking_uri, experiment)
    flat = flatten_params(params)
    if run_id is None:
        run = client.create_run(
            experiment_id, tags=_run_context_tags(tags), run_name=run_name or None
        )
        handle = _attach(RunHandle(run.info.run_id, experiment_id, tracking_uri), client)
    else:
        handle = _resume_run(client, tracking_uri, experiment_id, run_id)
    try:
        if run_id is None:
            _log_params(client, handle.run_id, flat)
        else:
            _log_resumed_params(handle, flat)
            handle.set_tags(tags or {})
        yield handle
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        _terminate_quietly(client, handle.run_id, status)
        raise
    client.set_terminated(handle.run_id, "FINISHED")


def flatten_params(params: Mapping[str, Any] | Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings (and dataclasses) as dotted keys with string values.

    ``{"model": {"alpha": 0.6}, "epochs": 3}`` -> ``{"model.alpha": "0.6", "epochs": "3"}``.
    Values longer than MLflow's limit (6000 characters) are cut, with a warning.
    """
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = _clip(str(value), MAX_PARAM_VAL_LENGTH, name)
    return flat


def _attach(handle: RunHandle, client: mlflow.MlflowClient) -> RunHandle:
    """Give ``handle`` the client already open on its store, rather than open another."""
    handle.__dict__["client"] = client  # what cached_property would store
    return handle


def _experiment_id(client: mlflow.MlflowClient, tracking_uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise UserError(
                f"experiment {name!r} is deleted in {tracking_uri}: restore it in the MLflow UI "
                "or choose another --experiment"
            )
        return found.experiment_id
    location = _experiment_artifact_location(tracking_uri, name)
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # another process created it between our look-up and create
        return client.get_experiment_by_name(name).experiment_id


def _run_context_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """MLflow's own context tags (user, source, git commit) plus ``tags``."""
    from mlflow.tracking.context.registry import resolve_tags

    return {k: str(v) for k, v in resolve_tags(dict(tags or {})).items()}


def _log_params(client: mlflow.MlflowClient, run_id: str, flat: Mapping[str, str]) -> None:
    entries = [Param(k, v) for k, v in flat.items()]
    for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk)


def _resume_run(
    client: mlflow.MlflowClient, tracking_uri: str, experiment_id: str, run_id: str
) -> RunHandle:
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"cannot resume run {run_id}: no such run in {tracking_uri}") from None
    if run.info.experiment_id != experiment_id:
        raise UserError(
            f"cannot resume run {run_id}: it belongs to experiment {run.info.experiment_id}, "
            f"not {experiment_id}"
        )
    client.update_run(run_id, status="RUNNING")
    return _attach(RunHandle(run_id, experiment_id, tracking_uri), client)


def _log_resumed_params(handle: RunHandle, flat: Mapping[str, str]) -> None:
    """Log the params a resumed run lacks; record, in a tag, those whose value changed."""
    old = handle.client.get_run(handle.run_id).data.params
    _log_params(handle.client, handle.run_id, {k: v for k, v in flat.items() if k not in old})
    changed = {k: v for k, v in flat.items() if k in old and old[k] != v}
    if changed:
        log.warning(
            "run %s resumed with changed params (kept the old values): %s", handle.run_id, changed
        )
        handle.set_tags({"mnad.resume_changed_params": json.dumps(changed, sort_keys=True)})


def _terminate_quietly(client: mlflow.MlflowClient, run_id: str, status: str) -> None:
    """Mark the run ended without hiding the exception that is already on its way out."""
    try:
        client.set_terminated(run_id, status)
    except Exception:  # noqa: BLE001
        log.exception("could not mark run %s as %s", run_id, status)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _clip(value: str, limit: int, key: str) -> str:
    if len(value) <= limit:
        return value
    log.warning("value of %r cut to MLflow's limit of %d characters", key, limit)
    return value[: limit - 3] + "..."


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --------------------------------------------------------------------------------------------
# The pyfunc model
# --------------------------------------------------------------------------------------------


class MNADPyfunc(mlflow.pyfunc.PythonModel):
    """A checkpoint as an MLflow pyfunc model: clips in, per-clip scores out.

    Input: float32 array (n, T*C, H, W) on [-1, 1]: each clip's input frames and then its
    target frame stacked on the channel axis, as in training (T = input_frames + 1 for the
    pred task; T = 1 for recon, the frame being both input and target). The signature fixes
    dtype and shape: MLflow rejects float64 or another frame size before ``predict``.
    Output: a DataFrame with one row per clip: ``psnr`` (Eq. 11), ``feature_distance``
    (Eq. 12) and ``point_score`` (the update gate of Sec. 3.4). Clips are scored
    independently against the checkpoint's memory (no test-time update): per-video min-max
    and the fused score (Eq. 13) need whole videos, which ``mnad score`` does.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the checkpoint among the model's artifacts (on a GPU when there is one)."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, preset = load_model(context.artifacts[CHECKPOINT_ARTIFACT], device=device)
        self.model = model
        self.config = preset.model
        self.device = torch.device(device)

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Score each clip of ``model_input``; see the class docstring for the layout."""
        clips = np.asarray(model_input, dtype=np.float32)
        split = self.config.channels * self.config.input_frames
        expected = self.config.channels * self.config.clip_length
        if clips.ndim != 4 or clips.shape[1] != expected:
            raise ValueError(
                f"clips must be (n, {expected}, H, W): input frames then the target frame "
                f"stacked on the channel axis; got {clips.shape}"
            )
        scorer = StreamingScorer(self.model, update=False)
        parts = []
        for start in range(0, clips.shape[0], _PREDICT_CHUNK):
            batch = torch.from_numpy(clips[start : start + _PREDICT_CHUNK]).to(self.device)
            targets = batch if self.config.task == "recon" else batch[:, split:]  # (b, C, H, W)
            scores = scorer.score(batch[:, :split], targets)
            parts.append(pd.DataFrame({name: getattr(scores, name) for name in PREDICT_COLUMNS}))
        if not parts:
            return pd.DataFrame({name: np.zeros(0) for name in PREDICT_COLUMNS})
        return pd.concat(parts, ignore_index=True)


def model_signature(config: ModelConfig) -> ModelSignature:
    """The pyfunc signature of a model with this config: clips in, per-clip scores out."""
    channels = config.channels * config.clip_length
    inputs = Schema(
        # unnamed: a named tensor would reach predict as a dict {name: array}
        [TensorSpec(np.dtype(np.float32), (-1, channels, config.height, config.width))]
    )
    outputs = Schema([ColSpec("double", name) for name in PREDICT_COLUMNS])
    return ModelSignature(inputs=inputs, outputs=outputs)


_MODEL_CODE = """\
# An mnad checkpoint as an MLflow pyfunc model ("models from code": nothing is pickled).
from mlflow.models import set_model

from pipelines.tracking import MNADPyfunc

set_model(MNADPyfunc())
"""


def _pip_requirements() -> list[str]:
    """What the model needs, pinned to this environment, so that MLflow infers nothing."""
    reqs = []
    for dist in ("mnad", "mlflow", "torch", "numpy", "pandas"):
        try:
            reqs.append(f"{dist}=={importlib_metadata.version(dist)}")
        except importlib_metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered model version."""

    name: str
    version: str
    uri: str  # models:/<name>/<version>
    model_id: str | None = None  # the MLflow 3 logged model behind it


def register_checkpoint(
    run: RunHandle,
    checkpoint_dir: str | os.PathLike[str],
    model_name: str,
    aliases: tuple[str, ...] = ("latest",),
    input_example: np.ndarray | None = None,
    step: int = 0,
) -> ModelVersionInfo:
    """Log a checkpoint as a pyfunc model output by ``run``, register it, set ``aliases``.

    ``latest`` needs no setting: MLflow reserves it for the newest version, so the new
    version answers to ``models:/<name>@latest`` anyway; other aliases (``champion``) move
    to the new version.

    Only the inference part of the checkpoint (``config.json``, ``model.pt``) goes into the
    model; optimizer state stays with the run's own checkpoint artifacts. The model is an
    MLflow 3 logged model (``models:/<model_id>``) linked to the run as its output at
    ``step``; the new version of ``model_name`` points at it. Loading it back needs only
    ``mnad`` importable: ``mlflow.pyfunc.load_model("models:/<name>@latest")``.
    """
    client = run.client
    preset = load_checkpoint(checkpoint_dir).preset  # fails early, in one line, on a bad dir
    logged = client.create_logged_model(
        run.experiment_id,
        name=MODEL_NAME_IN_RUN,
        source_run_id=run.run_id,
        params=flatten_params(preset.to_dict()),
        model_type="mnad",
    )
    try:
        with tempfile.TemporaryDirectory(prefix="mnad-model-") as tmp:
            local = _save_pyfunc(Path(tmp), checkpoint_dir, preset, run, logged, input_example)
            client.log_model_artifacts(logged.model_id, os.fspath(local))
        client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=int(step))])
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    version = _create_version(client, model_name, logged, run.run_id)
    for alias in aliases:
        if alias.lower() != LATEST:
            client.set_registered_model_alias(model_name, alias, version)
    return ModelVersionInfo(model_name, version, f"models:/{model_name}/{version}", logged.model_id)


def _save_pyfunc(
    tmp: Path,
    checkpoint_dir: str | os.PathLike[str],
    preset: Preset,
    run: RunHandle,
    logged: Any,
    input_example: np.ndarray | None,
) -> Path:
    """Write the pyfunc model folder under ``tmp``; returns it."""
    weights = tmp / CHECKPOINT_ARTIFACT
    weights.mkdir()
    for name in (CONFIG_FILE, MODEL_FILE):
        shutil.copy2(Path(checkpoint_dir) / name, weights / name)
    code = tmp / "mnad_pyfunc.py"
    code.write_text(_MODEL_CODE)
    local = tmp / "model"
    with warnings.catch_warnings():
        # the checkpoint signature fixes the input; an example would be MBs of JSON
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        mlflow.pyfunc.save_model(
            path=os.fspath(local),
            python_model=os.fspath(code),
            artifacts={CHECKPOINT_ARTIFACT: os.fspath(weights)},
            signature=model_signature(preset.model),
            input_example=input_example,
            pip_requirements=_pip_requirements(),
            mlflow_model=Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=run.run_id,
                model_id=logged.model_id,
            ),
            metadata={"mnad.preset": preset.name},
        )
    return local


def _create_version(client: mlflow.MlflowClient, name: str, logged: Any, run_id: str) -> str:
    """A new version of ``name`` for a logged model, linked both ways.

    The source is the logged model's storage location rather than ``models:/<model_id>``:
    MLflow's database registry resolves the latter through the process-global tracking URI
    (a TODO in ``SqlAlchemyStore.create_model_version``), which this module never sets. The
    links MLflow itself keeps are written here instead: the version's run, the logged
    model's ``mlflow.modelVersions`` tag, and the version's tag ``mnad.model_id``.
    """
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(
        name,
        source=logged.artifact_location,
        run_id=run_id,
        tags={TAG_MODEL_ID: logged.model_id},
        model_id=logged.model_id,
    )
    version = str(mv.version)
    current = client.get_logged_model(logged.model_id).tags.get(MLFLOW_MODEL_VERSIONS)
    versions = [*json.loads(current or "[]"), {"name": name, "version": version}]
    client.set_logged_model_tags(logged.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(versions)})
    return version


def _model_id_of(mv: Any) -> str | None:
    """The logged model behind a model version, however the registry recorded it."""
    source = mv.source or ""
    from_source = source[len("models:/") :] if source.startswith("models:/m-") else None
    return getattr(mv, "model_id", None) or mv.tags.get(TAG_MODEL_ID) or from_source


@dataclass(frozen=True)
class ResolvedModel:
    """Where a MODEL argument's checkpoint is, and which registered version it was."""

    checkpoint_dir: str
    name: str | None
    version: str | None
    uri: str
    model_id: str | None = None


def resolve_model(
    model: str, tracking_uri: str, dst_path: str | os.PathLike[str] | None = None
) -> ResolvedModel:
    """The checkpoint folder behind MODEL, which may be any of:

    ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/<model_id>``,
    ``runs:/<run_id>/<path>``, a local checkpoint folder (``config.json`` + ``model.pt``),
    or a local pyfunc model folder (one with an ``MLmodel`` file).

    Registry and run URIs are downloaded (to ``dst_path``, else a temporary folder; with a
    local sqlite store nothing is copied). One that does not resolve is a one-line
    ``UserError``.
    """
    if urllib.parse.urlparse(model).scheme in ("", "file"):
        return _resolve_local(model)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name, version, model_id, location = None, None, None, model
    if model.startswith("models:/"):
        # resolved here: MLflow's models:/ download asks the process-global registry
        name, version, model_id = _registry_version(client, model)
        location = (
            client.get_model_version_download_uri(name, version)
            if name is not None
            else client.get_logged_model(model_id).artifact_location
        )
    elif model.startswith("runs:/"):
        # likewise: MLflow's runs:/ fallback to a logged model asks the global store
        location, model_id = _run_location(client, model)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=location,
            dst_path=None if dst_path is None else os.fspath(dst_path),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
    except MlflowException as err:
        raise UserError(
            f"{model}: cannot be resolved in {tracking_uri}: {_first_line(err)}"
        ) from None
    checkpoint = _checkpoint_in_model_dir(Path(local), model)
    return ResolvedModel(os.fspath(checkpoint), name, version, model, model_id)


def _resolve_local(model: str) -> ResolvedModel:
    path = Path(model[len("file://") :] if model.startswith("file://") else model).expanduser()
    if not path.is_dir():
        raise UserError(
            f"{model}: no such model: give models:/<name>@<alias>, models:/<name>/<version>, "
            "runs:/<run_id>/model or a checkpoint folder"
        )
    if (path / "MLmodel").is_file():
        checkpoint = _checkpoint_in_model_dir(path, model)
    else:
        load_checkpoint(path)  # a one-line UserError for anything but a checkpoint folder
        checkpoint = path
    return ResolvedModel(os.fspath(checkpoint.resolve()), None, None, model)


def _registry_version(
    client: mlflow.MlflowClient, uri: str
) -> tuple[str | None, str | None, str | None]:
    """(name, version, model_id) of a ``models:/`` URI; a logged-model id has no name.

    Every form MLflow knows: ``/<version>``, ``@<alias>``, ``/latest``, ``/<stage>``,
    ``models:/<model_id>``.
    """
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    try:
        found = get_model_name_and_version(client, uri)
        if len(found) == 1:
            return None, None, client.get_logged_model(found[0]).model_id
        mv = client.get_model_version(*found)
    except MlflowException:
        raise UserError(f"{uri}: no such registered model, version or alias") from None
    return mv.name, str(mv.version), _model_id_of(mv)


def _run_location(client: mlflow.MlflowClient, uri: str) -> tuple[str, str | None]:
    """Where ``runs:/<run_id>/<path>`` lies: the run's logged model ``path``, else its artifact.

    MLflow 3 logs models apart from the run's artifacts; ``runs:/<id>/model`` then means the
    logged model named ``model`` that the run output (the last one, by step). Otherwise the
    path inside the run's artifacts (a checkpoint folder logged with ``log_artifacts``).
    """
    run_id, _, path = uri[len("runs:/") :].strip("/").partition("/")
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"{uri}: no such run") from None
    outputs = sorted((run.outputs.model_outputs if run.outputs else []), key=lambda o: o.step)
    for output in reversed(outputs):
        logged = client.get_logged_model(output.model_id)
        if logged.name == path:
            return logged.artifact_location, logged.model_id
    return f"{run.info.artifact_uri.rstrip('/')}/{path}", None


def _checkpoint_in_model_dir(model_dir: Path, uri: str) -> Path:
    """The checkpoint folder among a downloaded pyfunc model's artifacts."""
    if (model_dir / CONFIG_FILE).is_file() and (model_dir / MODEL_FILE).is_file():
        return model_dir  # a runs:/ URI pointing at a checkpoint folder itself
    if not (model_dir / "MLmodel").is_file():
        raise UserError(f"{uri}: neither an MLflow model nor a checkpoint folder")
    flavor = Model.load(os.fspath(model_dir)).flavors.get("python_function", {})
    entry = (flavor.get("artifacts") or {}).get(CHECKPOINT_ARTIFACT)
    if not entry:
        raise UserError(f"{uri}: an MLflow model, but not one of `mnad` (no checkpoint artifact)")
    return model_dir / entry["path"]


def link_model_version(run: RunHandle, name: str, version: str) -> None:
    """Record that ``run`` used version ``version`` of registered model ``name``.

    MLflow 3's native lineage: the version's logged model becomes a model input of the run
    (the run then shows under the model, and the model under the run's inputs). Tags
    ``mnad.model_name``, ``mnad.model_version`` and ``mnad.model_uri`` make runs searchable
    by version (``tags.`mnad.model_version` = '3'``), also for versions from before MLflow 3.
    """
    mv = run.client.get_model_version(name, str(version))
    model_id = _model_id_of(mv)
    if model_id:
        run.client.log_inputs(run.run_id, models=[LoggedModelInput(model_id)])
    run.set_tags(
        {
            TAG_MODEL_NAME: name,
            TAG_MODEL_VERSION: str(version),
            TAG_MODEL_URI: f"models:/{name}/{version}",
        }
    )


# --------------------------------------------------------------------------------------------
# `mnad ui`
# --------------------------------------------------------------------------------------------


@dataclass
class UiConfig:
    """Options of `mnad ui`."""

    tracking_uri: str | None = field(
        default=None,
        metadata={
            "help": "MLflow store to open (default: $MLFLOW_TRACKING_URI, else "
            f"sqlite:///WORKDIR/{DEFAULT_STORE})"
        },
    )
    host: str = field(
        default="127.0.0.1",
        metadata={"help": "address to listen on (0.0.0.0 exposes the UI to the network)"},
    )
    port: int = field(default=5000, metadata={"help": "port to listen on"})
    workers: int = field(
        default=1, metadata={"help": "server processes (one serves a person; each takes seconds)"}
    )
    workdir: str = field(
        default=".", metadata={"help": "working folder whose mnad-runs/ holds the default store"}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise UserError(f"port must be an integer in 1..65535, not {self.port!r}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise UserError(f"workers must be a positive integer, not {self.workers!r}")


def ui_command(config: UiConfig) -> list[str]:
    """The `mlflow ui` command line that ``run_ui`` runs."""
    uri = resolve_tracking_uri(config.tracking_uri, config.workdir)
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        config.host,
        "--port",
        str(config.port),
        "--workers",
        str(config.workers),
    ]


def run_ui(config: UiConfig) -> int:
    """Serve the MLflow UI on the store until Ctrl-C; returns mlflow's exit status."""
    command = ui_command(config)
    uri = command[command.index("--backend-store-uri") + 1]
    if uri.startswith(("http://", "https://")):
        raise UserError(f"{uri} is a tracking server with its own UI: open it in a browser")
    check_tracking(uri)
    print(f"MLflow UI on {uri}: http://{config.host}:{config.port}  (Ctrl-C stops it)")
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0
