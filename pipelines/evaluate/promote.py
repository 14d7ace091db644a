"""`mnad promote MODEL --alias champion` on the driver: the alias moves to MODEL's version
only when that version measures at least as well as the one holding ``--over`` (default:
the alias itself) on the same data set and split, by ``--metric``.

Measured, not assumed: both values are the evaluations recorded on the versions
(:mod:`pipelines.evaluate.record`); a version without one is evaluated first on ``--on
DATA`` (:func:`pipelines.evaluate.run_evaluate`), and without ``--on`` the job stops and
says so. When no version holds the alias yet, MODEL's version takes it. The comparison,
the decision and the date are tagged ``mnad.promote.<alias>`` on both versions; a refusal
leaves the alias where it is, prints by how much MODEL fell short and exits with status 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pipelines.data import read_summary
from pipelines.errors import UserError
from pipelines.evaluate import record
from pipelines.evaluate.config import EvaluateConfig, PromoteConfig
from pipelines.evaluate.evaluate import pinned_version, run_evaluate, scores_folder
from pipelines.stage import Result

PROMOTED, REFUSED = "promoted", "refused"


@dataclass(frozen=True)
class PromoteResult(Result):
    """What `mnad promote` compared and decided."""

    promoted: bool  # the alias is on the candidate's version now
    candidate: str  # MODEL, pinned: models:/<name>/<version>
    incumbent: str | None  # the version that held --over, pinned; None: none did
    alias: str
    over: str
    metric: str
    dataset: str | None  # the data set compared on (None: nothing was compared)
    split: str
    values: dict[str, float]  # "candidate" and "incumbent": the metric's recorded values
    margin: float | None  # how far the candidate is ahead (>= 0 promotes); None: no comparison
    evaluated: tuple[str, ...] = ()  # the versions evaluated here first (--on)

    @property
    def exit_status(self) -> int:
        """0 when the alias is on the candidate's version, 1 when it was left."""
        return 0 if self.promoted else 1


def run_promote(config: PromoteConfig) -> PromoteResult:
    """Move ``config.alias`` to MODEL's version if it measures at least as well as the
    version holding ``--over``; record the comparison on both."""
    from pipelines import tracking

    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    tracking.check_tracking(uri)
    ref = pinned_version(config.model, uri)
    name, version = str(ref.name), str(ref.version)
    alias, over = config.alias, config.incumbent_alias
    held = tracking.alias_version(uri, name, alias)
    rival = held if over == alias else tracking.alias_version(uri, name, over)
    if rival is None and over != alias:
        raise UserError(
            f"no version of {name} holds {over}: nothing to measure {ref.pinned} against "
            f"(leave out --over to promote it over {alias})"
        )
    if rival is None or rival == version:
        return _unopposed(config, uri, name, version, held, rival)
    incumbent = f"models:/{name}/{rival}"
    tags = tracking.version_tags(uri, name, version)
    dataset = _dataset(config, ref.pinned, tags)
    values, evaluated, normalised = {}, [], {}
    for role, v in (("candidate", version), ("incumbent", rival)):
        value, normalise, ran = _measure(config, uri, name, v, dataset)
        values[role], normalised[role] = value, normalise
        evaluated += [f"models:/{name}/{v}"] if ran else []
    comparison = record.Comparison(config.metric, values["candidate"], values["incumbent"])
    if comparison.promotes:
        _move(uri, name, alias, version, held)
    result = PromoteResult(
        promoted=comparison.promotes, candidate=ref.pinned, incumbent=incumbent, alias=alias,
        over=over, metric=config.metric, dataset=dataset, split=config.split, values=values,
        margin=comparison.margin, evaluated=tuple(evaluated),
    )  # fmt: skip
    _record(uri, name, (version, rival), result)
    if len(set(normalised.values())) > 1 and config.metric in ("micro_auc", "macro_auc", "eer"):
        _say(config, f"note: {ref.pinned} was scored {normalised['candidate']} and {incumbent} "
             f"{normalised['incumbent']}, so their {config.metric} measure different scores; "
             "--metric per_video_micro_auc compares like with like")  # fmt: skip
    line = (
        f"{ref.pinned} {config.metric} {comparison.candidate:.4f} {comparison.relation} "
        f"{comparison.incumbent:.4f} of {over} ({incumbent}) on {dataset} {config.split}: "
    )
    if comparison.promotes:
        line += f"{_moved(alias, version, held)} (ahead by {comparison.margin:.4f})"
    else:
        line += f"alias left; short by {-comparison.margin:.4f}"
    print(f"mnad promote: {line}", flush=True)
    return result


def _unopposed(
    config: PromoteConfig, uri: str, name: str, version: str, held: str | None, rival: str | None
) -> PromoteResult:
    """No version holds the alias yet (``rival`` None), or MODEL's holds ``--over`` itself:
    the alias goes to MODEL's version with nothing to compare; the value recorded, if any,
    goes with it."""
    from pipelines import tracking

    candidate = f"models:/{name}/{version}"
    over = config.incumbent_alias
    tags = tracking.version_tags(uri, name, version)
    dataset = _dataset(config, candidate, tags, required=False)
    found = record.recorded(tags, dataset, config.split) if dataset else None
    values = {"candidate": found[config.metric]} if found and config.metric in found else {}
    _move(uri, name, config.alias, version, held)
    result = PromoteResult(
        promoted=True, candidate=candidate,
        incumbent=None if rival is None else f"models:/{name}/{rival}",
        alias=config.alias, over=over, metric=config.metric,
        dataset=dataset if values else None, split=config.split, values=values, margin=None,
    )  # fmt: skip
    _record(uri, name, (version,), result)
    why = f"no version held {config.alias}" if rival is None else f"it holds {over} itself"
    print(f"mnad promote: {candidate}: {why}; {_moved(config.alias, version, held)}", flush=True)
    return result


def _dataset(
    config: PromoteConfig, candidate: str, tags: dict[str, str], required: bool = True
) -> str | None:
    """The data set compared on: ``--on``'s, else ``--dataset``, else the one the candidate
    has an evaluation of (a one-line UserError when that is none or several, unless not
    ``required``)."""
    named = record.key_part(config.dataset) if config.dataset else None
    if config.on:
        on = record.key_part(read_summary(config.on).dataset)
        if named and named != on:
            raise UserError(f"--dataset {config.dataset}, but {config.on} holds data set {on}")
        return on
    if named:
        return named
    evaluated = record.evaluated_datasets(tags, config.split)
    if len(evaluated) == 1 or not required:
        return evaluated[0] if len(evaluated) == 1 else None
    if not evaluated:
        raise UserError(
            f"{candidate}: no evaluation recorded on a {config.split} split: pass --on DATA "
            "to evaluate it first"
        )
    raise UserError(
        f"{candidate} has evaluations on {', '.join(evaluated)} ({config.split}): pass "
        "--dataset NAME or --on DATA"
    )


def _measure(
    config: PromoteConfig, uri: str, name: str, version: str, dataset: str
) -> tuple[float, str | None, bool]:
    """The version's recorded value of the metric on ``dataset``'s split, evaluated first on
    ``--on`` when none is recorded: (value, its normalisation, whether it was evaluated)."""
    from pipelines import tracking

    pinned = f"models:/{name}/{version}"
    tags = tracking.version_tags(uri, name, version)
    found = record.recorded(tags, dataset, config.split)
    normalise = record.recorded_field(tags, dataset, config.split, record.NORMALISE)
    ran = found is None
    if found is None:
        if not config.on:
            raise UserError(
                f"{pinned}: no evaluation recorded on {dataset} {config.split}: pass --on DATA "
                f"to evaluate it first (or run `mnad evaluate {pinned} DATA`)"
            )
        evaluation = run_evaluate(
            EvaluateConfig(
                model=pinned, data=config.on, split=config.split,
                out=scores_folder(config.out, name, version, dataset, config.split),
                report=config.report, tracking_uri=uri, actors=config.actors,
                gpus_per_actor=config.gpus_per_actor, quiet=config.quiet,
            )
        )  # fmt: skip
        found, normalise = evaluation.metrics, evaluation.normalise
    if config.metric not in found:
        raise UserError(
            f"{pinned}: its evaluation on {dataset} {config.split} has no {config.metric} (a "
            "model without a calibration has no calibrated_micro_auc): choose another --metric"
        )
    return found[config.metric], normalise, ran


def _move(uri: str, name: str, alias: str, version: str, held: str | None) -> None:
    """Point ``alias`` at ``version``, unless it moved since it was read as ``held``."""
    from pipelines import tracking

    now = tracking.alias_version(uri, name, alias)
    if now != held:
        raise UserError(f"{alias} of {name} moved to version {now} while promote ran: run it again")
    if now != version:
        tracking.set_alias(uri, name, alias, version)


def _moved(alias: str, version: str, held: str | None) -> str:
    """What became of the alias, which ``held`` pointed at before."""
    if held == version:
        return f"{alias} already on version {version}"
    if held is None:
        return f"{alias} set to version {version}"
    return f"{alias} moved from version {held} to {version}"


def _record(uri: str, name: str, versions: tuple[str, ...], result: PromoteResult) -> None:
    """The comparison as the tag ``mnad.promote.<alias>`` on each version compared."""
    from pipelines import tracking

    doc: dict[str, Any] = {
        "decision": PROMOTED if result.promoted else REFUSED,
        "alias": result.alias,
        "over": result.over,
        "candidate": result.candidate,
        "incumbent": result.incumbent,
        "metric": result.metric,
        "values": result.values,
        "margin": result.margin,
        "dataset": result.dataset,
        "split": result.split,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for version in versions:
        tracking.set_version_tags(
            uri, name, version, {record.promote_key(result.alias): json.dumps(doc)}
        )


def _say(config: PromoteConfig, message: str) -> None:
    if not config.quiet:
        print(f"mnad promote: {message}", flush=True)


__all__ = ["PROMOTED", "REFUSED", "PromoteResult", "run_promote"]
