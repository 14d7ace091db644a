"""`mnad run examples/registry_cycle.yaml` on a tiny synthetic set with a real local Ray and a
real MLflow store (sqlite): train -> evaluate -> promote -> score with the champion, three
times. First a trained version takes champion (nobody held it) and scores; then the same spec
again skips training, the evaluation and the scores and decides again (the version holds
champion itself); then a spec that trains a version with a learning rate too small to learn
anything evaluates it, is refused over the champion (alias left, the comparison recorded on
both versions), still scores with the champion, and exits with status 1, the reason in one
line last on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml

from mnad.config import ModelConfig, OptimConfig, Preset
from pipelines import tracking
from pipelines.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NAME = "mnad-synth"
TINY = Preset(
    "tiny",
    ModelConfig(height=16, width=16, channels=1, input_frames=4, width_mult=1 / 16),
    OptimConfig(lr=2e-3, batch_size=4, epochs=4, seed=0),
)


def _spec(work: Path, name: str, train: dict) -> Path:
    """The example with the tiny set, the tiny preset and no reports: the same stages."""
    doc = yaml.safe_load((ROOT / "examples" / "registry_cycle.yaml").read_text())
    assert [k for k in doc if k in ("train", "evaluate", "promote", "score")] == [
        "train", "evaluate", "promote", "score"
    ]  # fmt: skip
    doc.update(output="out", tracking_uri="mlflow.db")
    doc["synth"]["size"] = "tiny"
    doc["ingest"]["size"] = [16, 16]
    doc["train"] = {**doc["train"], "preset": "tiny.json", "shuffle_buffer": 16, **train}
    doc["train"].pop("epochs")
    doc["evaluate"]["report"] = doc["promote"]["report"] = False
    doc["score"].update(report=False, batch_size=16)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _run(spec: Path, capsys) -> tuple[int, dict, str]:
    status = main(["run", str(spec), "--json", "--quiet"])
    captured = capsys.readouterr()
    return status, json.loads(captured.out.strip().splitlines()[-1]), captured.err


def _tags(uri: str, version: str) -> dict[str, str]:
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return dict(client.get_model_version(NAME, version).tags)


def test_train_evaluate_promote_score_and_a_refusal(ray_local, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "tiny.json").write_text(TINY.to_json())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    key = "mnad.eval.synth.test"

    # 1. a trained version, evaluated; nobody held champion, so it takes it and scores
    good = _spec(tmp_path, "good", {})
    status, first, err = _run(good, capsys)
    assert status == 0 and first["status"] == "ok", err
    assert first["train"]["model_uri"] == f"models:/{NAME}/1"
    evaluated = first["evaluate"]
    assert evaluated["status"] == "ran" and evaluated["model_uri"] == f"models:/{NAME}/1"
    assert evaluated["scores"] == f"{tmp_path}/out/evaluations/{NAME}-1-synth-test"
    auc = evaluated["metrics"]["micro_auc"]
    assert float(_tags(uri, "1")[f"{key}.micro_auc"]) == auc
    promoted = first["promote"]
    assert promoted["promoted"] and promoted["incumbent"] is None
    assert tracking.alias_version(uri, NAME, "champion") == "1"
    (scored,) = first["score"]
    assert scored["model"] == f"models:/{NAME}/1"  # the champion, pinned
    assert scored["out"] == f"{tmp_path}/out/scores/{NAME}-v1/per-video"

    # 2. unchanged: nothing trained, evaluated or scored again; the decision taken again
    status, again, err = _run(good, capsys)
    assert status == 0, err
    stages = {s: again[s]["status"] for s in ("train", "evaluate", "promote")}
    assert stages == {"train": "skipped", "evaluate": "skipped", "promote": "ran"}
    assert again["evaluate"]["metrics"]["micro_auc"] == auc  # read back from the tags
    assert again["promote"]["promoted"] and again["score"][0]["status"] == "skipped"

    # 3. a version that learns nothing: evaluated, refused, the champion scores; status 1
    bad = _spec(tmp_path, "bad", {"lr": 1e-9})
    status, third, err = _run(bad, capsys)
    assert status == 1 and third["status"] == "promotion_refused", err
    assert third["train"]["model_uri"] == f"models:/{NAME}/2"
    assert third["evaluate"]["status"] == "ran"
    worse = third["evaluate"]["metrics"]["micro_auc"]
    decision = third["promote"]
    assert not decision["promoted"] and decision["incumbent"] == f"models:/{NAME}/1"
    assert decision["values"] == {"candidate": worse, "incumbent": auc}
    assert tracking.alias_version(uri, NAME, "champion") == "1"  # left where it was
    for version in ("1", "2"):
        doc = json.loads(_tags(uri, version)["mnad.promote.champion"])
        assert doc["decision"] == "refused" and doc["candidate"] == f"models:/{NAME}/2"
    assert third["score"][0]["model"] == f"models:/{NAME}/1"
    assert third["score"][0]["status"] == "skipped"  # the champion's scores are there
    last = err.strip().splitlines()[-1]
    assert last == f"mnad run: promotion refused: {third['refused']}"
    assert last.startswith(f"mnad run: promotion refused: models:/{NAME}/2 micro_auc {worse:.4f}")
    assert f"is short of {auc:.4f} of champion (models:/{NAME}/1) on synth test by" in last
