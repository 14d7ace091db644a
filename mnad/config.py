"""Model and optimisation configs, with the paper's settings as named presets.

A config is built once at the edge (command line, spec file, checkpoint) and passed down
whole. Every field is validated on construction; a bad value raises ``UserError`` naming the
field, the value and what is allowed. The field docstrings (``metadata["help"]``) double as
``--help`` text.

Presets (Park, Noh, Ham, CVPR 2020, Sec. 4.1 and the authors' ``Train.py`` defaults):

- ``paper-pred``: 256x256, 3 channels, 4 input frames, memory 10x512, lambda_c = lambda_s = 0.1,
  alpha = 0.6, test-time threshold 0.01, Adam 2e-4 with cosine annealing, batch 4, 60 epochs.
- ``paper-recon``: the reconstruction variant: 1 input frame, lambda = 0.01 / 0.01,
  alpha = 0.7, threshold 0.015.
- ``small``: the CPU preset: 96x96 grey frames, a quarter of the paper's widths, batch 8,
  15 epochs and scores smoothed over 9 frames, so that it trains past 0.93 frame AUC on UCSD
  Ped2 (mean of 3 seeds) in under a quarter of an hour on 2 cores. A study of one variable at
  a time set it (docs/results.md): 15 epochs and the smoothing moved the AUC most; 128x128 and
  3 channels moved it by less than 0.005 at 10 epochs.
- ``medium``: ``small`` at 128x128 for 30 epochs, about an hour of training on 2 cores (or
  minutes on a GPU).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from mnad.errors import UserError

Task = Literal["pred", "recon"]
ChannelOrder = Literal["rgb", "bgr"]

#: The encoder's widths at width multiplier 1 (the paper's): stage 1..4.
PAPER_WIDTHS = (64, 128, 256, 512)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the network's shape, its losses, its test-time scoring and the
    frames it takes (size, channels, channel order)."""

    task: Task = field(
        default="pred",
        metadata=dict(help="pred: predict frame t from t-1 frames; recon: rebuild it"),
    )
    height: int = field(default=256, metadata=dict(help="input height in pixels (divisible by 8)"))
    width: int = field(default=256, metadata=dict(help="input width in pixels (divisible by 8)"))
    channels: int = field(default=3, metadata=dict(help="image channels: 1 (grey) or 3"))
    channel_order: ChannelOrder = field(
        default="rgb",
        metadata=dict(
            help="order of the 3 colour channels the model takes: rgb (as ingest decodes) "
            "or bgr (OpenCV's, for a model trained by the paper's code)"
        ),
    )
    input_frames: int = field(
        default=4, metadata=dict(help="frames stacked as input: t-1 = 4 for pred, 1 for recon")
    )
    width_mult: float = field(
        default=1.0, metadata=dict(help="multiplier on the widths 64, 128, 256, 512")
    )
    memory_size: int = field(default=10, metadata=dict(help="number of memory items M"))
    lambda_compact: float = field(default=0.1, metadata=dict(help="weight of the compactness loss"))
    lambda_separate: float = field(
        default=0.1, metadata=dict(help="weight of the separateness loss")
    )
    alpha: float = field(
        default=0.6, metadata=dict(help="weight of PSNR against feature distance in the score")
    )
    update_threshold: float = field(
        default=0.01, metadata=dict(help="test-time memory update when the weighted error is below")
    )
    smooth: int = field(
        default=1,
        metadata=dict(
            help="frames `mnad score` averages the abnormality over by default (a trailing "
            "mean, no later frame read; 1: none, as the paper)"
        ),
    )

    def __post_init__(self) -> None:
        if self.task not in ("pred", "recon"):
            raise UserError(f"task must be 'pred' or 'recon', not {self.task!r}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 8 or value % 8:
                raise UserError(f"{name} must be a positive multiple of 8, not {value!r}")
        if self.channels not in (1, 3):
            raise UserError(f"channels must be 1 or 3, not {self.channels!r}")
        if not isinstance(self.smooth, int) or self.smooth < 1:
            raise UserError(f"smooth must be a whole number of frames >= 1, not {self.smooth!r}")
        if self.channel_order not in ("rgb", "bgr"):
            raise UserError(f"channel_order must be 'rgb' or 'bgr', not {self.channel_order!r}")
        if self.channel_order == "bgr" and self.channels != 3:
            raise UserError(f"channel_order 'bgr' needs 3 channels, not {self.channels}")
        if not isinstance(self.input_frames, int) or self.input_frames < 1:
            raise UserError(f"input_frames must be a positive integer, not {self.input_frames!r}")
        if self.task == "recon" and self.input_frames != 1:
            raise UserError(
                f"the recon task takes 1 input frame, not input_frames={self.input_frames}"
            )
        if not self.width_mult > 0 or min(self.widths) < 1:
            raise UserError(f"width_mult must give widths of at least 1, not {self.width_mult!r}")
        if not isinstance(self.memory_size, int) or self.memory_size < 2:
            raise UserError(
                f"memory_size must be at least 2 (separateness needs two items), "
                f"not {self.memory_size!r}"
            )
        for name in ("lambda_compact", "lambda_separate", "update_threshold"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, not {getattr(self, name)!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"alpha must lie in [0, 1], not {self.alpha!r}")

    @property
    def widths(self) -> tuple[int, int, int, int]:
        """Encoder widths of stages 1..4 (the decoder mirrors them)."""
        w = tuple(max(1, round(c * self.width_mult)) for c in PAPER_WIDTHS)
        return w  # type: ignore[return-value]

    @property
    def feature_dim(self) -> int:
        """Dimension C of a query and of a memory item: the last encoder width."""
        return self.widths[3]

    @property
    def clip_length(self) -> int:
        """Frames a training clip holds: the inputs plus the target for pred."""
        return self.input_frames + 1 if self.task == "pred" else 1


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation: Adam with cosine annealing per epoch, as the paper's ``Train.py``."""

    lr: float = field(default=2e-4, metadata=dict(help="Adam learning rate"))
    batch_size: int = field(default=4, metadata=dict(help="clips per optimisation step (global)"))
    epochs: int = field(default=60, metadata=dict(help="training epochs"))
    seed: int = field(default=0, metadata=dict(help="seed of weights, memory and clip order"))

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, not {self.lr!r}")
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, not {value!r}")


@dataclass(frozen=True)
class Preset:
    """A named pair of model and optimisation configs."""

    name: str
    model: ModelConfig
    optim: OptimConfig

    def to_dict(self) -> dict[str, Any]:
        """The preset as plain values. ``channel_order`` is left out when it is the default
        rgb, and ``smooth`` when it is 1, so the config (and a run's identity) of such a
        model reads as it did before the field existed; a config without them loads as rgb
        and 1."""
        model = dataclasses.asdict(self.model)
        if model["channel_order"] == "rgb":
            del model["channel_order"]
        if model["smooth"] == 1:
            del model["smooth"]
        return {"name": self.name, "model": model, "optim": dataclasses.asdict(self.optim)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        try:
            return cls(
                name=str(data["name"]),
                model=_build(ModelConfig, data["model"]),
                optim=_build(OptimConfig, data["optim"]),
            )
        except KeyError as err:
            raise UserError(f"config lacks the section {err.args[0]!r}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Preset:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> Preset:
        """A copy with fields of either section changed, e.g. ``replace(epochs=3)``."""
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        optim_fields = {f.name for f in dataclasses.fields(OptimConfig)}
        unknown = set(changes) - model_fields - optim_fields
        if unknown:
            raise UserError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        model = dataclasses.replace(
            self.model, **{k: v for k, v in changes.items() if k in model_fields}
        )
        optim = dataclasses.replace(
            self.optim, **{k: v for k, v in changes.items() if k in optim_fields}
        )
        return Preset(self.name, model, optim)


def _build(cls: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise UserError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    return cls(**values)


PRESETS: dict[str, Preset] = {
    "paper-pred": Preset(
        "paper-pred",
        ModelConfig(task="pred", height=256, width=256, channels=3, input_frames=4),
        OptimConfig(lr=2e-4, batch_size=4, epochs=60),
    ),
    "paper-recon": Preset(
        "paper-recon",
        ModelConfig(
            task="recon",
            height=256,
            width=256,
            channels=3,
            input_frames=1,
            lambda_compact=0.01,
            lambda_separate=0.01,
            alpha=0.7,
            update_threshold=0.015,
        ),
        OptimConfig(lr=2e-4, batch_size=4, epochs=60),
    ),
    "small": Preset(
        "small",
        ModelConfig(
            task="pred",
            height=96,
            width=96,
            channels=1,
            input_frames=4,
            width_mult=0.25,
            smooth=9,
        ),
        OptimConfig(lr=2e-4, batch_size=8, epochs=15),
    ),
    "medium": Preset(
        "medium",
        ModelConfig(
            task="pred",
            height=128,
            width=128,
            channels=1,
            input_frames=4,
            width_mult=0.25,
            smooth=9,
        ),
        OptimConfig(lr=2e-4, batch_size=8, epochs=30),
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(
            f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
        ) from None
