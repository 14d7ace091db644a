"""The registry workflow against a real `mlflow server` over HTTP: two versions of a tiny
model (one trained for a few seconds, one untrained) registered, evaluated on a labelled
split (their AUCs tagged on the versions), the better one promoted to champion, the worse
refused over it with the alias left, one line, exit status 1 and the comparison on both."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import mlflow
import pytest

from pipelines import tracking
from pipelines.cli import main
from pipelines.errors import UserError
from pipelines.evaluate import EvaluateConfig, PromoteConfig, run_evaluate, run_promote
from tests.tiny_models import labelled_data, trained_checkpoint
from tests.tracking.server import mlflow_server

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NAME = "mnad-tiny"
GOOD, BAD = f"models:/{NAME}/1", f"models:/{NAME}/2"
KEY = "mnad.eval.tiny.test"


class Cycle(NamedTuple):
    uri: str
    data: Path
    work: Path


@pytest.fixture(scope="module")
def cycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cycle]:
    """A server holding version 1 (300 training steps) and version 2 (untrained) of
    mnad-tiny, each registered by its own run; the labelled DATA folder."""
    work = tmp_path_factory.mktemp("cycle")
    data = labelled_data(work / "data")
    with mlflow_server(work) as (uri, _):
        for steps in (300, 0):
            checkpoint = trained_checkpoint(data, work / f"model-{steps}", steps)
            with tracking.start_run(uri, "tiny", "train", {"steps": steps}) as run:
                tracking.register_checkpoint(run, os.fspath(checkpoint), NAME)
        yield Cycle(uri, data, work)


def _tags(uri: str, version: str) -> dict[str, str]:
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return dict(client.get_model_version(NAME, version).tags)


def _champion(uri: str) -> str | None:
    return tracking.alias_version(uri, NAME, "champion")


def test_evaluate_promote_and_refuse(ray_local, cycle: Cycle, capsys, monkeypatch) -> None:
    uri, data, work = cycle
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    common = {"tracking_uri": uri, "report": False, "quiet": True}

    # evaluate: the version behind an alias, pinned; its metrics tagged on it
    tracking.set_alias(uri, NAME, "candidate", "1")
    good = run_evaluate(
        EvaluateConfig(
            model=f"models:/{NAME}@candidate", data=str(data), out=str(work / "eval-1"), **common
        )
    )
    assert (good.model_uri, good.dataset, good.split) == (GOOD, "tiny", "test")
    assert good.metrics["micro_auc"] > 0.9 and {"macro_auc", "eer"} <= set(good.metrics)
    assert "calibrated_micro_auc" not in good.metrics  # the model has no calibration
    tags = _tags(uri, "1")
    assert float(tags[f"{KEY}.micro_auc"]) == good.metrics["micro_auc"]
    assert tags[f"{KEY}.run_id"] == good.run_id and tags[f"{KEY}.normalise"] == "per-video"
    score_run = mlflow.MlflowClient(uri).get_run(good.run_id)
    assert score_run.data.tags["mnad.model_uri"] == GOOD  # linked to the pinned version
    again = run_evaluate(
        EvaluateConfig(model=GOOD, data=str(data), out=str(work / "eval-1"), **common)
    )
    assert again.reused and again.metrics == good.metrics and again.run_id == good.run_id

    # promote: no version holds champion yet, so version 1 takes it
    capsys.readouterr()
    first = run_promote(PromoteConfig(model=GOOD, alias="champion", **common))
    assert first.promoted and first.exit_status == 0 and first.incumbent is None
    assert first.values == {"candidate": good.metrics["micro_auc"]}
    assert _champion(uri) == "1"
    assert "no version held champion; champion set to version 1" in capsys.readouterr().out

    # the worse version has no evaluation: without --on, a one-line error saying so
    with pytest.raises(UserError, match=r"models:/mnad-tiny/2: no evaluation .* pass --on"):
        run_promote(PromoteConfig(model=BAD, alias="champion", dataset="tiny", **common))

    # with --on it is evaluated first (by the function of `mnad evaluate`), then refused
    capsys.readouterr()
    argv = [
        "promote", BAD, "--alias", "champion", "--on", str(data), "--out", str(work / "evals"),
        "--tracking-uri", uri, "--no-report", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if not line.startswith(("🏃", "🧪"))]  # MLflow's run links
    assert len(lines) == 1, out
    bad_auc = float(_tags(uri, "2")[f"{KEY}.micro_auc"])
    short = good.metrics["micro_auc"] - bad_auc
    assert short > 0.1
    assert lines[0] == (
        f"mnad promote: {BAD} micro_auc {bad_auc:.4f} < {good.metrics['micro_auc']:.4f} of "
        f"champion ({GOOD}) on tiny test: alias left; short by {short:.4f}"
    )
    assert _champion(uri) == "1"  # left where it was
    assert (work / "evals" / "mnad-tiny-2-tiny-test" / "summary.json").is_file()
    for version in ("1", "2"):
        doc = json.loads(_tags(uri, version)["mnad.promote.champion"])
        assert doc["decision"] == "refused" and doc["metric"] == "micro_auc"
        assert (doc["candidate"], doc["incumbent"]) == (BAD, GOOD)
        assert doc["values"] == {"candidate": bad_auc, "incumbent": good.metrics["micro_auc"]}
        assert (doc["dataset"], doc["split"]) == ("tiny", "test") and doc["date"]

    # the same comparison from recorded evaluations, nothing scored: the typed result
    refused = run_promote(PromoteConfig(model=BAD, alias="champion", **common))
    assert not refused.promoted and refused.exit_status == 1 and refused.evaluated == ()
    assert refused.margin == pytest.approx(-short)
    # eer, lower is better: the trained version takes an alias the untrained one held
    capsys.readouterr()
    held = run_promote(PromoteConfig(model=BAD, alias="challenger", **common))
    assert held.promoted and _tags(uri, "2")["mnad.promote.challenger"]
    moved = run_promote(PromoteConfig(model=GOOD, alias="challenger", metric="eer", **common))
    assert moved.promoted and moved.incumbent == BAD and moved.margin > 0
    assert moved.values["candidate"] < moved.values["incumbent"]
    assert tracking.alias_version(uri, NAME, "challenger") == "1"
    line = capsys.readouterr().out.splitlines()[-1]
    assert f"{GOOD} eer {moved.values['candidate']:.4f} <= " in line
    assert line.endswith(f"challenger moved from version 2 to 1 (ahead by {moved.margin:.4f})")


def test_what_cannot_be_evaluated_says_why_in_one_line(cycle: Cycle, monkeypatch) -> None:
    uri, data, work = cycle
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(UserError, match=rf"^{re.escape(str(data))}: the train split has no frame"):
        run_evaluate(EvaluateConfig(model=GOOD, data=str(data), split="train", tracking_uri=uri))
    checkpoint = str(work / "model-0")
    with pytest.raises(UserError, match="not a registered model version"):
        run_evaluate(EvaluateConfig(model=checkpoint, data=str(data), tracking_uri=uri))
    with pytest.raises(UserError, match="no version of mnad-tiny holds nobody"):
        run_promote(PromoteConfig(model=GOOD, alias="champion", over="nobody", tracking_uri=uri))
