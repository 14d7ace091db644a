"""What a training run leaves under OUTPUT/train/NAME, and what that says (driver).

- the run record ``mnad-train.json`` (:class:`RunRecord`), written when the MLflow run
  starts: how ``--resume`` continues a run whose driver died;
- the marker ``_SUCCESS.json`` (:mod:`pipelines.stage`), written once the model is
  registered: the :class:`TrainResult` and the run's identity (:func:`run_identity`);
- Ray Train's own state and checkpoints beside them.

:func:`completion` reads these alone (the train stage's contract with ``mnad run``);
:func:`discard` deletes the run folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from pipelines import options, storage
from pipelines.data import ingested_rows, read_summary
from pipelines.errors import UserError
from pipelines.stage import Completion, Result, fingerprint, read_marker
from pipelines.train.config import TrainConfig

RUN_RECORD = "mnad-train.json"
"""The file beside Ray Train's state of a run that ``--resume`` reads back."""


@dataclass(frozen=True)
class TrainResult(Result):
    """What a training run produced (the train stage's contract out)."""

    run_id: str  # MLflow run
    experiment_id: str
    tracking_uri: str
    name: str  # Ray Train run name, under OUTPUT/train
    checkpoint: str  # the final checkpoint (mnad.checkpoint format) in Ray Train's storage
    model_name: str
    model_version: str
    model_uri: str  # models:/<name>/<version>
    epochs: list[dict[str, float]]  # per-epoch metrics, the whole run (resumed parts too)
    nodes: tuple[str, ...] = ()  # the Ray nodes the training workers ran on, this run


@dataclass(frozen=True)
class RunRecord:
    """OUTPUT/train/NAME/mnad-train.json: how to continue a run whose driver died."""

    name: str
    run_id: str
    experiment: str
    tracking_uri: str
    config: dict[str, Any]  # the run's option values (options.values)


def runs_folder(config: TrainConfig) -> str:
    """OUTPUT/train, absolute: Ray Train's storage path, one folder per run under it."""
    return storage.join(storage.absolute(config.output), "train")


def run_folder(config: TrainConfig, name: str) -> str:
    return storage.join(runs_folder(config), name)


def write_record(runs: str, record: RunRecord) -> None:
    storage.write_json(storage.join(runs, record.name, RUN_RECORD), dataclasses.asdict(record))


def find_record(runs: str, name: str | None) -> RunRecord:
    """The record of run ``name``, or of the latest run under ``runs`` (UserError if none)."""
    if name is None:
        name = _latest_run(runs)
        if name is None:
            raise UserError(f"--resume: no run to continue under {runs}")
    path = storage.join(runs, name, RUN_RECORD)
    if not storage.is_file(path):
        raise UserError(f"--resume: no run {name!r} under {runs}")
    raw = storage.read_json(path)
    try:
        if raw is None:
            raise TypeError("not a JSON object")
        return RunRecord(**raw)
    except TypeError as err:
        raise UserError(f"--resume: {path} is not a run record ({err})") from None


def _latest_run(runs: str) -> str | None:
    """The run under ``runs`` whose record was written last."""
    found = []
    for run in storage.list_dir(runs):
        if run.type != pafs.FileType.Directory:
            continue
        for entry in storage.list_dir(storage.join(runs, run.base_name)):
            if entry.base_name == RUN_RECORD and entry.type == pafs.FileType.File:
                found.append((entry.mtime, run.base_name))
    return max(found)[1] if found else None


def resumed_config(config: TrainConfig, record: RunRecord) -> TrainConfig:
    """The recorded run's config, with this invocation's resume overrides and hooks."""
    known = options.fields(TrainConfig)
    overrides = options.names(TrainConfig, "resume")
    stored = {k: v for k, v in record.config.items() if k in known and k not in overrides}
    if not storage.is_uri(config.data) and (
        storage.absolute(stored["data"]) != storage.absolute(config.data)
    ):
        raise UserError(f"run {record.name!r} trained on {stored['data']}, not {config.data}")
    current = {k: getattr(config, k) for k in overrides}
    if current["epochs"] is None:
        current["epochs"] = record.config.get("epochs")
    hooks = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.init and f.name not in known
    }
    return TrainConfig(**{**stored, **current, **hooks, "resume": True, "name": record.name})


def training_data_digest(data: str) -> str:
    """A hash of what training reads from DATA: its training videos (content hashes, frame
    counts), the frame shape and the data set (new, changed or re-sized videos change it)."""
    summary = read_summary(data)
    videos = [(r["video_id"], r["content_hash"], r["frames"]) for r in ingested_rows(data, "train")]
    return fingerprint({"dataset": summary.dataset, "shape": summary.shape, "videos": videos})


def run_identity(config: TrainConfig) -> dict[str, Any]:
    """What decides the model a run makes: the resolved preset, the options that change the
    result (not the execution-only ones), the training data and the store it registers in.
    JSON-normal (as read back from a marker). UserError if DATA cannot be read."""
    from pipelines.tracking import resolve_tracking_uri

    execution = options.names(TrainConfig, "execution")
    doc = {k: v for k, v in options.values(config).items() if k not in execution}
    doc["preset"] = config.resolved.to_dict()
    doc["data_digest"] = training_data_digest(config.data)
    doc["tracking_uri"] = resolve_tracking_uri(config.tracking_uri)
    return json.loads(json.dumps(doc, default=str))


def completion(config: TrainConfig) -> Completion:
    """Whether the run ``config.name`` is registered and was made from these inputs; a run
    with a record but no marker (its driver died) is partial: ``--resume`` continues it."""
    if not config.name:
        return Completion.missing("no run name")
    folder = run_folder(config, config.name)
    marker = read_marker(folder)
    if marker is not None:
        try:
            same = marker.get("identity") == run_identity(config)
        except UserError as err:
            return Completion.missing(str(err))
        if not same:
            return Completion.missing(f"run {config.name} was trained on other inputs")
        result = TrainResult.from_json(marker["result"])
        return Completion.done(result, f"run {config.name} registered {result.model_uri}")
    if storage.is_file(storage.join(folder, RUN_RECORD)):
        return Completion.missing(f"run {config.name} was interrupted", partial=True)
    return Completion.missing("no run yet")


def discard(config: TrainConfig) -> None:
    """Delete the run folder OUTPUT/train/NAME (``--force``; a start that left no record)."""
    if config.name:
        storage.delete_tree(run_folder(config, config.name))


__all__ = [
    "RUN_RECORD",
    "RunRecord",
    "TrainResult",
    "completion",
    "discard",
    "find_record",
    "resumed_config",
    "run_folder",
    "run_identity",
    "runs_folder",
    "training_data_digest",
    "write_record",
]
