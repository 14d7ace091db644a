"""The registry workflow's contracts in: :class:`EvaluateConfig` (`mnad evaluate`) and
:class:`PromoteConfig` (`mnad promote`) (driver)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pipelines.errors import OptionError
from pipelines.evaluate.record import METRICS, Metric
from pipelines.options import option

EVALUATIONS = "mnad-evaluations"
"""The folder under which an evaluation's scores go by default, one folder per version, data
set and split."""

_ALIAS = re.compile(r"^[\w\-]+$")


@dataclass(frozen=True)
class EvaluateConfig:
    """Which registered version to measure on which labelled split."""

    model: str = option(
        "registered model version: models:/mnad-ped2@champion or models:/mnad-ped2/3 (an "
        "alias is pinned to its version first)",
        positional=True,
    )
    data: str = option("DATA folder written by mnad ingest, labelled", positional=True, path=True)
    split: Literal["test", "train"] = option("split to evaluate on", default="test")
    out: str | None = option(
        f"SCORES folder (default: {EVALUATIONS}/<name>-<version>-<dataset>-<split>); complete "
        "scores of the same version there are reused",
        default=None,
        path=True,
    )
    report: bool = option("write the scores' plots and HTML report", default=True)
    tracking_uri: str | None = option(
        "MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mnad-runs)", default=None
    )
    actors: int = option("scoring actors (0: one per CPU)", default=0, execution=True)
    gpus_per_actor: float = option(
        "GPUs each scoring actor reserves; > 0 scores on GPUs (CUDA)", default=0.0, execution=True
    )
    quiet: bool = option("print only errors and the result", default=False, execution=True)

    def __post_init__(self) -> None:
        _check_execution(self.actors, self.gpus_per_actor)


@dataclass(frozen=True)
class PromoteConfig:
    """Which version should hold which alias, and what it must measure up to."""

    model: str = option(
        "registered model version to promote: models:/mnad-ped2/5 (an alias is pinned to "
        "its version first)",
        positional=True,
    )
    alias: str = option("the alias to move to MODEL's version (e.g. champion)")
    over: str | None = option(
        "the alias whose version MODEL must measure at least as well as (default: --alias)",
        default=None,
    )
    on: str | None = option(
        "labelled DATA folder to evaluate a version on when it has no evaluation recorded for "
        "that data set and split (as `mnad evaluate` does)",
        default=None,
        path=True,
    )
    dataset: str | None = option(
        "the data set whose recorded evaluations are compared (default: that of --on, else "
        "the one MODEL has an evaluation of)",
        default=None,
    )
    split: Literal["test", "train"] = option("split the evaluations are of", default="test")
    metric: Metric = option(
        "the metric compared (higher is better; for eer, lower)", default="micro_auc"
    )
    out: str = option(
        "folder under which an evaluation run here writes its scores, one folder per version",
        default=EVALUATIONS,
        path=True,
    )
    report: bool = option("write an evaluation's plots and HTML report", default=True)
    tracking_uri: str | None = option(
        "MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mnad-runs)", default=None
    )
    actors: int = option("scoring actors (0: one per CPU)", default=0, execution=True)
    gpus_per_actor: float = option(
        "GPUs each scoring actor reserves; > 0 scores on GPUs (CUDA)", default=0.0, execution=True
    )
    quiet: bool = option("print only errors and the result", default=False, execution=True)

    def __post_init__(self) -> None:
        for name in ("alias", "over"):
            value = getattr(self, name)
            if value is None and name == "over":
                continue
            if not _ALIAS.match(value or ""):
                raise OptionError(
                    name, f"--{name} {value!r}: letters, digits, underscores and dashes only"
                )
            if value.lower() == "latest" or re.fullmatch(r"[vV]\d+", value):
                raise OptionError(
                    name, f"--{name} {value}: MLflow reserves 'latest' and v<N> for itself"
                )
        if self.metric not in METRICS:
            raise OptionError(
                "metric", f"--metric must be one of {', '.join(METRICS)}, not {self.metric!r}"
            )
        _check_execution(self.actors, self.gpus_per_actor)

    @property
    def incumbent_alias(self) -> str:
        """The alias whose version is measured against: ``over``, else ``alias``."""
        return self.over or self.alias


def _check_execution(actors: int, gpus_per_actor: float) -> None:
    if actors < 0:
        raise OptionError("actors", f"--actors must be >= 0, not {actors}")
    if not gpus_per_actor >= 0:
        raise OptionError("gpus_per_actor", f"--gpus-per-actor must be >= 0, not {gpus_per_actor}")


__all__ = ["EVALUATIONS", "EvaluateConfig", "PromoteConfig"]
