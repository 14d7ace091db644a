"""The score stage's contract in: :class:`ScoreConfig`, the options of `mnad score` and of a
spec's ``score`` entries (driver).

Each field is declared with :func:`pipelines.options.option`: ``data`` is positional, the
three locations are paths (a spec resolves them against its folder and keeps URIs as they
are: ``models:/``, ``runs:/``, ``s3://``), and what changes only how the job executes (the
actors, their GPUs, the logging) is execution-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mnad.calibration import DEFAULT_FALSE_ALARM_RATE
from pipelines.errors import OptionError
from pipelines.options import option

MemoryMode = Literal["paper", "per-video"]
Normalise = Literal["auto", "calibrated", "per-video"]
NORMALISE = ("auto", "calibrated", "per-video")


@dataclass(frozen=True)
class ScoreConfig:
    """What to score, with which model, and where the scores go."""

    data: str = option("DATA folder written by mnad ingest", positional=True, path=True)
    model: str = option(
        "registered model URI (models:/mnad-ped2@latest), runs:/ URI, or a checkpoint folder "
        "(e.g. from mnad train or mnad import-paper)",
        path=True,
    )
    out: str = option("SCORES folder to write", path=True)
    memory: MemoryMode = option(
        "per-video: reset memory at each video (parallel); paper: carry it", default="per-video"
    )
    granularity: Literal["frame", "batch"] = option(
        "test-time memory update after every frame (paper) or every batch", default="frame"
    )
    normalise: Normalise = option(
        "score on the model's calibration (calibrated: comparable across videos, streams) "
        "or by each video's min and max (per-video: the paper's evaluation); auto: "
        "calibrated when the model has a calibration. Both are written when it has one",
        default="auto",
    )
    false_alarm_rate: float = option(
        "share of normal frames over the events' threshold, chosen on the calibration footage",
        default=DEFAULT_FALSE_ALARM_RATE,
    )
    smooth: int | None = option(
        "frames the score is averaged over (a trailing mean: no later frame is read; 1: none; "
        "default: the model's, from its preset)",
        default=None,
    )
    merge_gap: float = option(
        "seconds between two runs over the threshold that still make one event", default=1.0
    )
    segment_seconds: float = option(
        "in calibrated mode with per-video memory, a video longer than this (seconds) is "
        "scored as segments of about this length by parallel actors, the memory reset to the "
        "trained one at each segment's start (so its scores differ slightly from scoring it "
        "whole); per-video normalisation and paper memory keep videos whole (0: never)",
        default=0.0,
    )
    split: Literal["test", "train"] = option("split to score", default="test")
    videos: tuple[str, ...] = option(
        "score only these videos of the split (default: all)", default=()
    )
    batch_size: int = option("clips per batched forward pass", default=32)
    actors: int = option(
        "scoring actors in per-video mode (0: one per CPU, or per GPU)",
        default=0,
        execution=True,
    )
    gpus_per_actor: float = option(
        "GPUs each scoring actor reserves; > 0 scores on GPUs (CUDA)",
        default=0.0,
        execution=True,
    )
    precision: Literal["fp32", "bf16"] = option(
        "fp32: the paper's numbers; bf16: convolutions under bfloat16 autocast "
        "(faster on GPUs and bf16 CPUs; scores differ slightly)",
        default="fp32",
    )
    experiment: str | None = option("MLflow experiment (default: the dataset name)", default=None)
    tracking_uri: str | None = option(
        "MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mnad-runs)", default=None
    )
    report: bool = option("write the plots and HTML report", default=True)
    quiet: bool = option("print only errors and the result", default=False, execution=True)
    wait_for_nodes: float = option(
        "on a running cluster that can grow, seconds to wait for its autoscaler to add the "
        "nodes the actors need (GPU nodes of a cluster scaled to zero; 0: do not wait)",
        default=0.0,
        execution=True,
    )

    def __post_init__(self) -> None:
        if self.memory not in ("paper", "per-video"):
            raise OptionError(
                "memory", f"--memory must be 'paper' or 'per-video', not {self.memory!r}"
            )
        if self.granularity not in ("frame", "batch"):
            raise OptionError(
                "granularity",
                f"--granularity must be 'frame' or 'batch', not {self.granularity!r}",
            )
        if self.normalise not in NORMALISE:
            raise OptionError(
                "normalise",
                f"--normalise must be one of {', '.join(NORMALISE)}, not {self.normalise!r}",
            )
        if not 0.0 <= self.false_alarm_rate < 1.0:
            raise OptionError(
                "false_alarm_rate",
                f"--false-alarm-rate must be in [0, 1), not {self.false_alarm_rate}",
            )
        if self.smooth is not None and self.smooth < 1:
            raise OptionError("smooth", f"--smooth must be at least 1 frame, not {self.smooth}")
        if not self.merge_gap >= 0:
            raise OptionError("merge_gap", f"--merge-gap must be >= 0 s, not {self.merge_gap}")
        if not self.segment_seconds >= 0:
            raise OptionError(
                "segment_seconds",
                f"--segment-seconds must be >= 0 s, not {self.segment_seconds}",
            )
        if self.batch_size < 1:
            raise OptionError(
                "batch_size", f"--batch-size must be at least 1, not {self.batch_size}"
            )
        if self.actors < 0:
            raise OptionError("actors", f"--actors must be >= 0, not {self.actors}")
        if not self.wait_for_nodes >= 0:
            raise OptionError(
                "wait_for_nodes", f"--wait-for-nodes must be >= 0, not {self.wait_for_nodes}"
            )
        if not self.gpus_per_actor >= 0:
            raise OptionError(
                "gpus_per_actor", f"--gpus-per-actor must be >= 0, not {self.gpus_per_actor}"
            )
        if self.precision not in ("fp32", "bf16"):
            raise OptionError(
                "precision", f"--precision must be 'fp32' or 'bf16', not {self.precision!r}"
            )


__all__ = ["NORMALISE", "MemoryMode", "Normalise", "ScoreConfig"]
