"""The calibrate stage's contract in: :class:`CalibrateConfig`, the options of
`mnad calibrate` (driver)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mnad.calibration import DEFAULT_FALSE_ALARM_RATE, check_rate
from pipelines.errors import OptionError
from pipelines.options import option


@dataclass(frozen=True)
class CalibrateConfig:
    """Which model to calibrate on which normal footage, and where its scores go."""

    model: str = option(
        "registered model URI (models:/mnad-ped2@champion) or a checkpoint folder",
        positional=True,
        path=True,
    )
    data: str = option("DATA folder written by mnad ingest", positional=True, path=True)
    out: str = option(
        "folder (or s3:// URI) for the calibration footage's scores",
        default="mnad-calibration",
        path=True,
    )
    split: Literal["test", "train"] = option(
        "split whose videos are normal footage", default="train"
    )
    videos: tuple[str, ...] = option(
        "the normal videos to calibrate on (default: the videos the model's training run "
        "held out, else every video of the split)",
        default=(),
    )
    false_alarm_rate: float = option(
        "target share of normal frames over the threshold, for the figures reported and "
        "the registry's tags (scoring chooses its own)",
        default=DEFAULT_FALSE_ALARM_RATE,
    )
    tracking_uri: str | None = option(
        "MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mnad-runs)", default=None
    )
    actors: int = option("scoring actors (0: one per CPU)", default=0, execution=True)
    quiet: bool = option("print only errors and the result", default=False, execution=True)

    def __post_init__(self) -> None:
        try:
            check_rate(self.false_alarm_rate)
        except ValueError as err:
            raise OptionError("false_alarm_rate", f"--false-alarm-rate: {err}") from None
        if self.actors < 0:
            raise OptionError("actors", f"--actors must be >= 0, not {self.actors}")


__all__ = ["CalibrateConfig"]
