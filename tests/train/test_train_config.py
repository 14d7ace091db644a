"""The train stage's contract without Ray: the config's options and checks, the preset
resolved once, the run record and ``--resume``, the run identity, completion and discard."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from pipelines import options, storage
from pipelines.errors import OptionError, UserError
from pipelines.stage import write_marker
from pipelines.train import (
    TrainConfig,
    TrainResult,
    completion,
    discard,
    load_preset,
    run_identity,
)
from pipelines.train import config as train_config
from pipelines.train.records import (
    RUN_RECORD,
    RunRecord,
    find_record,
    resumed_config,
    run_folder,
    write_record,
)
from tests.conftest import write_tiny_data

RESULT = TrainResult(
    run_id="r1",
    experiment_id="1",
    tracking_uri="sqlite:///x.db",
    name="job-1",
    checkpoint="/runs/train/job-1/checkpoint_000002",
    model_name="mnad-tiny",
    model_version="2",
    model_uri="models:/mnad-tiny/2",
    epochs=[{"epoch": 1.0, "loss": 0.5}, {"epoch": 2.0, "loss": 0.25}],
)


# --- options ---------------------------------------------------------------------------------


def test_option_metadata_says_what_is_execution_and_what_resume_takes() -> None:
    assert options.names(TrainConfig, "execution") == (
        "data", "workers", "cpus_per_worker", "gpus_per_worker", "output", "name", "resume",
        "checkpoint_every", "keep_checkpoints", "max_failures", "quiet", "wait_for_nodes",
        "probe",
    )  # fmt: skip
    assert options.names(TrainConfig, "resume") == (
        "epochs", "workers", "cpus_per_worker", "gpus_per_worker", "checkpoint_every",
        "keep_checkpoints", "max_failures", "quiet", "wait_for_nodes",
    )  # fmt: skip
    assert options.names(TrainConfig, "positional") == ("data",)
    assert options.names(TrainConfig, "path") == ("data", "output")
    assert "probe" not in options.fields(TrainConfig)  # a hook, not an option
    assert "shuffle_buffer" in options.fields(TrainConfig)  # it changes the model


def test_config_refuses_bad_values_in_one_line(tiny_data: Path, tiny_preset: str) -> None:
    cases = [
        ({"preset": "nope"}, "unknown preset 'nope'", "preset"),
        ({"preset": "/no/such.json"}, "does not exist", "preset"),
        ({"batch_size": 5}, "does not split over 2 workers", "batch_size"),
        ({"workers": 0}, "--workers must be", "workers"),
        (
            {"cpus_per_worker": -1.0},
            "--cpus-per-worker and --gpus-per-worker must be >= 0",
            "cpus_per_worker",
        ),
        ({"gpus_per_worker": -1.0}, "--cpus-per-worker and --gpus-per-worker", "gpus_per_worker"),
        ({"val_fraction": 1.0}, "--val-fraction", "val_fraction"),
        ({"lr": -1.0}, "lr must be > 0", "lr"),
        ({"epochs": 0}, "epochs must be a positive integer", "epochs"),
        ({"alias": "latest"}, "reserved by MLflow", "alias"),
        ({"wait_for_nodes": -1.0}, "--wait-for-nodes must be >= 0", "wait_for_nodes"),
        ({"data": ""}, "DATA is empty", "data"),
    ]
    for changes, message, field in cases:
        with pytest.raises(OptionError, match=message) as err:
            TrainConfig(**{"data": str(tiny_data), "preset": tiny_preset, **changes})
        assert isinstance(err.value, UserError)
        assert "\n" not in str(err.value)
        assert err.value.field == field, changes


def test_a_bad_preset_file_names_the_preset_option(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x"}')
    with pytest.raises(OptionError, match=f"preset file {bad}") as err:
        load_preset(str(bad))
    assert err.value.field == "preset"


def test_the_preset_is_resolved_once_per_config(
    tiny_data: Path, tiny_preset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = train_config.load_preset
    monkeypatch.setattr(train_config, "load_preset", lambda p: calls.append(p) or original(p))
    config = TrainConfig(str(tiny_data), preset=tiny_preset, epochs=7, lr=1e-3, workers=1)
    for _ in range(3):
        preset = config.resolved
    assert calls == [tiny_preset]
    assert (preset.optim.epochs, preset.optim.lr, preset.optim.batch_size) == (7, 1e-3, 4)
    assert preset.model.height == 16


# --- run record and --resume -------------------------------------------------------------------


def _record(config: TrainConfig, name: str) -> RunRecord:
    return RunRecord(name, "run-" + name, "tiny", "sqlite:///x.db", options.values(config))


def test_resume_takes_the_recorded_options_and_the_overrides_of_the_new_invocation(
    tiny_data: Path, tiny_preset: str, tmp_path: Path, make_config
) -> None:
    first = make_config(tiny_data, tiny_preset, tmp_path, epochs=2, shuffle_buffer=16, seed=3)
    record = _record(first, "old")
    probe = object()
    again = make_config(
        tiny_data, tiny_preset, tmp_path, epochs=4, workers=1, shuffle_buffer=99, seed=None,
        checkpoint_every=5, wait_for_nodes=30.0, resume=True, probe=probe,
    )  # fmt: skip
    resumed = resumed_config(again, record)
    assert (resumed.epochs, resumed.workers, resumed.checkpoint_every) == (4, 1, 5)
    assert resumed.wait_for_nodes == 30.0 and resumed.probe is probe
    assert (resumed.shuffle_buffer, resumed.seed) == (16, 3)  # they change the model: recorded
    assert (resumed.name, resumed.resume) == ("old", True)
    no_epochs = dataclasses.replace(again, epochs=None)
    assert resumed_config(no_epochs, record).epochs == 2  # the recorded run's
    elsewhere = dataclasses.replace(again, data=str(tmp_path))
    with pytest.raises(UserError, match="'old' trained on"):
        resumed_config(elsewhere, record)


def test_find_record_takes_the_named_or_the_latest_run(
    tiny_data: Path, tiny_preset: str, tmp_path: Path, make_config
) -> None:
    config = make_config(tiny_data, tiny_preset, tmp_path)
    runs = str(tmp_path / "runs" / "train")
    with pytest.raises(UserError, match="no run to continue under"):
        find_record(runs, None)
    for name in ("b-run", "a-run"):  # a-run written last
        write_record(runs, _record(config, name))
        time.sleep(0.02)
    os.utime(Path(runs, "b-run", RUN_RECORD), (time.time() - 60, time.time() - 60))
    assert find_record(runs, None).name == "a-run"
    assert find_record(runs, "b-run") == _record(config, "b-run")
    with pytest.raises(UserError, match="no run 'c-run' under"):
        find_record(runs, "c-run")
    Path(runs, "b-run", RUN_RECORD).write_text('{"name": "b-run"}')
    with pytest.raises(UserError, match="is not a run record") as err:
        find_record(runs, "b-run")
    assert "\n" not in str(err.value)
    assert not [p for p in Path(runs, "a-run").iterdir() if p.name.startswith(".")]  # atomic


# --- identity, completion, discard -------------------------------------------------------------


def test_the_run_identity_is_what_decides_the_model(
    tiny_data: Path, tiny_preset: str, tmp_path: Path, make_config
) -> None:
    config = make_config(tiny_data, tiny_preset, tmp_path, name="job-1")
    identity = run_identity(config)
    assert identity == json.loads(json.dumps(identity))  # as read back from a marker
    assert identity["preset"]["model"]["height"] == 16
    assert identity["tracking_uri"] == config.tracking_uri
    assert not set(identity) & set(options.names(TrainConfig, "execution"))
    same = dataclasses.replace(
        config, workers=1, max_failures=0, checkpoint_every=3, quiet=False, name="job-2",
        output=str(tmp_path / "elsewhere"), wait_for_nodes=60.0,
    )  # fmt: skip
    assert run_identity(same) == identity
    for changes in ({"shuffle_buffer": 8}, {"epochs": 4}, {"seed": 1}, {"alias": "champion"}):
        assert run_identity(dataclasses.replace(config, **changes)) != identity, changes
    copy = write_tiny_data(
        tmp_path / "copy", {"train": {"v0": 30, "v1": 21, "v2": 9, "v3": 26}, "test": {"t0": 12}}
    )
    assert run_identity(dataclasses.replace(config, data=str(copy))) == identity  # same videos
    more = write_tiny_data(tmp_path / "more", {"train": {"v0": 30, "v1": 22}, "test": {"t0": 12}})
    assert run_identity(dataclasses.replace(config, data=str(more))) != identity


def test_completion_reads_the_marker_and_the_run_record(
    tiny_data: Path, tiny_preset: str, tmp_path: Path, make_config
) -> None:
    config = make_config(tiny_data, tiny_preset, tmp_path, name="job-1")
    assert completion(dataclasses.replace(config, name=None)).reason == "no run name"
    state = completion(config)
    assert (state.complete, state.partial, state.reason) == (False, False, "no run yet")

    runs = str(tmp_path / "runs" / "train")
    write_record(runs, _record(config, "job-1"))
    state = completion(config)
    assert (state.complete, state.partial) == (False, True)  # a run to resume

    folder = run_folder(config, "job-1")
    write_marker(folder, {"result": RESULT.to_json(), "identity": run_identity(config)})
    state = completion(config)
    assert state.complete and state.result == RESULT
    assert state.reason == "run job-1 registered models:/mnad-tiny/2"
    other = completion(dataclasses.replace(config, shuffle_buffer=8))
    assert not other.complete and not other.partial and "other inputs" in other.reason

    discard(config)
    assert not storage.exists(folder)
    assert completion(config).reason == "no run yet"


def test_a_train_result_reads_back_from_its_json() -> None:
    doc = json.loads(json.dumps(RESULT.to_json()))
    assert TrainResult.from_json(doc) == RESULT
