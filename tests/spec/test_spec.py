"""`mnad run SPEC.yaml` without Ray: parsing, validation errors that name the file and the key,
paths relative to the spec, the training fingerprint, the demo's spec, the command line."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from pipelines.demo import DEMO_SPEC, DemoConfig, write_demo_spec
from pipelines.errors import UserError
from pipelines.options import add_arguments, from_args, values
from pipelines.spec import RunSpecConfig, SpecError, load_spec, parse_spec
from pipelines.stage import fingerprint
from pipelines.train import run_identity
from tests.conftest import write_tiny_data

ROOT = Path(__file__).resolve().parents[2]

FULL = {
    "name": "ped2",
    "output": "runs/ped2",
    "tracking_uri": "runs/mlflow.db",
    "experiment": "ped2-exp",
    "ingest": {"source": "data/ucsd_ped2", "layout": "frames", "size": [64, 64]},
    "train": {"preset": "small", "epochs": 3, "workers": 2, "gpus_per_worker": 0},
    "score": {"memory": ["per-video", "paper"], "out": "s3://bucket/scores", "batch_size": 8},
}


def _spec(tmp_path: Path, doc: dict | str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def test_a_full_spec_becomes_each_stages_config_with_paths_relative_to_it(
    tmp_path: Path,
) -> None:
    spec = load_spec(_spec(tmp_path, FULL), quiet=True)
    assert spec.name == "ped2" and spec.output == str(tmp_path / "runs/ped2")
    assert spec.tracking_uri == f"sqlite:///{tmp_path}/runs/mlflow.db"
    assert spec.ingest.source == str(tmp_path / "data/ucsd_ped2")
    assert spec.ingest.out == f"{tmp_path}/runs/ped2/data" and spec.ingest.size == (64, 64)
    assert spec.ingest.quiet
    train = spec.train
    assert train is not None
    assert (train.data, train.output, train.epochs) == (spec.ingest.out, spec.output, 3)
    assert (train.tracking_uri, train.experiment) == (spec.tracking_uri, "ped2-exp")
    assert [s.memory for s in spec.score] == ["per-video", "paper"]
    assert {s.batch_size for s in spec.score} == {8}
    assert spec.score_out == "s3://bucket/scores"  # URIs stay as they are
    assert spec.score_model is None  # the model that `train` registers


def test_defaults_and_a_score_only_spec(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    doc = {
        "name": "archive",
        "ingest": {"source": "s3://bucket/cctv", "layout": "videos"},
        "score": {"model": "models:/mnad-ped2@champion"},
    }
    spec = load_spec(_spec(tmp_path, doc))
    assert spec.output == str(tmp_path / "mnad-runs/archive")
    assert spec.tracking_uri == f"sqlite:///{tmp_path}/mnad-runs/archive/mlflow.db"
    assert spec.train is None and spec.score_model == "models:/mnad-ped2@champion"
    assert [s.memory for s in spec.score] == ["per-video"]
    assert spec.ingest.source == "s3://bucket/cctv"


def test_a_synth_section_is_the_source(tmp_path: Path) -> None:
    doc = {"name": "demo", "synth": {"size": "tiny"}, "ingest": {"size": [16, 16]}, "train": {}}
    spec = load_spec(_spec(tmp_path, doc))
    assert spec.synth is not None and spec.synth.size == "tiny"
    assert spec.ingest.source == spec.synth.out == f"{tmp_path}/mnad-runs/demo/source"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, r"job\.yaml: colour: unknown key"),
        ({"train": {"epoch": 3}}, r"job\.yaml: train\.epoch: unknown key; expected one of"),
        ({"train": {"epochs": "ten"}}, r"train\.epochs: expected an integer or None|integer"),
        ({"train": {"workers": 0}}, r"job\.yaml: train\.workers: --workers must be"),
        ({"train": {"preset": "huge"}}, r"job\.yaml: train\.preset: unknown preset 'huge'"),
        ({"train": {"output": "x"}}, r"train\.output: set by the spec; use the top-level"),
        ({"ingest": {"source": "x", "size": [64]}}, r"ingest\.size: expected a list of 2"),
        ({"ingest": {"source": "x", "layout": "tiles"}}, r"ingest\.layout: expected one of"),
        ({"score": {"memory": ["paper", "paper"]}}, r"score\.memory: a mode or a list"),
        ({"score": {"memory": ["perfect"]}}, r"score\.memory: expected one of"),
        ({"name": "my job"}, r"job\.yaml: name: 'my job'"),
        ({"train": None, "score": {}}, r"score\.model: required when the spec has no train"),
        ({"ingest": {"layout": "frames"}}, r"ingest\.source: required"),
    ],
)
def test_errors_name_the_spec_file_and_the_key(tmp_path: Path, change: dict, message: str) -> None:
    doc = {**FULL, **change}
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(FULL.get(key), dict) and key != "ingest":
            doc[key] = {**FULL[key], **value}
    with pytest.raises(SpecError, match=message) as info:
        load_spec(_spec(tmp_path, doc))
    assert "\n" not in str(info.value)


def test_unreadable_and_malformed_specs(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(SpecError, match=r"missing\.yaml: cannot read the spec"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML at line \d+: expected"):
        load_spec(_spec(tmp_path, "name: x\ntrain: [unclosed\n", "bad.yaml"))
    with pytest.raises(SpecError, match=r"list\.yaml: a spec is a mapping"):
        load_spec(_spec(tmp_path, "- 1\n", "list.yaml"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    remote = {**FULL, "output": "s3://bucket/job"}
    del remote["tracking_uri"]
    with pytest.raises(SpecError, match=r"tracking_uri: required when output is a URI"):
        parse_spec(remote, "remote.yaml")


def test_the_training_fingerprint_follows_the_model_not_the_execution(tmp_path: Path) -> None:
    data = write_tiny_data(tmp_path / "data", {"train": {"v0": 12, "v1": 9}, "test": {"t": 9}})
    spec = parse_spec({**FULL, "ingest": {"source": "s", "out": str(data)}}, str(tmp_path / "j"))
    assert spec.train is not None
    base = fingerprint(run_identity(spec.train))
    more_workers = dataclasses.replace(spec.train, workers=1, cpus_per_worker=2.0)
    assert fingerprint(run_identity(more_workers)) == base
    longer = dataclasses.replace(spec.train, epochs=4)
    assert fingerprint(run_identity(longer)) != base
    write_tiny_data(tmp_path / "data", {"train": {"v0": 12, "v1": 10}, "test": {"t": 9}})
    assert fingerprint(run_identity(spec.train)) != base  # a training video changed


def test_the_demo_spec_is_the_example_and_finishes_with_the_small_preset(tmp_path: Path) -> None:
    path = write_demo_spec(tmp_path / "runs")
    assert path.read_text() == DEMO_SPEC
    demo = load_spec(path)
    example = load_spec(ROOT / "examples" / "synthetic.yaml")
    assert demo.synth is not None and demo.synth.size == "demo"
    assert demo.train is not None and example.train is not None
    assert values(demo.train) | {"data": "", "output": "", "tracking_uri": ""} == (
        values(example.train) | {"data": "", "output": "", "tracking_uri": ""}
    )
    assert demo.train.workers == 1 and demo.train.cpus_per_worker == 0  # every CPU
    assert demo.train.preset == "small"
    assert demo.tracking_uri == f"sqlite:///{tmp_path}/runs/mlflow.db"  # where `mnad ui` looks


def test_the_command_lines_of_run_and_demo() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, RunSpecConfig)
    ns = parser.parse_args(["job.yaml", "--json", "--force", "train", "score"])
    config = from_args(RunSpecConfig, ns)
    assert (config.spec, config.json, config.quiet, config.force) == (
        "job.yaml", True, False, ("train", "score")
    )  # fmt: skip
    with pytest.raises(UserError, match="--force scoring: not a stage"):
        RunSpecConfig(spec="job.yaml", force=["scoring"])
    parser = argparse.ArgumentParser()
    add_arguments(parser, DemoConfig)
    assert from_args(DemoConfig, parser.parse_args([])).out == "mnad-runs"


def test_evaluate_and_promote_sections_default_to_the_trained_version_and_the_jobs_data(
    tmp_path: Path,
) -> None:
    doc = {**FULL, "evaluate": {"split": "test", "report": False},
           "promote": {"alias": "champion", "metric": "eer"}}  # fmt: skip
    spec = load_spec(_spec(tmp_path, doc), quiet=True)
    assert spec.evaluate is not None and spec.promote is not None
    assert spec.evaluate_model is None and spec.promote_model is None  # train's version
    assert spec.evaluate.data == spec.ingest.out and not spec.evaluate.report
    assert spec.evaluate.tracking_uri == spec.tracking_uri and spec.evaluate.quiet
    assert (spec.promote.alias, spec.promote.metric) == ("champion", "eer")
    assert spec.promote.on == spec.ingest.out  # a missing evaluation is run on DATA
    assert spec.promote.out == spec.evaluations == f"{tmp_path}/runs/ped2/evaluations"
    assert spec.score_model is None  # score then uses the promoted alias
    # Without a train section the models are named; score may follow promote's alias.
    version = "models:/mnad-ped2/3"
    named = {**doc, "train": None, "score": {}, "evaluate": {"model": version},
             "promote": {"alias": "champion", "model": version, "on": "labelled"}}  # fmt: skip
    spec = load_spec(_spec(tmp_path, named, "named.yaml"))
    assert spec.evaluate_model == spec.promote_model == "models:/mnad-ped2/3"
    assert spec.promote is not None and spec.promote.on == str(tmp_path / "labelled")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"promote": {"metric": "eer"}}, r"job\.yaml: promote\.alias: required"),
        ({"promote": {"alias": "latest"}}, r"promote\.alias: --alias latest: MLflow reserves"),
        ({"promote": {"alias": "c", "metric": "f1"}}, r"promote\.metric: expected one of"),
        ({"evaluate": {"data": "x"}}, r"evaluate\.data: set by the spec; use ingest\.out"),
        ({"evaluate": {"split": "val"}}, r"evaluate\.split: expected one of"),
        ({"train": None, "evaluate": {}, "score": {"model": "m"}}, r"evaluate\.model: required"),
        ({"train": None, "promote": {"alias": "c"}}, r"promote\.model: required when the spec"),
    ],
)
def test_evaluate_and_promote_errors_name_the_key(tmp_path: Path, change: dict, message: str):
    with pytest.raises(SpecError, match=message) as info:
        load_spec(_spec(tmp_path, {**FULL, **change}))
    assert "\n" not in str(info.value)


def test_the_registry_cycle_example_runs_train_evaluate_promote_then_scores_the_champion():
    spec = load_spec(ROOT / "examples" / "registry_cycle.yaml")
    assert spec.synth is not None and spec.train is not None
    assert spec.evaluate is not None and spec.promote is not None
    assert spec.promote.alias == "champion" and spec.score_model is None
    assert spec.evaluate.split == spec.promote.split == "test"
