"""A job's YAML spec into each stage's config (driver; no Ray, no I/O beyond the file).

Each section takes the options of its stage's config (``SynthConfig``, ``IngestConfig``,
``TrainConfig``, ``EvaluateConfig``, ``PromoteConfig``, ``ScoreConfig``) under their field
names and is checked and built by :mod:`pipelines.options`, so the spec and the command line
share one definition and one validation. The keys that wire the stages together (a stage's
input is the previous stage's output; one tracking store, experiment and output folder for
the job) are set by the spec and refused in a section. The models of ``evaluate`` and
``promote`` default to the version that ``train`` registers, and ``promote`` measures on
DATA (``on``) with its evaluations under OUTPUT/evaluations. Relative paths (the fields
marked ``path``) are relative to the spec's folder; URIs (``s3://``, ``gs://``,
``models:/``) are kept. Every error is one line naming the spec file and the key, before any
work starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines import options, storage
from pipelines.errors import OptionError, UserError
from pipelines.evaluate import EvaluateConfig, PromoteConfig
from pipelines.ingest import IngestConfig
from pipelines.score import ScoreConfig
from pipelines.synth import SynthConfig
from pipelines.train import TrainConfig

STAGES = ("synth", "ingest", "train", "evaluate", "promote", "score")
SPEC_KEYS = ("name", "output", "tracking_uri", "experiment", *STAGES)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Keys the spec sets in every section whose config has them, and where the user sets them.
WIRED = {
    "data": "ingest.out",
    "output": "the top-level `output`",
    "name": "the top-level `name`",
    "resume": "nothing: an interrupted run is resumed by itself",
    "tracking_uri": "the top-level `tracking_uri`",
    "experiment": "the top-level `experiment`",
    "wait_for_nodes": "--wait-for-nodes",
    "quiet": "--quiet",
}


class SpecError(UserError):
    """A spec that cannot run, in one line naming the file and the key."""


@dataclass(frozen=True)
class JobSpec:
    """A parsed, validated spec: each stage's config, built once, with paths resolved."""

    path: str  # the spec file
    name: str
    output: str  # absolute folder or URI
    tracking_uri: str
    synth: SynthConfig | None
    ingest: IngestConfig
    train: TrainConfig | None  # None: score ``score_model``
    score: tuple[ScoreConfig, ...]  # one per memory mode; ``model`` and ``out`` set at run time
    score_model: str | None  # the spec's score.model; None: the promoted alias, else train's
    score_out: str  # the scores' root: <score_out>/<model>-v<version>/<memory>
    evaluate: EvaluateConfig | None = None  # ``model`` and ``out`` set at run time
    evaluate_model: str | None = None  # the spec's evaluate.model; None: train's version
    promote: PromoteConfig | None = None  # ``model`` set at run time
    promote_model: str | None = None  # the spec's promote.model; None: train's version
    evaluations: str = ""  # the evaluations' root: <evaluations>/<name>-<version>-<data>-<split>


def load_spec(path: str | os.PathLike[str], quiet: bool = False) -> JobSpec:
    """Read and validate the spec at ``path``; every error is a one-line :class:`SpecError`."""
    import yaml

    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"{where}: cannot read the spec ({err.strerror or err})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise SpecError(f"{where}: not valid YAML{at}: {problem}") from None
    return parse_spec(raw, where, quiet=quiet)


def parse_spec(raw: Any, where: str, quiet: bool = False) -> JobSpec:
    """Build a :class:`JobSpec` from the YAML document ``raw`` of the spec file ``where``."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a spec is a mapping of {', '.join(SPEC_KEYS)}")
    top = _Top(raw, where)
    sections = {stage: top.section(stage) for stage in STAGES}
    if sections["train"] is None:
        # without a trained version, each model must be named (score's may be promote's alias)
        named = [s for s in ("evaluate", "promote") if sections[s] is not None]
        named += [] if sections["promote"] is not None else ["score"]
        for stage in named:
            if not (sections[stage] or {}).get("model"):
                raise SpecError(
                    f"{where}: {stage}.model: required when the spec has no train section"
                )
    job = {
        "tracking_uri": top.tracking_uri,
        "experiment": top.get("experiment"),
        "output": top.output,
        "quiet": quiet,
    }
    section = _Sections(where, top.base, job)
    synth = None if sections["synth"] is None else section.synth(sections["synth"])
    ingest = section.ingest(sections["ingest"] or {}, synth)
    train = None
    if sections["train"] is not None:
        train = section.build(TrainConfig, "train", sections["train"], data=ingest.out)
    scores, score_model, score_out = section.scores(sections["score"] or {}, ingest.out)
    evaluations = storage.join(top.output, "evaluations")
    evaluate = evaluate_model = promote = promote_model = None
    if sections["evaluate"] is not None:
        evaluate, evaluate_model = section.evaluate(sections["evaluate"], ingest.out)
    if sections["promote"] is not None:
        promote, promote_model = section.promote(sections["promote"], ingest.out, evaluations)
    return JobSpec(
        path=str(Path(where).resolve()),
        name=top.name,
        output=top.output,
        tracking_uri=top.tracking_uri,
        synth=synth,
        ingest=ingest,
        train=train,
        score=scores,
        score_model=score_model,
        score_out=score_out,
        evaluate=evaluate,
        evaluate_model=evaluate_model,
        promote=promote,
        promote_model=promote_model,
        evaluations=evaluations,
    )


class _Top:
    """The spec's top-level keys: name, output, tracking store, experiment."""

    def __init__(self, raw: dict[str, Any], where: str) -> None:
        self.raw, self.where = raw, where
        unknown = sorted(set(map(str, raw)) - set(SPEC_KEYS))
        if unknown:
            known = ", ".join(sorted(SPEC_KEYS))
            raise SpecError(f"{where}: {unknown[0]}: unknown key; expected one of {known}")
        self.base = Path(where).resolve().parent
        self.name = self.get("name", required=True)
        if not _NAME.match(self.name):
            raise SpecError(f"{where}: name: {self.name!r}: use letters, digits, '_', '.', '-'")
        self.output = storage.absolute(self.get("output") or f"mnad-runs/{self.name}", self.base)
        self.tracking_uri = self._tracking_uri(self.get("tracking_uri"))

    def get(self, key: str, required: bool = False) -> Any:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise SpecError(f"{self.where}: {key}: required")
            return None
        if not isinstance(value, str) or not value:
            raise SpecError(f"{self.where}: {key}: expected a non-empty string, not {value!r}")
        return value

    def section(self, stage: str) -> dict[str, Any] | None:
        value = self.raw.get(stage)
        if value is not None and not isinstance(value, dict):
            raise SpecError(f"{self.where}: {stage}: expected a mapping of {stage} options")
        return value

    def _tracking_uri(self, value: str | None) -> str:
        """The job's store: the spec's, else $MLFLOW_TRACKING_URI, else OUTPUT/mlflow.db."""
        from pipelines.tracking import resolve_tracking_uri

        if (
            value is None
            and storage.is_uri(self.output)
            and not os.environ.get("MLFLOW_TRACKING_URI")
        ):
            raise SpecError(
                f"{self.where}: tracking_uri: required when output is a URI ({self.output}): "
                "give the MLflow server (http://...) that the cluster's jobs report to"
            )
        default_db = None if storage.is_uri(self.output) else storage.join(self.output, "mlflow.db")
        return resolve_tracking_uri(value, default_db=default_db, base=str(self.base))


class _Sections:
    """Builds each section's config: checked keys, resolved paths, the spec's wiring."""

    def __init__(self, where: str, base: Path, job: Mapping[str, Any]) -> None:
        self.where, self.base, self.job = where, base, job

    def options(self, cls: type, stage: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The section's values, type-checked against ``cls``'s fields, with paths resolved."""
        fields = options.fields(cls)
        wired = {k: v for k, v in WIRED.items() if k in fields}
        for key in raw:
            if key in wired:
                raise SpecError(f"{self.where}: {stage}.{key}: set by the spec; use {wired[key]}")
        try:
            given = options.check_mapping(cls, raw, set(fields) - set(wired))
        except OptionError as err:
            raise SpecError(f"{self.where}: {stage}.{err.field}: {err}") from None
        for key in options.names(cls, "path"):
            if given.get(key) is not None:
                given[key] = storage.absolute(given[key], self.base)
        return given

    def build(self, cls: type, stage: str, raw: Mapping[str, Any], **set_here: Any) -> Any:
        """``cls`` from the section ``raw``, the job's wiring and ``set_here``."""
        given = {**self.options(cls, stage, raw), **set_here}
        fields = options.fields(cls)
        given.update({k: v for k, v in self.job.items() if k in fields and k not in given})
        if stage == "train" and str(given.get("preset", "")).endswith(".json"):
            given["preset"] = storage.absolute(given["preset"], self.base)
        try:
            return options.build(cls, given)
        except OptionError as err:
            at = f"{stage}.{err.field}" if err.field else stage
            raise SpecError(f"{self.where}: {at}: {err}") from None

    def synth(self, raw: Mapping[str, Any]) -> SynthConfig:
        wiring = {} if "out" in raw else {"out": storage.join(self.job["output"], "source")}
        return self.build(SynthConfig, "synth", raw, **wiring)

    def ingest(self, raw: Mapping[str, Any], synth: SynthConfig | None) -> IngestConfig:
        if synth is not None and "source" in raw:
            raise SpecError(
                f"{self.where}: ingest.source: not with a synth section (its out is it)"
            )
        if synth is None and "source" not in raw:
            raise SpecError(
                f"{self.where}: ingest.source: required (a folder or an s3:// / gs:// URI)"
            )
        wiring = {"source": synth.out} if synth is not None else {}
        if "out" not in raw:
            wiring["out"] = storage.join(self.job["output"], "data")
        return self.build(IngestConfig, "ingest", raw, **wiring)

    def evaluate(self, raw: Mapping[str, Any], data: str) -> tuple[EvaluateConfig, str | None]:
        """The evaluation of a version on DATA; the spec's model (if any)."""
        given = self.options(EvaluateConfig, "evaluate", raw)
        model = given.pop("model", None)
        config = self.build(EvaluateConfig, "evaluate", {}, **given, data=data, model=model or "")
        return config, model

    def promote(
        self, raw: Mapping[str, Any], data: str, evaluations: str
    ) -> tuple[PromoteConfig, str | None]:
        """The promotion, measured on DATA unless ``on`` names other labelled data, its
        evaluations under ``evaluations``; the spec's model (if any)."""
        if "alias" not in raw:
            raise SpecError(f"{self.where}: promote.alias: required (the alias to move, e.g. "
                            "champion)")  # fmt: skip
        given = self.options(PromoteConfig, "promote", raw)
        model = given.pop("model", None)
        given.setdefault("on", data)
        given.setdefault("out", evaluations)
        config = self.build(PromoteConfig, "promote", {}, **given, model=model or "")
        return config, model

    def scores(
        self, raw: Mapping[str, Any], data: str
    ) -> tuple[tuple[ScoreConfig, ...], str | None, str]:
        """One ScoreConfig per memory mode; the spec's model (if any) and the scores' root."""
        raw = dict(raw)
        memory = raw.pop("memory", ["per-video"])
        modes = [memory] if isinstance(memory, str) else memory
        if not isinstance(modes, list) or not modes or len(set(modes)) != len(modes):
            raise SpecError(f"{self.where}: score.memory: a mode or a list of distinct modes")
        given = self.options(ScoreConfig, "score", raw)
        model = given.pop("model", None)
        out = given.pop("out", storage.join(self.job["output"], "scores"))
        configs = []
        for mode in modes:
            try:
                mode = options.check_value(ScoreConfig, "memory", mode)
            except OptionError as err:
                raise SpecError(f"{self.where}: score.memory: {err}") from None
            set_here = {**given, "data": data, "model": model or "", "out": out, "memory": mode}
            configs.append(self.build(ScoreConfig, "score", {}, **set_here))
        return tuple(configs), model, out


__all__ = ["STAGES", "JobSpec", "SpecError", "load_spec", "parse_spec"]
