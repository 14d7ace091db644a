"""`mnad evaluate MODEL DATA` on the driver: a registered version scored on a labelled split
by `mnad score` (:func:`pipelines.score.run_score`: the scores, their metrics and an MLflow
run linked to the version), then the metrics recorded on the version as its tags
(:mod:`pipelines.evaluate.record`), so that the registry page shows each version's AUC on
each data set.

MODEL is pinned first (``models:/mnad-ped2@champion`` -> ``models:/mnad-ped2/3``): an alias
that moves while the job runs changes neither what is scored nor which version is tagged.
Complete scores of the same version already in SCORES are reused, not scored again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines import storage
from pipelines.data import DataSummary, validate_data
from pipelines.errors import UserError
from pipelines.evaluate import record
from pipelines.evaluate.config import EVALUATIONS, EvaluateConfig
from pipelines.stage import Result

if TYPE_CHECKING:
    from pipelines.score import ScoreResult
    from pipelines.tracking import ModelRef


@dataclass(frozen=True)
class EvaluateResult(Result):
    """What `mnad evaluate` measured and recorded on the version."""

    model: str  # as given
    model_uri: str  # pinned: models:/<name>/<version>
    dataset: str
    split: str
    metrics: dict[str, float]  # those recorded (record.METRICS the scores have)
    run_id: str | None  # the `mnad score` run
    scores: str  # the SCORES folder
    normalise: str  # what micro_auc... scored: calibrated | per-video
    reused: bool = False  # complete scores of this version were there already

    def to_json(self) -> dict:
        doc = super().to_json()
        doc["metrics"] = {k: float(v) for k, v in self.metrics.items()}
        return doc


def pinned_version(model: str, tracking_uri: str) -> ModelRef:
    """The registered version MODEL names (an alias resolved now, once); a one-line
    UserError for anything else (a run, a logged model, a folder)."""
    from pipelines import tracking

    ref = tracking.find_model(model, tracking_uri)
    if ref.name is None or ref.version is None:
        raise UserError(
            f"{model}: not a registered model version: give models:/<name>@<alias> or "
            "models:/<name>/<version> (`mnad train` registers one)"
        )
    return ref


def scores_folder(root: str, name: str, version: str, dataset: str, split: str) -> str:
    """Where the evaluation of version ``version`` of ``name`` on ``dataset``'s ``split``
    writes its scores, under ``root``."""
    return storage.join(root, "-".join(record.key_part(p) for p in (name, version, dataset, split)))


def run_evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Score ``config.model``'s version on DATA's labelled split; tag its metrics on it."""
    from pipelines import tracking

    summary = validate_data(config.data, splits=(config.split,))
    _require_labels(config.data, config.split, summary)
    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    tracking.check_tracking(uri)
    ref = pinned_version(config.model, uri)
    assert ref.name is not None and ref.version is not None  # pinned_version guarantees it
    out = config.out or scores_folder(
        EVALUATIONS, ref.name, ref.version, summary.dataset, config.split
    )
    scored, reused = _scores(config, ref.pinned, out, uri)
    if scored.failed:
        raise UserError(
            f"{config.data}: {len(scored.failed)} video(s) of the {config.split} split could "
            f"not be scored, so no evaluation is recorded on {ref.pinned}: {scored.failed[0]}"
        )
    if "micro_auc" not in scored.metrics:
        raise UserError(_unlabelled(config.data, config.split))
    metrics = {k: float(scored.metrics[k]) for k in record.METRICS if k in scored.metrics}
    tags = record.eval_tags(
        scored.dataset, config.split, metrics, scored.run_id, scored.normalise,
        storage.absolute(config.data),
    )  # fmt: skip
    tracking.set_version_tags(uri, ref.name, ref.version, tags)
    result = EvaluateResult(
        model=config.model, model_uri=ref.pinned, dataset=scored.dataset, split=config.split,
        metrics=metrics, run_id=scored.run_id, scores=out, normalise=scored.normalise,
        reused=reused,
    )  # fmt: skip
    if not config.quiet:
        figures = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        again = " (scores already there, reused)" if reused else ""
        print(
            f"mnad evaluate: {ref.pinned} on {scored.dataset} {config.split}: {figures}; "
            f"recorded on the version (run {scored.run_id}); scores in {out}{again}",
            flush=True,
        )
    return result


def _scores(config: EvaluateConfig, pinned: str, out: str, uri: str) -> tuple[ScoreResult, bool]:
    """The version's scores in ``out``: read back when complete, else scored now; and
    whether they were read back. A folder holding another model's scores is refused (its
    parts would be taken for this version's)."""
    from pipelines.score import ScoreConfig, completion, read_result, run_score

    score_config = ScoreConfig(
        data=config.data, model=pinned, out=out, split=config.split, tracking_uri=uri,
        report=config.report, actors=config.actors, gpus_per_actor=config.gpus_per_actor,
        quiet=config.quiet,
    )  # fmt: skip
    there = read_result(out)
    if there is not None and there.model != pinned:
        raise UserError(
            f"{out} holds the scores of {there.model}, not of {pinned}: give another --out"
        )
    done = completion(score_config)
    if done.complete and done.result.run_id:
        return done.result, True
    return run_score(score_config), False


def _require_labels(data: str, split: str, summary: DataSummary) -> None:
    """A one-line UserError when DATA's summary says the split has no anomalous frame."""
    if summary.splits.get(split, {}).get("anomalous_frames", 1) == 0:
        raise UserError(_unlabelled(data, split))


def _unlabelled(data: str, split: str) -> str:
    return (
        f"{data}: the {split} split has no frames labelled anomalous (and normal), so there is "
        "no AUC to measure: evaluate on a labelled split"
    )


__all__ = ["EvaluateResult", "pinned_version", "run_evaluate", "scores_folder"]
