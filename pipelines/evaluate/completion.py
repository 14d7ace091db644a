"""The registry workflow's stages as `mnad run` asks them (driver): whether an evaluation is
complete, and whether a promotion will have to score (:mod:`pipelines.stage`).

- evaluate: complete when the version carries the tags of an evaluation on DATA's data set
  and split, measured on this DATA folder; its result is read back from those tags. Scores of
  an earlier evaluation in its folder are what a new one reuses or continues.
- promote: a decision, never complete: it is taken again on the registry as it is now, which
  is cheap (two versions' tags read, an alias perhaps moved) unless a version must be
  evaluated first.
"""

from __future__ import annotations

from pipelines import storage
from pipelines.data import read_summary
from pipelines.evaluate import record
from pipelines.evaluate.config import EVALUATIONS, EvaluateConfig, PromoteConfig
from pipelines.evaluate.evaluate import EvaluateResult, pinned_version, scores_folder
from pipelines.stage import Completion


def evaluate_completion(config: EvaluateConfig) -> Completion:
    """Whether ``config.model``'s version has its evaluation on DATA recorded already."""
    from pipelines import tracking

    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    ref = pinned_version(config.model, uri)
    name, version = str(ref.name), str(ref.version)
    dataset = read_summary(config.data).dataset
    out = config.out or scores_folder(EVALUATIONS, name, version, dataset, config.split)
    tags = tracking.version_tags(uri, name, version)
    found = record.recorded(tags, dataset, config.split)
    earlier = storage.exists(out)
    if found is None:
        return Completion.missing(
            f"{ref.pinned} has no evaluation on {dataset} {config.split} recorded", earlier
        )
    data = record.recorded_field(tags, dataset, config.split, record.DATA)
    if data != storage.absolute(config.data):
        return Completion.missing(
            f"{ref.pinned}'s evaluation on {dataset} {config.split} is of {data}, not of "
            f"{config.data}",
            earlier,
        )
    result = EvaluateResult(
        model=config.model, model_uri=ref.pinned, dataset=dataset, split=config.split,
        metrics=found, scores=out, reused=True,
        run_id=record.recorded_field(tags, dataset, config.split, record.RUN_ID) or None,
        normalise=record.recorded_field(tags, dataset, config.split, record.NORMALISE) or "",
    )  # fmt: skip
    figure = f"micro_auc {found['micro_auc']:.4f}" if "micro_auc" in found else "recorded"
    return Completion.done(result, f"{ref.pinned} carries its {dataset} {config.split} {figure}")


def promote_completion(config: PromoteConfig) -> Completion:
    """Never complete: a promotion is decided again each time (see the module docstring)."""
    return Completion.missing(f"a decision on {config.alias}, taken on the registry as it is now")


def promote_scores(config: PromoteConfig) -> bool:
    """Whether the promotion will score a version first: another version holds the alias
    it is measured over and one of the two has no evaluation recorded on ``--on``'s data set
    and split (so the job joins Ray only then)."""
    from pipelines import tracking

    if not config.on:
        return False
    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    ref = pinned_version(config.model, uri)
    name, version = str(ref.name), str(ref.version)
    rival = tracking.alias_version(uri, name, config.incumbent_alias)
    if rival is None or rival == version:
        return False
    dataset = config.dataset or read_summary(config.on).dataset
    return any(
        record.recorded(tracking.version_tags(uri, name, v), dataset, config.split) is None
        for v in (version, rival)
    )


__all__ = ["evaluate_completion", "promote_completion", "promote_scores"]
