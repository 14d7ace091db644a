"""`mnad run SPEC.yaml`: run a job's stages in turn, each skipped when complete (driver).

For each stage: ask the stage whether its outputs are complete (``completion(config)``),
decide (:func:`pipelines.spec.plan.decide`), run it or read its result back, and hand its
typed result to the next stage. The training run is named ``NAME-<fingerprint>``, the
fingerprint hashing what decides the model (``pipelines.train.run_identity``), so a changed
spec trains a new run and an unchanged one finds its model.

The registry cycle, when the spec has ``evaluate`` and ``promote`` sections: the version that
training registered (or the section's ``model``) is evaluated on DATA (skipped when the version
carries that evaluation already), then the promotion is decided (every time: a decision on
the registry as it is now), then scoring runs, by default with the alias the promotion is
about (``models:/<name>@champion``): production scores with the champion, whichever version
that is after the decision. A refused promotion does not stop the job (the champion it left
in place still scores) but makes it exit with status 1, the reason printed last in one line
(on stderr) after the comparison is recorded on both versions. Scores go to
``SCORES/<model>-v<version>/<memory>/``: the model is found in the registry (not
downloaded) to pin its version, since an alias moves and a version does not.

Ray is joined when a stage first needs it (a job whose stages are all complete starts
none): $RAY_ADDRESS (set for a driver that `ray job submit` started), else the cluster that
`ray start` began on this machine, else a new local Ray (``--address`` chooses). On a
running cluster, training and scoring first ask the autoscaler for the nodes their workers
and actors need and wait for them (``--wait-for-nodes``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from pipelines import evaluate, ingest, score, stage, storage, synth, train
from pipelines.errors import OptionError
from pipelines.evaluate.completion import evaluate_completion, promote_completion, promote_scores
from pipelines.evaluate.evaluate import scores_folder
from pipelines.options import hidden, option
from pipelines.ray_cluster import RaySession
from pipelines.spec.parse import STAGES, JobSpec, load_spec
from pipelines.spec.plan import decide
from pipelines.spec.result import JobResult, StageOutcome, format_result, refusal
from pipelines.stage import Completion

Say = Callable[[str], None]


@dataclass
class RunSpecConfig:
    """Options of `mnad run`."""

    spec: str = option("the job's YAML spec (see examples/)", positional=True, path=True)
    quiet: bool = option("print only errors and the result", default=False, execution=True)
    json: bool = option(
        "print the result as one JSON object on stdout (progress goes to stderr)",
        default=False,
        execution=True,
    )
    force: tuple[str, ...] = option(
        f"stages to run again even if complete: {', '.join(STAGES)}", default=()
    )
    address: str | None = option(
        "Ray cluster: an address, auto, or local (default: $RAY_ADDRESS, else the cluster "
        "`ray start` began on this machine, else a new local Ray)",
        default=None,
        execution=True,
    )
    wait_for_nodes: float = option(
        "on an existing cluster, seconds to wait for its autoscaler to add the nodes that "
        "training and scoring need (0: do not wait)",
        default=900.0,
        execution=True,
    )
    probe: Any = hidden()
    """Passed to ``TrainConfig.probe`` (tests: where each training worker runs)."""

    def __post_init__(self) -> None:
        if not self.spec:
            raise OptionError("spec", "SPEC is empty")
        self.force = tuple(self.force)
        unknown = sorted(set(self.force) - set(STAGES))
        if unknown:
            raise OptionError(
                "force", f"--force {unknown[0]}: not a stage; stages are {', '.join(STAGES)}"
            )
        if self.wait_for_nodes < 0:
            raise OptionError(
                "wait_for_nodes", f"--wait-for-nodes must be >= 0, not {self.wait_for_nodes}"
            )


def run_spec(config: RunSpecConfig) -> JobResult:
    """Run the job of ``config.spec`` and print its result (see the module docstring)."""
    spec = load_spec(config.spec, quiet=config.quiet)
    progress = sys.stderr if config.json else sys.stdout

    def say(message: str) -> None:
        if not config.quiet:
            print(f"mnad run: {message}", file=progress, flush=True)

    with (
        contextlib.redirect_stdout(progress),
        RaySession(config.address, config.quiet, log_to_driver=False) as ray_,
    ):
        result = run_job(spec, config, say, ray_)
    if config.json:
        print(json.dumps(result.to_json(), default=str), flush=True)
    else:
        print(format_result(result), flush=True)
    if result.refused:
        print(f"mnad run: promotion refused: {result.refused}", file=sys.stderr, flush=True)
    return result


def run_job(
    spec: JobSpec, config: RunSpecConfig, say: Say, ray_: RaySession | None = None
) -> JobResult:
    """Run the stages of ``spec`` in turn. ``ray_`` is joined when a stage first needs it
    (without one, each stage uses the Ray this process is connected to or starts its own)."""
    for location in (spec.ingest.source, spec.output, spec.score_out):
        storage.check_reachable(location)  # one line naming an unreachable store, first
    job = _Job(config, say, ray_)
    t0 = time.perf_counter()
    outcomes: list[StageOutcome] = []
    if spec.synth is not None:
        what = f"a synthetic data set ({spec.synth.size}) -> {spec.synth.out}"
        outcomes.append(job.stage("synth", spec.synth, what=what))
    ingested = job.stage("ingest", spec.ingest, what=f"{spec.ingest.source} -> {spec.ingest.out}")
    outcomes.append(ingested)
    registered = None
    if spec.train is not None:
        config = job.train_config(spec)
        trained = job.stage("train", config, what=f"run {config.name}")
        outcomes.append(trained)
        registered = trained.result.model_uri
    if spec.evaluate is not None:
        outcomes.append(job.evaluate(spec, spec.evaluate_model or registered))
    refused, model = None, spec.score_model or registered
    if spec.promote is not None:
        promoted = job.promote(spec, spec.promote_model or registered)
        outcomes.append(promoted)
        decision = promoted.result
        refused = None if decision.promoted else refusal(decision)
        model = spec.score_model or f"{decision.candidate.rsplit('/', 1)[0]}@{decision.alias}"
    assert model is not None  # parse_spec: score.model is required without train or promote
    outcomes.extend(job.scores(spec, model))
    failed_inputs = getattr(ingested.result, "exit_status", 0)
    return JobResult(
        spec=spec.path,
        name=spec.name,
        tracking_uri=spec.tracking_uri,
        data=spec.ingest.out,
        seconds=time.perf_counter() - t0,
        stages=tuple(outcomes),
        exit_status=failed_inputs or (1 if refused else 0),
        refused=refused,
    )


class _Stage(NamedTuple):
    """A stage package's contract, as the orchestrator uses it."""

    completion: Callable[[Any], Completion]
    run: Callable[[Any], Any]
    discard: Callable[[Any], None] | None
    needs_ray: bool | Callable[[Any], bool]  # or: whether this config of the stage does


def _discard_evaluation(config: evaluate.EvaluateConfig) -> None:
    """``--force evaluate``: the scores of the earlier evaluation go, so it is scored again."""
    if config.out:
        storage.delete_tree(config.out)


_STAGES = {
    "synth": _Stage(synth.completion, synth.synthesize, None, needs_ray=False),
    "ingest": _Stage(ingest.completion, ingest.run_ingest, None, needs_ray=True),
    "train": _Stage(train.completion, train.run_train, train.discard, needs_ray=True),
    "evaluate": _Stage(evaluate_completion, evaluate.run_evaluate, _discard_evaluation, True),
    "promote": _Stage(promote_completion, evaluate.run_promote, None, needs_ray=promote_scores),
    "score": _Stage(score.completion, score.run_score, score.discard, needs_ray=True),
}


class _Job:
    """One job's stages: completion, decision, run, outcome."""

    def __init__(self, config: RunSpecConfig, say: Say, ray_: RaySession | None) -> None:
        self.config, self.say, self.ray_ = config, say, ray_

    def stage(self, name: str, config: Any, label: str = "", what: str = "") -> StageOutcome:
        """Run the stage ``name`` on ``config`` unless its outputs are complete; ``label``
        and ``what`` name it and its work in the progress lines."""
        ops, label = _STAGES[name], label or name
        t0 = time.perf_counter()
        completion = ops.completion(config)
        step = decide(completion, name in self.config.force)
        if step.action == "skip":
            self.say(f"{label}: skipped, {step.reason}")
            return StageOutcome(name, "skipped", time.perf_counter() - t0, completion.result)
        if step.action == "fresh" and ops.discard is not None:
            ops.discard(config)
        resume = step.action == "resume"
        self.say(f"{label}: {'resuming' if resume else 'running'} {what} ({step.reason})")
        needs_ray = ops.needs_ray(config) if callable(ops.needs_ray) else ops.needs_ray
        if needs_ray and self.ray_ is not None:
            self.ray_.ensure()
        if name in ("train", "score"):  # they ask a cluster that can grow for their nodes
            grows = self.ray_ is not None and self.ray_.can_grow
            wait = self.config.wait_for_nodes if grows else 0.0
            config = dataclasses.replace(config, wait_for_nodes=wait)
        if name == "train":
            config = dataclasses.replace(config, resume=resume)
        result = ops.run(config)
        status = "resumed" if resume else "ran"
        return StageOutcome(name, status, time.perf_counter() - t0, result)

    def train_config(self, spec: JobSpec) -> train.TrainConfig:
        """The spec's training config, named by what decides the model it makes."""
        assert spec.train is not None
        name = f"{spec.name}-{stage.fingerprint(train.run_identity(spec.train))}"
        return dataclasses.replace(spec.train, name=name, probe=self.config.probe)

    def evaluate(self, spec: JobSpec, model: str | None) -> StageOutcome:
        """The evaluation of ``model``'s version (pinned now) on DATA, its scores under the
        job's evaluations, in the folder a promotion would evaluate it in too."""
        from pipelines.data import read_summary

        assert spec.evaluate is not None and model  # parse_spec: a model or a train section
        ref = evaluate.pinned_version(model, spec.tracking_uri)
        config = spec.evaluate
        dataset = read_summary(config.data).dataset
        out = config.out or scores_folder(
            spec.evaluations, str(ref.name), str(ref.version), dataset, config.split
        )
        config = dataclasses.replace(config, model=ref.pinned, out=out)
        what = f"{ref.pinned} on {dataset} {config.split} -> {out}"
        return self.stage("evaluate", config, what=what)

    def promote(self, spec: JobSpec, model: str | None) -> StageOutcome:
        """The decision on ``model``'s version (pinned now) for the spec's alias."""
        assert spec.promote is not None and model  # parse_spec: a model or a train section
        ref = evaluate.pinned_version(model, spec.tracking_uri)
        config = dataclasses.replace(spec.promote, model=ref.pinned)
        what = f"{ref.pinned} for {config.alias} over {config.incumbent_alias}"
        return self.stage("promote", config, what=what)

    def scores(self, spec: JobSpec, model: str) -> list[StageOutcome]:
        """One scoring stage per memory mode, on the model's pinned version (found, not
        downloaded: each scoring actor fetches the model itself)."""
        from pipelines.tracking import find_model

        ref = find_model(model, spec.tracking_uri)
        if ref.name and ref.version:
            key = f"{ref.name}-v{ref.version}"
        else:
            key = f"model-{stage.fingerprint({'model': model})}"
        outcomes = []
        for base in spec.score:
            out = storage.join(spec.score_out, key, base.memory)
            config = dataclasses.replace(base, model=ref.pinned, out=out)
            label, what = f"score ({config.memory})", f"{ref.pinned} on {config.data} -> {out}"
            outcomes.append(self.stage("score", config, label, what))
        return outcomes


__all__ = ["RunSpecConfig", "run_job", "run_spec"]
