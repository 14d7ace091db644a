"""What `mnad run` did, stage by stage: the typed results, as JSON and as lines for a person."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StageOutcome:
    """What one stage did (``ran``, ``resumed`` or ``skipped``) and its typed result."""

    stage: str
    status: str
    seconds: float
    result: Any  # SynthResult, IngestResult, TrainResult, EvaluateResult, PromoteResult...

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "seconds": round(self.seconds, 1), **self.result.to_json()}


@dataclass(frozen=True)
class JobResult:
    """What ``run_spec`` did; ``to_json`` is what ``--json`` prints."""

    spec: str
    name: str
    tracking_uri: str
    data: str
    seconds: float
    stages: tuple[StageOutcome, ...]
    exit_status: int
    refused: str | None = None  # why the promotion was refused, in one line

    def stage(self, name: str) -> list[StageOutcome]:
        return [s for s in self.stages if s.stage == name]

    @property
    def ui_command(self) -> str:
        return f"mnad ui --tracking-uri {self.tracking_uri}"

    @property
    def status(self) -> str:
        """``ok``; ``promotion_refused`` (the alias was left); ``failed_inputs`` (some input
        could not be ingested, whatever else happened)."""
        if self.exit_status == 0:
            return "ok"
        return "promotion_refused" if self.refused and self._ingested_all else "failed_inputs"

    @property
    def _ingested_all(self) -> bool:
        return all(getattr(s.result, "exit_status", 0) == 0 for s in self.stage("ingest"))

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "spec": self.spec,
            "name": self.name,
            "status": self.status,
            "exit_status": self.exit_status,
            "tracking_uri": self.tracking_uri,
            "ui": self.ui_command,
            "data": self.data,
            "seconds": round(self.seconds, 1),
        }
        if self.refused:
            doc["refused"] = self.refused
        for outcome in self.stages:
            if outcome.stage == "score":
                doc.setdefault("score", []).append(outcome.to_json())
            else:
                doc[outcome.stage] = outcome.to_json()
        return doc


_METRICS = (("micro_auc", "AUC"), ("macro_auc", "macro AUC"), ("eer", "EER"))


def format_result(result: JobResult) -> str:
    """The result as a few lines for a person."""
    lines = [f"mnad run: {result.name} finished in {_duration(result.seconds)} ({result.spec})"]
    for outcome in result.stages:
        r = outcome.result
        if outcome.stage == "ingest":
            extra = f", {len(r.failed)} video(s) failed" if r.failed else ""
            lines.append(f"  data     {r.data} ({outcome.status}{extra})")
        elif outcome.stage == "train":
            lines.append(
                f"  model    {r.model_uri} ({outcome.status}; run {r.name}, MLflow run {r.run_id})"
            )
        elif outcome.stage == "evaluate":
            aucs = ", ".join(f"{name} {r.metrics[k]:.4f}" for k, name in _METRICS if k in r.metrics)
            lines.append(f"  evaluate {r.model_uri} on {r.dataset} {r.split}: {aucs} "
                         f"({outcome.status})")  # fmt: skip
        elif outcome.stage == "promote":
            lines.append(f"  promote  {_decision(r)} ({outcome.status})")
        elif outcome.stage == "score":
            metrics = r.metrics
            aucs = ", ".join(f"{name} {metrics[k]:.4f}" for k, name in _METRICS if k in metrics)
            lines.append(f"  scores   {r.memory}: {aucs or 'no labels'} ({outcome.status})")
            lines.append(f"           {r.out}")
            if r.report:
                lines.append(f"  report   {r.report}")
    lines.append(f"  MLflow   {result.ui_command}")
    return "\n".join(lines)


def refusal(result: Any) -> str:
    """A refused promotion (a ``PromoteResult``) in one line: both values, by how much."""
    values = result.values
    return (
        f"{result.candidate} {result.metric} {values['candidate']:.4f} is short of "
        f"{values['incumbent']:.4f} of {result.over} ({result.incumbent}) on {result.dataset} "
        f"{result.split} by {-result.margin:.4f}; {result.alias} left on {result.incumbent}"
    )


def _decision(r: Any) -> str:
    """What a promotion decided, for the result's lines."""
    if not r.promoted:
        return f"{r.alias} left on {r.incumbent}: {r.candidate} refused"
    if r.margin is None:
        return f"{r.alias} -> {r.candidate} (nothing to compare)"
    return f"{r.alias} -> {r.candidate} ({r.metric} ahead of {r.incumbent} by {r.margin:.4f})"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


__all__ = ["JobResult", "StageOutcome", "format_result", "refusal"]
