"""A checkpoint as an MLflow pyfunc model: its class, signature, requirements and folder.

``MNADPyfunc`` runs wherever MLflow loads the model (``mlflow.pyfunc.load_model`` in any
process, ``mlflow models serve``): it needs only ``mnad`` and this module importable. The
model is saved "from code" (nothing pickled): the code file names
``pipelines.tracking.pyfunc.MNADPyfunc``. ``save_pyfunc`` (driver, at registration) writes
the model folder; ``checkpoint_in_model_dir`` finds the checkpoint inside one again.
"""

from __future__ import annotations

import os
import shutil
import warnings
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from mnad.checkpoint import CALIBRATION_FILE, CONFIG_FILE, MODEL_FILE, load_model
from mnad.clips import split_clip
from mnad.config import ModelConfig, Preset
from mnad.streaming import StreamingScorer
from pipelines.errors import UserError

CHECKPOINT_ARTIFACT = "checkpoint"
"""Key of the checkpoint directory among the pyfunc model's artifacts."""

PREDICT_COLUMNS = ("psnr", "feature_distance", "point_score")
"""Columns of ``MNADPyfunc.predict``'s output, one row per clip."""

_PREDICT_CHUNK = 64  # clips per forward pass in MNADPyfunc.predict

_MODEL_CODE = """\
# An mnad checkpoint as an MLflow pyfunc model ("models from code": nothing is pickled).
from mlflow.models import set_model

from pipelines.tracking.pyfunc import MNADPyfunc

set_model(MNADPyfunc())
"""


class MNADPyfunc(mlflow.pyfunc.PythonModel):
    """A checkpoint as an MLflow pyfunc model: clips in, per-clip scores out.

    Input: float32 array (n, T*C, H, W) on [-1, 1]: each clip's input frames and then its
    target frame stacked on the channel axis, as in training (T = input_frames + 1 for the
    pred task; T = 1 for recon, the frame being both input and target). The signature fixes
    dtype and shape: MLflow rejects float64 or another frame size before ``predict``.
    Output: a DataFrame with one row per clip: ``psnr`` (Eq. 11), ``feature_distance``
    (Eq. 12) and ``point_score`` (the update gate of Sec. 3.4). Clips are scored
    independently against the checkpoint's memory (no test-time update): per-video min-max
    and the fused score (Eq. 13) need whole videos, which ``mnad score`` does.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the checkpoint among the model's artifacts (on a GPU when there is one)."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, preset = load_model(context.artifacts[CHECKPOINT_ARTIFACT], device=device)
        self.model = model
        self.config = preset.model
        self.device = torch.device(device)

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Score each clip of ``model_input``; see the class docstring for the layout."""
        clips = torch.from_numpy(np.asarray(model_input, dtype=np.float32))  # (n, T*C, H, W)
        split = split_clip(clips, self.config)  # checks the layout
        scorer = StreamingScorer(self.model, update=False)
        parts = []
        for start in range(0, clips.shape[0], _PREDICT_CHUNK):
            window = slice(start, start + _PREDICT_CHUNK)  # the scorer moves it to its device
            scores = scorer.score(split.inputs[window], split.target[window])
            parts.append(pd.DataFrame({name: getattr(scores, name) for name in PREDICT_COLUMNS}))
        if not parts:
            return pd.DataFrame({name: np.zeros(0) for name in PREDICT_COLUMNS})
        return pd.concat(parts, ignore_index=True)


def model_signature(config: ModelConfig) -> ModelSignature:
    """The pyfunc signature of a model with this config: clips in, per-clip scores out."""
    channels = config.channels * config.clip_length
    inputs = Schema(
        # unnamed: a named tensor would reach predict as a dict {name: array}
        [TensorSpec(np.dtype(np.float32), (-1, channels, config.height, config.width))]
    )
    outputs = Schema([ColSpec("double", name) for name in PREDICT_COLUMNS])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    """What the model needs, pinned to this environment, so that MLflow infers nothing."""
    reqs = []
    for dist in ("mnad", "mlflow", "torch", "numpy", "pandas"):
        try:
            reqs.append(f"{dist}=={importlib_metadata.version(dist)}")
        except importlib_metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def save_pyfunc(
    tmp: Path,
    checkpoint_dir: str | os.PathLike[str],
    preset: Preset,
    mlflow_model: Model,
    input_example: np.ndarray | None = None,
) -> Path:
    """Write the pyfunc model folder of a checkpoint under ``tmp``; returns it.

    Only the inference part of the checkpoint (``config.json``, ``model.pt``) goes in;
    ``mlflow_model`` carries the ids of the logged model and run it belongs to.
    """
    weights = tmp / CHECKPOINT_ARTIFACT
    weights.mkdir()
    for name in (CONFIG_FILE, MODEL_FILE, CALIBRATION_FILE):
        if name == CALIBRATION_FILE and not (Path(checkpoint_dir) / name).is_file():
            continue  # a model without a calibration
        shutil.copy2(Path(checkpoint_dir) / name, weights / name)
    code = tmp / "mnad_pyfunc.py"
    code.write_text(_MODEL_CODE)
    local = tmp / "model"
    with warnings.catch_warnings():
        # the checkpoint signature fixes the input; an example would be MBs of JSON
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        mlflow.pyfunc.save_model(
            path=os.fspath(local),
            python_model=os.fspath(code),
            artifacts={CHECKPOINT_ARTIFACT: os.fspath(weights)},
            signature=model_signature(preset.model),
            input_example=input_example,
            pip_requirements=pip_requirements(),
            mlflow_model=mlflow_model,
            metadata={"mnad.preset": preset.name},
        )
    return local


def checkpoint_in_model_dir(model_dir: Path, uri: str) -> Path:
    """The checkpoint folder in a pyfunc model folder (or ``model_dir`` if it is one).

    ``uri`` names the model in the one-line ``UserError`` for a folder that is neither.
    """
    if (model_dir / CONFIG_FILE).is_file() and (model_dir / MODEL_FILE).is_file():
        return model_dir  # a runs:/ URI pointing at a checkpoint folder itself
    if not (model_dir / "MLmodel").is_file():
        raise UserError(f"{uri}: neither an MLflow model nor a checkpoint folder")
    flavor = Model.load(os.fspath(model_dir)).flavors.get("python_function", {})
    entry = (flavor.get("artifacts") or {}).get(CHECKPOINT_ARTIFACT)
    if not entry:
        raise UserError(f"{uri}: an MLflow model, but not one of `mnad` (no checkpoint artifact)")
    return model_dir / entry["path"]


__all__ = [
    "CHECKPOINT_ARTIFACT",
    "PREDICT_COLUMNS",
    "MNADPyfunc",
    "checkpoint_in_model_dir",
    "model_signature",
    "pip_requirements",
    "save_pyfunc",
]
