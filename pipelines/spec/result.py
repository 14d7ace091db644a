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
    result: Any  # SynthResult, IngestResult, TrainResult or ScoreResult

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

    def stage(self, name: str) -> list[StageOutcome]:
        return [s for s in self.stages if s.stage == name]

    @property
    def ui_command(self) -> str:
        return f"mnad ui --tracking-uri {self.tracking_uri}"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "spec": self.spec,
            "name": self.name,
            "status": "ok" if self.exit_status == 0 else "failed_inputs",
            "exit_status": self.exit_status,
            "tracking_uri": self.tracking_uri,
            "ui": self.ui_command,
            "data": self.data,
            "seconds": round(self.seconds, 1),
        }
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
        elif outcome.stage == "score":
            metrics = r.metrics
            aucs = ", ".join(f"{name} {metrics[k]:.4f}" for k, name in _METRICS if k in metrics)
            lines.append(f"  scores   {r.memory}: {aucs or 'no labels'} ({outcome.status})")
            lines.append(f"           {r.out}")
            if r.report:
                lines.append(f"  report   {r.report}")
    lines.append(f"  MLflow   {result.ui_command}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


__all__ = ["JobResult", "StageOutcome", "format_result"]
