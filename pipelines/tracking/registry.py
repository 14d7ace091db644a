"""The model registry: register a checkpoint, find a model's version, fetch its checkpoint.

Runs on the driver. ``register_checkpoint`` logs a checkpoint folder as an MLflow 3 logged
model (pyfunc flavour, :mod:`pipelines.tracking.pyfunc`) output by the training run,
registers it and sets aliases. Resolution is two steps, so that a job looks a model up
once and downloads it once: ``find_model`` turns a MODEL argument (``models:/``,
``runs:/``, a local folder) into a :class:`ModelRef` (registry and run look-ups only,
nothing copied), ``fetch_model`` downloads the ref's checkpoint folder.
``link_model_version`` records a scoring run's model as its input (MLflow 3's native run ->
logged-model lineage) plus searchable tags. ``version_tags``, ``set_version_tags``,
``alias_version`` and ``set_alias`` read and write a version's tags and a model's aliases
(what `mnad evaluate` and `mnad promote` record and move).
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import LoggedModelInput, LoggedModelOutput
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from mnad.checkpoint import load_checkpoint
from pipelines.errors import UserError
from pipelines.tracking import store
from pipelines.tracking.pyfunc import checkpoint_in_model_dir, save_pyfunc
from pipelines.tracking.runs import RunHandle, flatten_params

MODEL_NAME_IN_RUN = "model"
"""Name of the logged model that ``register_checkpoint`` creates for a run."""

LATEST = "latest"
"""The alias MLflow keeps itself: ``models:/<name>@latest`` is always the newest version."""

TAG_MODEL_URI = "mnad.model_uri"
TAG_MODEL_VERSION = "mnad.model_version"
TAG_MODEL_NAME = "mnad.model_name"
TAG_MODEL_ID = "mnad.model_id"


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered model version."""

    name: str
    version: str
    uri: str  # models:/<name>/<version>
    model_id: str | None = None  # the MLflow 3 logged model behind it


@dataclass(frozen=True)
class ModelRef:
    """What a MODEL argument names, found but not downloaded (see ``find_model``).

    ``uri``: the argument as given; ``name`` and ``version``: the registered version it
    resolved to (None for a run's artifact, a logged-model id or a local folder);
    ``model_id``: the MLflow 3 logged model, when there is one; ``location``: the artifact
    location ``fetch_model`` downloads, or the checkpoint folder of a local path.
    """

    uri: str
    name: str | None
    version: str | None
    model_id: str | None
    location: str

    @property
    def pinned(self) -> str:
        """``models:/<name>/<version>`` for a registered version (an alias moves, a version
        does not), else ``uri``."""
        if self.name is not None and self.version is not None:
            return f"models:/{self.name}/{self.version}"
        return self.uri

    @property
    def local(self) -> bool:
        """Whether the model is a folder on this machine (nothing to download)."""
        return _is_local(self.uri)


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

    Only the inference part of the checkpoint (``config.json``, ``model.pt``, the
    calibration) goes into the model; optimizer state stays with the run's own checkpoint
    artifacts. The model is an MLflow 3 logged model (``models:/<model_id>``) linked to the
    run as its output at ``step``; the new version of ``model_name`` points at it. It
    carries its code (:func:`pipelines.tracking.pyfunc.save_pyfunc`), so loading it back
    needs only its pinned requirements installed:
    ``mlflow.pyfunc.load_model("models:/<name>@latest")`` or ``mlflow models serve``.
    ``input_example``: the example stored with the model (default: T black frames).
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
    ids = Model(
        artifact_path=logged.artifact_location,
        model_uuid=logged.model_id,
        run_id=run.run_id,
        model_id=logged.model_id,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="mnad-model-") as tmp:
            local = save_pyfunc(Path(tmp), checkpoint_dir, preset, ids, input_example)
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


def _create_version(client: mlflow.MlflowClient, name: str, logged: Any, run_id: str) -> str:
    """A new version of ``name`` for a logged model, linked both ways.

    The source is the logged model's storage location rather than ``models:/<model_id>``:
    MLflow's database registry resolves the latter through the process-global tracking URI
    (a TODO in ``SqlAlchemyStore.create_model_version``), which this package never sets. The
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


# --------------------------------------------------------------------------------------------
# Resolution: find, then fetch
# --------------------------------------------------------------------------------------------


def find_model(model: str, tracking_uri: str) -> ModelRef:
    """What MODEL names, without downloading it. MODEL may be any of:

    ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/<model_id>``,
    ``runs:/<run_id>/<path>``, a local checkpoint folder (``config.json`` + ``model.pt``),
    or a local pyfunc model folder (one with an ``MLmodel`` file). Registry and run URIs
    are looked up in the store at ``tracking_uri``; a local folder is checked in place.
    One that does not resolve is a one-line ``UserError`` starting with MODEL.
    """
    if _is_local(model):
        return _find_local(model)
    client = store.client(tracking_uri)
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
    return ModelRef(model, name, version, model_id, location)


def fetch_model(ref: ModelRef, tracking_uri: str, dst: str | os.PathLike[str] | None = None) -> str:
    """The local checkpoint folder of ``ref``: downloaded (to ``dst``, else a temporary
    folder; with a local sqlite store nothing is copied); a local ref's own folder.

    A download that fails is a one-line ``UserError`` starting with the ref's URI.
    """
    if ref.local:
        return ref.location
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=ref.location,
            dst_path=None if dst is None else os.fspath(dst),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
    except MlflowException as err:
        raise UserError(
            f"{ref.uri}: cannot be resolved in {tracking_uri}: {store.first_line(err)}"
        ) from None
    return os.fspath(checkpoint_in_model_dir(Path(local), ref.uri))


def _is_local(model: str) -> bool:
    return urllib.parse.urlparse(model).scheme in ("", "file")


def _find_local(model: str) -> ModelRef:
    path = Path(model[len("file://") :] if model.startswith("file://") else model).expanduser()
    if not path.is_dir():
        raise UserError(
            f"{model}: no such model: give models:/<name>@<alias>, models:/<name>/<version>, "
            "runs:/<run_id>/model or a checkpoint folder"
        )
    if (path / "MLmodel").is_file():
        checkpoint = checkpoint_in_model_dir(path, model)
    else:
        load_checkpoint(path)  # a one-line UserError for anything but a checkpoint folder
        checkpoint = path
    return ModelRef(model, None, None, None, os.fspath(checkpoint.resolve()))


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
# A version's tags and a model's aliases
# --------------------------------------------------------------------------------------------


def version_tags(tracking_uri: str, name: str, version: str) -> dict[str, str]:
    """The tags of version ``version`` of registered model ``name``."""
    return dict(store.client(tracking_uri).get_model_version(name, str(version)).tags)


def set_version_tags(tracking_uri: str, name: str, version: str, tags: Mapping[str, Any]) -> None:
    """Set ``tags`` (values stringified) on version ``version`` of ``name``."""
    client = store.client(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def alias_version(tracking_uri: str, name: str, alias: str) -> str | None:
    """The version of ``name`` that holds ``alias``, or None when none does."""
    try:
        mv = store.client(tracking_uri).get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return str(mv.version)


def set_alias(tracking_uri: str, name: str, alias: str, version: str) -> None:
    """Point ``alias`` of ``name`` at ``version`` (from wherever it pointed)."""
    store.client(tracking_uri).set_registered_model_alias(name, alias, str(version))


__all__ = [
    "LATEST",
    "MODEL_NAME_IN_RUN",
    "TAG_MODEL_ID",
    "TAG_MODEL_NAME",
    "TAG_MODEL_URI",
    "TAG_MODEL_VERSION",
    "ModelRef",
    "ModelVersionInfo",
    "alias_version",
    "fetch_model",
    "find_model",
    "link_model_version",
    "register_checkpoint",
    "set_alias",
    "set_version_tags",
    "version_tags",
]
