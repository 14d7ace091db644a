"""The project's checkpoint: a directory that ``torch.load(weights_only=True)`` can read.

```
CKPT/
  config.json     the Preset (model + optimisation config) as JSON
  model.pt        the model's state_dict: weights, BN statistics, and the memory items
  training.pt     optional: optimizer and scheduler state_dicts, epoch, step
  calibration.json  optional: the scale of the scores on normal footage (mnad.calibration)
```

No pickled modules: a checkpoint loads with tensors and plain containers only, so loading one
never runs code. A save writes into a sibling temporary directory and renames it into place,
so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnad.calibration import Calibration
from mnad.config import Preset
from mnad.errors import UserError
from mnad.network import MNAD

CONFIG_FILE = "config.json"
MODEL_FILE = "model.pt"
TRAINING_FILE = "training.pt"
CALIBRATION_FILE = "calibration.json"


@dataclass
class Checkpoint:
    """What a checkpoint directory holds."""

    preset: Preset
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    epoch: int = 0
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None

    def build_model(self, device: str | torch.device = "cpu") -> MNAD:
        """The model with these weights and this memory, in eval mode."""
        model = MNAD(self.preset.model)
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise UserError(
                f"checkpoint does not fit the {self.preset.name!r} config: "
                f"{' '.join(line.strip() for line in first[:3])}"
            ) from None
        return model.to(device).eval()


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    preset: Preset,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    epoch: int = 0,
    step: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory at ``path`` (replacing one that is there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / CONFIG_FILE).write_text(preset.to_json())
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        torch.save(state, tmp / MODEL_FILE)
        training = {
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "epoch": int(epoch),
            "step": int(step),
            "extra": dict(extra or {}),
        }
        torch.save(training, tmp / TRAINING_FILE)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint directory; anything but this project's format is a ``UserError``.

    A config.json written before a field existed reads with its default: one without
    ``channel_order`` is a model of RGB frames, as every model was then."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / MODEL_FILE).is_file():
        raise UserError(
            f"{path}: not a checkpoint directory (it needs {CONFIG_FILE} and {MODEL_FILE}; "
            "convert a model.pth of the paper's code with `mnad import-paper`)"
        )
    try:
        preset = Preset.from_json((path / CONFIG_FILE).read_text())
    except (ValueError, TypeError) as err:
        raise UserError(f"{path / CONFIG_FILE}: {err}") from None
    model_state = _load_tensors(path / MODEL_FILE)
    training: dict[str, Any] = {}
    if (path / TRAINING_FILE).is_file():
        training = _load_tensors(path / TRAINING_FILE)
    return Checkpoint(
        calibration=load_calibration(path),
        preset=preset,
        model_state=model_state,
        optimizer_state=training.get("optimizer"),
        scheduler_state=training.get("scheduler"),
        epoch=int(training.get("epoch", 0)),
        step=int(training.get("step", 0)),
        extra=dict(training.get("extra") or {}),
    )


def load_calibration(path: str | os.PathLike[str]) -> Calibration | None:
    """The checkpoint's calibration, or None when it has none."""
    file = Path(path) / CALIBRATION_FILE
    if not file.is_file():
        return None
    try:
        return Calibration.from_json(file.read_text())
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{file}: cannot be read as a calibration: {err}") from None


def write_calibration(path: str | os.PathLike[str], calibration: Calibration) -> Path:
    """Add (or replace) the calibration of the checkpoint at ``path``, atomically."""
    file = Path(path) / CALIBRATION_FILE
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(calibration.to_json())
    tmp.replace(file)
    return file


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[MNAD, Preset]:
    """The model of a checkpoint directory, in eval mode, and its config."""
    ckpt = load_checkpoint(path)
    return ckpt.build_model(device), ckpt.preset


def _load_tensors(file: Path) -> Any:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is the file's fault
        cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{file}: cannot be read as a checkpoint: {cause}") from None
