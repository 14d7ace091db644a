"""MLflow runs: start (or resume) one, log params flattened, metrics, tags and artifacts.

``start_run`` runs on the driver of a stage; the ``RunHandle`` it yields is picklable and
travels to Ray workers (a Ray Train rank logs its epoch metrics through it), each process
opening its own client. Everything goes through an ``mlflow.MlflowClient`` bound to an
explicit tracking URI, never through MLflow's global "fluent" state
(``mlflow.set_tracking_uri``, the active run), so that several runs in one process, in Ray
workers, or against several stores do not clash.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from pipelines.errors import UserError
from pipelines.tracking import store

log = logging.getLogger(__name__)

TAG_RESUME_CHANGED = "mnad.resume_changed_params"
"""Tag of a resumed run: the params whose value changed (MLflow params cannot change)."""


@dataclass(frozen=True)
class RunHandle:
    """An MLflow run, as the stages use it. Picklable: send it to a Ray worker as is."""

    run_id: str
    experiment_id: str
    tracking_uri: str

    @cached_property
    def client(self) -> mlflow.MlflowClient:
        """A client bound to this run's store (made on first use, in each process)."""
        return store.client(self.tracking_uri)

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
    client = store.client(tracking_uri)
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


def _log_params(client: mlflow.MlflowClient, run_id: str, flat: Mapping[str, str]) -> None:
    entries = [Param(k, v) for k, v in flat.items()]
    for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk)


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
    location = store.experiment_artifact_location(tracking_uri, name)
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
        handle.set_tags({TAG_RESUME_CHANGED: json.dumps(changed, sort_keys=True)})


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


__all__ = ["TAG_RESUME_CHANGED", "RunHandle", "flatten_params", "start_run"]
